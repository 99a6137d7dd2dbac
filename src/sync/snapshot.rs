//! The table as a CredstashSync last read it: [`TableSnapshot`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::scope::NamespaceScope;
use crate::credstash::{Entry, TableRead};
use crate::mapping::{self, SecretRef};

/// The latest entry of every credstash name, as last read: kept between
/// syncs so that stream changes, namespaces that appear and drift repairs
/// are planned without reading the whole table again.
///
/// It is the last full read, shared with the table's reader and the other
/// CredstashSyncs of the table (one copy of the table in memory, not one
/// each), with the names re-read since laid over it.
#[derive(Debug, Default)]
pub struct TableSnapshot {
    /// The last full read.
    read: Arc<TableRead>,
    /// Names re-read since (stream changes): the entry, or `None` when no
    /// version of the name is left.
    changes: BTreeMap<String, Option<Entry>>,
    /// The last full read named every item (arm 2 of the prune rule,
    /// [`crate::secrets::plan::PruneGate`]). An item without a readable name
    /// may be any Secret's, and no stream record can name it, so this holds
    /// until the next full read.
    complete: bool,
}

impl TableSnapshot {
    /// The snapshot of a full read.
    pub fn new(read: Arc<TableRead>) -> Self {
        Self {
            complete: read.unnamed_failures.is_empty(),
            read,
            changes: BTreeMap::new(),
        }
    }

    /// Whether the last full read named every item.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The entry of `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        match self.changes.get(name) {
            Some(changed) => changed.as_ref(),
            None => self.read.get(name),
        }
    }

    /// Records what re-reading `name` found (`None`: no version left).
    pub fn set(&mut self, name: String, entry: Option<Entry>) {
        self.changes.insert(name, entry);
    }

    /// Every name and its entry, in name order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries_from(String::new())
    }

    /// The names starting with `prefix` and their entries, in name order.
    fn entries_from(&self, prefix: String) -> impl Iterator<Item = (&str, &Entry)> {
        let read = self.read.entries_from(&prefix).iter();
        let changes = self.changes.range(prefix.clone()..);
        let mut read = read.map(|e| (e.id.name.as_str(), e)).peekable();
        let mut changes = changes.map(|(n, e)| (n.as_str(), e.as_ref())).peekable();
        std::iter::from_fn(move || loop {
            let next_read = read.peek().map(|(name, _)| *name);
            match (next_read, changes.peek().map(|(name, _)| *name)) {
                (None, None) => return None,
                (Some(r), Some(c)) if r < c => return read.next(),
                (Some(_), None) => return read.next(),
                (next_read, Some(changed)) => {
                    if next_read == Some(changed) {
                        read.next();
                    }
                    if let Some((name, Some(entry))) = changes.next() {
                        return Some((name, entry));
                    }
                }
            }
        })
        .take_while(move |(name, _)| name.starts_with(&prefix))
    }

    /// The names (and entries) that map into `secret`.
    pub fn entries_of(&self, secret: &SecretRef) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries_from(format!("{}/{}/", secret.namespace, secret.name))
    }

    /// Names that map to a key `scope` reads and failed to open.
    pub fn failed_names(&self, scope: &NamespaceScope) -> usize {
        self.entries()
            .filter(|(name, entry)| entry.value.is_err() && read_in(scope, name))
            .count()
    }

    /// Names that map to a key `scope` reads and failed for a reason that
    /// may pass (KMS unavailable or throttled): to be read again, so that
    /// their Secrets do not keep a passing failure (and stay unpruned) until
    /// the next full read.
    pub fn names_to_retry(&self, scope: &NamespaceScope) -> BTreeSet<String> {
        self.entries()
            .filter(|(name, entry)| {
                entry.value.as_ref().is_err_and(|error| error.may_pass()) && read_in(scope, name)
            })
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    /// Whether some name maps into `secret`.
    pub fn has_entries_of(&self, secret: &SecretRef) -> bool {
        self.entries_of(secret).next().is_some()
    }

    /// Every Secret that some name maps into.
    pub fn all_secrets(&self) -> BTreeSet<SecretRef> {
        self.entries()
            .filter_map(|(name, _)| secret_of(name))
            .collect()
    }

    /// The names that map into `namespace`, and their Secrets.
    pub fn names_in(&self, namespace: &str) -> (BTreeSet<String>, BTreeSet<SecretRef>) {
        let mut names = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for (name, _) in self.entries_from(format!("{namespace}/")) {
            if let Some(secret) = secret_of(name) {
                names.insert(name.to_owned());
                secrets.insert(secret);
            }
        }
        (names, secrets)
    }
}

