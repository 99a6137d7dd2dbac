//! Read-your-writes: the operator's own recent Secret writes, laid over the
//! managed-Secret watch cache until the cache has caught up with them.
//!
//! Every plan is built from a view of the cluster. The watch cache lags the
//! API server by a few milliseconds to seconds; a plan built from a cache
//! that has not yet seen the operator's previous write would omit the keys
//! that write added, and server-side apply would then remove them (or send an
//! older value back). The ledger keeps the object each successful apply
//! returned, reduced to a [`LiveSecret`] (no values), and answers with it
//! until the watch delivers that write or a later change of the same Secret.
//!
//! resourceVersions are compared as integers (what kube-apiserver's etcd
//! storage issues); one that is not an integer is only ever matched by
//! equality, and its write is forgotten after [`FORGET_AFTER`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::live::LiveSecret;
use super::observed::secret_ref;
use crate::mapping::SecretRef;

/// How long a write the watch never confirmed is laid over the cache.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Written {
    secret: Arc<LiveSecret>,
    at: Instant,
}

impl Written {
    fn version(&self) -> Option<&str> {
        self.secret.metadata.resource_version.as_deref()
    }
}

/// What a watch event of a managed Secret was, as far as our writes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// The event is one of our own writes coming back, or an older state
    /// that our latest write already supersedes: nothing to repair.
    Own,
    /// Somebody else changed (or deleted) the Secret, or the write is
    /// unknown to this ledger.
    Foreign,
}

/// The operator's own writes the watch cache may not have seen yet.
#[derive(Debug, Default)]
pub struct OwnWrites {
    writes: BTreeMap<SecretRef, Written>,
}

impl OwnWrites {
    /// Records the object a successful apply returned, unless the watch
    /// cache, holding resourceVersion `cached` of that Secret, has caught up
    /// with it already (the echo of a write may come before its response).
    pub fn record(&mut self, secret: LiveSecret, cached: Option<&str>, now: Instant) {
        let Some(reference) = secret_ref(&secret) else {
            return;
        };
        if caught_up(cached, secret.metadata.resource_version.as_deref()) {
            return;
        }
        let newer = Written {
            secret: Arc::new(secret),
            at: now,
        };
        match self.writes.get(&reference) {
            Some(known) if is_older(newer.version(), known.version()) => {}
            _ => {
                self.writes.insert(reference, newer);
            }
        }
    }

    /// Takes in one watch event (`deleted`: a deletion) and tells whether it
    /// is the echo of our own write. A write the event has caught up with is
    /// forgotten.
    pub fn observe(&mut self, secret: &LiveSecret, deleted: bool) -> Echo {
        let Some(reference) = secret_ref(secret) else {
            return Echo::Foreign;
        };
        let seen = secret.metadata.resource_version.as_deref();
        let Some(known) = self.writes.get(&reference) else {
            return Echo::Foreign;
        };
        let superseded = seen == known.version() || is_older(seen, known.version());
        let echo = if !deleted && seen.is_some() && superseded {
            Echo::Own
        } else {
            Echo::Foreign
        };
        if deleted || caught_up(seen, known.version()) {
            self.writes.remove(&reference);
        }
        echo
    }

    /// The cache as it would be with our writes applied: a written Secret
    /// replaces an older cached copy (or stands in for one not cached yet).
    /// Writes older than [`FORGET_AFTER`], and writes the cache has caught
    /// up with (it holds that version or a later one), are forgotten first.
    pub fn overlay(&mut self, cached: Vec<Arc<LiveSecret>>, now: Instant) -> Vec<Arc<LiveSecret>> {
        let mut view: BTreeMap<SecretRef, Arc<LiveSecret>> = cached
            .into_iter()
            .filter_map(|secret| Some((secret_ref(&secret)?, secret)))
            .collect();
        self.writes.retain(|reference, written| {
            let seen = view
                .get(reference)
                .and_then(|cached| cached.metadata.resource_version.as_deref());
            now.saturating_duration_since(written.at) < FORGET_AFTER
                && !caught_up(seen, written.version())
        });
        for (reference, written) in &self.writes {
            let newer = view.get(reference).is_none_or(|cached| {
                is_older(
                    cached.metadata.resource_version.as_deref(),
                    written.version(),
                )
            });
            if newer {
                view.insert(reference.clone(), written.secret.clone());
            }
        }
        view.into_values().collect()
    }

