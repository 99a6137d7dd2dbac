//! A sync goes through its Secrets a batch at a time: [`SecretBatches`]
//! cuts its names into runs of whole Secrets, so that what planning costs
//! per Secret (desired keys, observed state, plan, apply bodies, written
//! copies) is held for one batch, not for every Secret of the table.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::credstash::Entry;
use crate::mapping::{self, SecretRef};
use crate::secrets::LiveSecret;

/// Secrets mapped, observed, planned and applied at once.
pub const SECRETS_PER_BATCH: usize = 100;

/// A name of the table and its entry.
pub type Named<'e> = (&'e str, &'e Entry);

/// The names of a sync ordered by the Secret they map into (the
/// `namespace/secret` of `namespace/secret/KEY`; other names first), so
/// that every batch holds all the names of its Secrets: a Secret planned
/// from part of its names would lose the others' keys.
pub struct SecretBatches<'e> {
    entries: Vec<Named<'e>>,
}

/// One batch of a sync: the names of some whole Secrets, and the cached
/// copies of those Secrets (or, last, of Secrets no name maps into).
pub struct Batch<'b, 'e> {
    /// The names of the batch's Secrets (and, in the first, names of no
    /// Secret).
    pub entries: &'b [Named<'e>],
    /// The cached copies of the batch's Secrets.
    pub cached: Vec<(SecretRef, Arc<LiveSecret>)>,
}

impl<'e> SecretBatches<'e> {
    /// Orders `entries` by Secret.
    pub fn new(mut entries: Vec<Named<'e>>) -> Self {
        entries.sort_by(|(a, _), (b, _)| secret_parts(a).cmp(&secret_parts(b)).then(a.cmp(b)));
        Self { entries }
    }

    /// The batches of a sync: each run of names with the `cached` copies of
    /// its Secrets, then the cached Secrets no name maps into (we may hold
    /// keys there to prune), [`SECRETS_PER_BATCH`] at a time.
    pub fn with_cached(
        &self,
        mut cached: BTreeMap<SecretRef, Arc<LiveSecret>>,
    ) -> Vec<Batch<'_, 'e>> {
        let mut batches: Vec<Batch<'_, 'e>> = self
            .runs()
            .map(|(entries, secrets)| Batch {
                cached: secrets
                    .iter()
                    .filter_map(|secret| cached.remove_entry(secret))
                    .collect(),
                entries,
            })
            .collect();
        let unnamed: Vec<(SecretRef, Arc<LiveSecret>)> = cached.into_iter().collect();
        batches.extend(unnamed.chunks(SECRETS_PER_BATCH).map(|secrets| Batch {
            entries: &[],
            cached: secrets.to_vec(),
        }));
        batches
    }

    /// Consecutive runs of the names of at most [`SECRETS_PER_BATCH`]
    /// Secrets each, with those Secrets.
    fn runs(&self) -> impl Iterator<Item = (&[Named<'e>], Vec<SecretRef>)> {
        let mut start = 0;
        std::iter::from_fn(move || {
            if start == self.entries.len() {
                return None;
            }
            let mut secrets: Vec<SecretRef> = Vec::new();
            let mut end = start;
            while let Some((name, _)) = self.entries.get(end) {
                if let Some((namespace, secret)) = secret_parts(name) {
                    let new = secrets
                        .last()
                        .is_none_or(|last| last.namespace != namespace || last.name != secret);
                    if new && secrets.len() == SECRETS_PER_BATCH {
                        break;
                    }
                    if new {
                        secrets.push(SecretRef::new(namespace, secret));
                    }
                }
                end += 1;
            }
            let run = (&self.entries[start..end], secrets);
            start = end;
            Some(run)
        })
    }
}

/// `(namespace, secret)` of a name of three parts `namespace/secret/KEY`,
/// valid or not: the Secret [`mapping::parse_name`] maps it into if valid.
fn secret_parts(name: &str) -> Option<(&str, &str)> {
    mapping::name_parts(name).map(|[namespace, secret, _]| (namespace, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The names of every batch, and the Secrets each batch names.
    fn batch_names(names: &[String]) -> Vec<(Vec<String>, Vec<SecretRef>)> {
        let entries: Vec<Entry> = names.iter().map(|n| Entry::opened(n)).collect();
        let pairs = names.iter().map(String::as_str).zip(entries.iter());
        let batches = SecretBatches::new(pairs.collect());
        batches
            .runs()
            .map(|(entries, secrets)| {
                let names = entries.iter().map(|(n, _)| (*n).to_owned()).collect();
                (names, secrets)
            })
            .collect()
    }

    #[test]
    fn a_batch_holds_every_name_of_its_secrets() {
        // Sorted by name, `ns/a/K` and `ns/a/L` are apart (`ns/a-b/...`
        // and `ns/a.c/...` sort between them): a batch must still hold both.
        let mut names = vec![
            "ns/a/K".to_owned(),
            "ns/a-b/K".to_owned(),
            "ns/a.c/K".to_owned(),
            "ns/a/L".to_owned(),
            "plain-name".to_owned(),
            "ns/bad_secret/K".to_owned(),
        ];
        for i in 0..(2 * SECRETS_PER_BATCH) {
            names.push(format!("ns/s{i:04}/K1"));
            names.push(format!("ns/s{i:04}/K2"));
        }
        let batches = batch_names(&names);
        assert_eq!(batches.len(), 3);
        // A Secret in two batches would be planned from part of its names.
        let mut seen = BTreeSet::new();
        let mut all_names = Vec::new();
        for (names, secrets) in &batches {
            assert!(secrets.len() <= SECRETS_PER_BATCH);
            for name in names {
                if let Some((namespace, secret)) = secret_parts(name) {
                    let secret = SecretRef::new(namespace, secret);
                    assert!(secrets.contains(&secret), "{name} outside its batch");
                }
            }
            for secret in secrets {
                assert!(seen.insert(secret.clone()), "{secret} in two batches");
            }
            all_names.extend(names.iter().cloned());
        }
        all_names.sort();
        names.sort();
        assert_eq!(all_names, names, "every name in exactly one batch");
        let first = &batches[0].0;
        assert_eq!(first[0], "plain-name", "names of no Secret come first");
        let a = first.iter().position(|n| n == "ns/a/K").unwrap();
        assert_eq!(first[a + 1], "ns/a/L");
    }

    #[test]
    fn secret_parts_are_those_of_three_part_names_only() {
        assert_eq!(secret_parts("ns/app/KEY"), Some(("ns", "app")));
        assert_eq!(secret_parts("ns/App_1/KEY"), Some(("ns", "App_1")));
        assert_eq!(secret_parts("ns/app"), None);
        assert_eq!(secret_parts("ns/app/KEY/more"), None);
        assert_eq!(secret_parts("plain"), None);
    }
}