/// The Secret a credstash name maps into (`None`: not a valid
/// `namespace/secret/KEY`).
pub fn secret_of(credstash_name: &str) -> Option<SecretRef> {
    match mapping::parse_name(credstash_name) {
        mapping::ParsedName::Key(key) => Some(key.secret),
        _ => None,
    }
}

/// Whether `name` maps into a Secret of a namespace `scope` reads.
fn read_in(scope: &NamespaceScope, name: &str) -> bool {
    secret_of(name).is_some_and(|secret| scope.reads(&secret.namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credstash::crypto::CryptoError;
    use crate::credstash::{ItemError, KmsError};

    #[test]
    fn names_read_again_are_laid_over_the_full_read() {
        let read =
            TableRead::of_entries(["ns/b/K", "ns/a/L", "ns/ab/K", "ns/a/K"].map(Entry::opened));
        let mut snapshot = TableSnapshot::new(Arc::new(read));
        snapshot.set("ns/a/L".into(), None);
        snapshot.set("ns/a/M".into(), Some(Entry::opened("ns/a/M")));
        let mut changed = Entry::opened("ns/b/K");
        changed.id.version = "0000000000000000002".into();
        snapshot.set("ns/b/K".into(), Some(changed));
        snapshot.set("ns/c/K".into(), None);

        let names = |entries: Vec<(&str, &Entry)>| -> Vec<String> {
            entries.iter().map(|(n, _)| (*n).to_owned()).collect()
        };
        assert_eq!(
            names(snapshot.entries().collect()),
            ["ns/a/K", "ns/a/M", "ns/ab/K", "ns/b/K"]
        );
        assert_eq!(
            names(snapshot.entries_of(&SecretRef::new("ns", "a")).collect()),
            ["ns/a/K", "ns/a/M"]
        );
        assert!(snapshot.get("ns/a/L").is_none(), "a deleted name is gone");
        let version = snapshot.get("ns/b/K").map(|e| e.id.version.to_string());
        assert_eq!(version.as_deref(), Some("0000000000000000002"));
        assert!(!snapshot.has_entries_of(&SecretRef::new("ns", "c")));
        let (_, secrets) = snapshot.names_in("ns");
        assert_eq!(secrets.len(), 3);
    }

    #[test]
    fn only_failures_that_may_pass_are_read_again() {
        let failed = |name: &str, error: ItemError| {
            let mut entry = Entry::opened(name);
            entry.value = Err(Box::new(error));
            entry
        };
        let unavailable = || ItemError::Kms(KmsError::Other("throttled".into()));
        let read = TableRead::of_entries([
            Entry::opened("ns/app/OK"),
            failed("ns/app/THROTTLED", unavailable()),
            failed("ns/app/TAMPERED", ItemError::Crypto(CryptoError::Integrity)),
            failed(
                "ns/app/CONTEXT",
                ItemError::Kms(KmsError::InvalidCiphertext("context".into())),
            ),
            failed(
                "ns/app/DENIED",
                ItemError::Kms(KmsError::AccessDenied("no".into())),
            ),
            failed("skipped/app/THROTTLED", unavailable()),
            failed("plain-name", unavailable()),
        ]);
        let mut snapshot = TableSnapshot::new(Arc::new(read));
        snapshot.set(
            "ns/db/LATER".into(),
            Some(failed("ns/db/LATER", unavailable())),
        );
        let mut spec = crate::crd::CredstashSyncSpec::new("table");
        spec.excluded_namespaces = vec!["skipped".into()];
        let spec = spec.validate().expect("a valid spec");
        let scope = NamespaceScope::new(&spec, &BTreeMap::new());
        let names: Vec<String> = snapshot.names_to_retry(&scope).into_iter().collect();
        assert_eq!(names, ["ns/app/THROTTLED", "ns/db/LATER"]);
        assert_eq!(snapshot.failed_names(&scope), 5);
        snapshot.set(
            "ns/app/THROTTLED".into(),
            Some(Entry::opened("ns/app/THROTTLED")),
        );
        let names: Vec<String> = snapshot.names_to_retry(&scope).into_iter().collect();
        assert_eq!(names, ["ns/db/LATER"], "opened on a re-read");
    }
}