    /// How many writes are laid over the cache.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether no write is laid over the cache.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Whether a copy of a Secret at resourceVersion `seen` has caught up with
/// our write of it at `written`: it is that version or a later one.
fn caught_up(seen: Option<&str>, written: Option<&str>) -> bool {
    seen.is_some() && (seen == written || is_older(written, seen))
}

/// Whether resourceVersion `a` is known to be older than `b` (both integers,
/// as kube-apiserver's etcd storage issues them; anything else is never
/// known to be older).
pub fn is_older(a: Option<&str>, b: Option<&str>) -> bool {
    match (
        a.and_then(|v| v.parse::<u64>().ok()),
        b.and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(name: &str, version: &str, keys: &[&str]) -> LiveSecret {
        let data: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|k| (k.to_string(), json!("dg==")))
            .collect();
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
            "data": data,
        }))
        .expect("test Secret");
        secret.into()
    }

    fn keys_of(view: &[Arc<LiveSecret>], name: &str) -> Vec<String> {
        view.iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .map(|s| s.data.iter().map(|(k, _)| k.to_owned()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_write_the_cache_has_not_seen_replaces_the_cached_copy() {
        let now = Instant::now();
        let mut ledger = OwnWrites::default();
        ledger.record(secret("app", "11", &["A", "B"]), None, now);
        let view = ledger.overlay(vec![Arc::new(secret("app", "10", &["A"]))], now);
        assert_eq!(keys_of(&view, "app"), vec!["A", "B"]);
    }

    #[test]
    fn a_created_secret_is_seen_before_the_cache_has_it() {
        let now = Instant::now();
        let mut ledger = OwnWrites::default();
        ledger.record(secret("new", "5", &["K"]), None, now);
        let view = ledger.overlay(vec![Arc::new(secret("other", "3", &[]))], now);
        assert_eq!(keys_of(&view, "new"), vec!["K"]);
        assert_eq!(view.len(), 2);
    }

    #[test]
    fn a_newer_cached_copy_wins_and_the_echo_is_recognised() {
        let now = Instant::now();
        let mut ledger = OwnWrites::default();
        ledger.record(secret("app", "11", &["A", "B"]), None, now);
        assert_eq!(
            ledger.observe(&secret("app", "11", &["A", "B"]), false),
            Echo::Own
        );
        assert!(ledger.is_empty());
        let view = ledger.overlay(vec![Arc::new(secret("app", "12", &["A"]))], now);
        assert_eq!(keys_of(&view, "app"), vec!["A"]);
    }

    #[test]
    fn a_write_the_cache_already_holds_is_not_recorded() {
        let now = Instant::now();
        let mut ledger = OwnWrites::default();
        ledger.record(secret("app", "11", &["A"]), Some("11"), now);
        ledger.record(secret("old", "11", &["A"]), Some("12"), now);
        assert!(ledger.is_empty());
        ledger.record(secret("app", "13", &["A"]), Some("12"), now);
        assert_eq!(ledger.len(), 1, "a write newer than the cache is kept");
    }

    #[test]
    fn a_write_the_cache_has_caught_up_with_is_forgotten() {
        // The watch may deliver a write's echo before the apply's response
        // is recorded; the next view finds the cache holding that version.
        let now = Instant::now();
        let mut ledger = OwnWrites::default();
        ledger.record(secret("app", "11", &["A", "B"]), None, now);
        ledger.record(secret("new", "12", &["K"]), None, now);
        let view = ledger.overlay(vec![Arc::new(secret("app", "11", &["A", "B"]))], now);
        assert_eq!(keys_of(&view, "new"), vec!["K"]);
        assert_eq!(ledger.len(), 1, "only the write the cache lacks is kept");
        let view = ledger.overlay(vec![Arc::new(secret("new", "13", &[]))], now);
        assert_eq!(keys_of(&view, "new"), Vec::<String>::new());
        assert!(ledger.is_empty());
    }

    #[test]
    fn only_a_later_change_is_foreign_and_it_supersedes_the_write() {
        let now = Instant::now();
        let mut ledger = OwnWrites::default();
        ledger.record(secret("app", "11", &["A"]), None, now);
        assert_eq!(
            ledger.observe(&secret("app", "10", &["A"]), false),
            Echo::Own,
            "an older state is superseded by our write"
        );
        assert_eq!(ledger.len(), 1, "an older event keeps the write");
        assert_eq!(
            ledger.observe(&secret("app", "14", &[]), false),
            Echo::Foreign
        );
        assert!(ledger.is_empty());
    }

    #[test]
    fn a_deletion_is_foreign_and_forgets_the_write() {
        let now = Instant::now();
        let mut ledger = OwnWrites::default();
        ledger.record(secret("app", "11", &["A"]), None, now);
        assert_eq!(
            ledger.observe(&secret("app", "11", &["A"]), true),
            Echo::Foreign
        );
        assert!(ledger.overlay(Vec::new(), now).is_empty());
    }

    #[test]
    fn an_older_write_never_replaces_a_newer_one() {
        let now = Instant::now();
        let mut ledger = OwnWrites::default();
        ledger.record(secret("app", "12", &["A", "B"]), None, now);
        ledger.record(secret("app", "11", &["A"]), None, now);
        let view = ledger.overlay(Vec::new(), now);
        assert_eq!(keys_of(&view, "app"), vec!["A", "B"]);
    }

    #[test]
    fn unconfirmed_writes_are_forgotten_after_a_while() {
        let now = Instant::now();
        let mut ledger = OwnWrites::default();
        ledger.record(secret("app", "not-a-number", &["A"]), None, now);
        let later = now + FORGET_AFTER + Duration::from_secs(1);
        let view = ledger.overlay(vec![Arc::new(secret("app", "x", &[]))], later);
        assert_eq!(keys_of(&view, "app"), Vec::<String>::new());
        assert!(ledger.is_empty());
    }
}
