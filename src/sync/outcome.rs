//! What a sync did: [`SyncOutcome`], built by [`describe`] from the mapping
//! report, the plan and the write results of each batch. Holds names and
//! counts, never values.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::controller::triggers::SyncTrigger;
use crate::crd::{KeyCounts, SecretCounts};
use crate::mapping::{DesiredState, SecretRef};
use crate::secrets::apply::{WriteError, WriteResult};
use crate::secrets::{Plan, SecretAction, SkipReason};

/// Outcome of a full sync or a stream apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncResult {
    /// Everything was applied (or planned, in dry run).
    Success,
    /// Some keys failed; the rest was applied.
    PartialFailure,
    /// Nothing was applied (e.g. the table could not be read).
    Failure,
    /// Cancelled after `spec.syncTimeout`.
    Timeout,
    /// The spec does not validate; nothing was attempted.
    InvalidSpec,
}

impl SyncResult {
    /// The name, as label `result` of the metrics shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::PartialFailure => "partial_failure",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
            Self::InvalidSpec => "invalid_spec",
        }
    }
}

/// Everything a finished full sync reports. Holds names, never values.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub trigger: Option<SyncTrigger>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration: Duration,
    pub dry_run: bool,
    /// The table could not be read completely (nothing was pruned).
    pub table_error: Option<String>,
    /// The cluster could not be read (Secrets outside the cache): the sync
    /// stopped at the batch of Secrets that needed it (earlier batches may
    /// have been written; their changes are listed).
    pub cluster_error: Option<String>,
    pub secrets: SecretCounts,
    pub keys: KeyCounts,
    /// `name: cause` of each item that failed to decrypt.
    pub key_failures: Vec<String>,
    /// Normalisation conflicts and keys claimed by another CredstashSync.
    pub conflicts: Vec<String>,
    /// Names not of the form namespace/secret/KEY, with the reason.
    pub invalid_names: Vec<String>,
    /// `namespace/name: cause` of each Secret that could not be written.
    pub write_failures: Vec<String>,
    /// The Secrets that could not be written (they stay pending).
    pub failed_secrets: BTreeSet<SecretRef>,
    /// The Secrets written, with the keys whose data changed (names only).
    pub changed_keys: BTreeMap<SecretRef, Vec<String>>,
    /// Secrets not written, with the reason (non-Opaque type...), but for
    /// the two below.
    pub skipped: Vec<String>,
    /// `namespace/name: problem` of each Secret not written because it
    /// would fail the API server's validation for its type (key names
    /// only).
    pub invalid_secrets: Vec<String>,
    /// `namespace/name: reason` of each Secret left alone because its
    /// live type is not the one `spec.secretTemplates` gives it.
    pub type_mismatches: Vec<String>,
    /// Secrets created and updated (`namespace/name`).
    pub created: Vec<String>,
    pub updated: Vec<String>,
    /// One line per Secret (action, name, key names).
    pub plan: Vec<String>,
    /// Namespaces that keys wait for (they do not exist yet).
    pub waiting_namespaces: BTreeSet<String>,
    /// Namespaces that existed and that the namespace selector did not
    /// select when the sync planned.
    pub unselected_namespaces: BTreeSet<String>,
}

impl SyncOutcome {
    /// Success, partial failure (some keys or Secrets failed), or failure
    /// (the table could not be read).
    pub fn result(&self) -> SyncResult {
        if self.table_error.is_some() || self.cluster_error.is_some() {
            SyncResult::Failure
        } else if self.key_failures.is_empty()
            && self.write_failures.is_empty()
            && self.conflicts.is_empty()
            && self.invalid_secrets.is_empty()
            && self.type_mismatches.is_empty()
        {
            SyncResult::Success
        } else {
            SyncResult::PartialFailure
        }
    }

    /// A one-line summary for the Ready/Synced message and logs.
    pub fn summary(&self) -> String {
        let s = &self.secrets;
        let k = &self.keys;
        let verb = if self.dry_run { "would be " } else { "" };
        let mut text = format!(
            "{} keys in {} Secrets: {} {verb}created, {} {verb}updated, {} unchanged, {} skipped",
            k.total - k.invalid,
            s.managed,
            s.created,
            s.updated,
            s.unchanged,
            s.skipped
        );
        for (count, what) in [
            (k.failed, "keys failed to decrypt"),
            (k.conflicting, "conflicting keys"),
            (k.invalid, "invalid names"),
            (
                self.invalid_secrets.len() as i64,
                "invalid Secrets not written",
            ),
            (
                self.type_mismatches.len() as i64,
                "Secrets of another type left alone",
            ),
            (k.waiting_for_namespace, "keys waiting for their namespace"),
            (self.write_failures.len() as i64, "Secrets failed to write"),
        ] {
            if count > 0 {
                text.push_str(&format!("; {count} {what}"));
            }
        }
        text
    }

    /// Adds the outcome of another batch of Secrets of the same sync (see
    /// [`crate::sync::batches`]): counts add up, lists follow each other.
    pub fn absorb(&mut self, batch: SyncOutcome) {
        let (s, b) = (&mut self.secrets, &batch.secrets);
        s.created += b.created;
        s.updated += b.updated;
        s.unchanged += b.unchanged;
        s.skipped += b.skipped;
        s.managed += b.managed;
        let (k, b) = (&mut self.keys, &batch.keys);
        k.total += b.total;
        k.invalid += b.invalid;
        k.failed += b.failed;
        k.conflicting += b.conflicting;
        k.waiting_for_namespace += b.waiting_for_namespace;
        k.excluded += b.excluded;
        self.key_failures.extend(batch.key_failures);
        self.conflicts.extend(batch.conflicts);
        self.invalid_names.extend(batch.invalid_names);
        self.write_failures.extend(batch.write_failures);
        self.failed_secrets.extend(batch.failed_secrets);
        self.changed_keys.extend(batch.changed_keys);
        self.skipped.extend(batch.skipped);
        self.invalid_secrets.extend(batch.invalid_secrets);
        self.type_mismatches.extend(batch.type_mismatches);
        self.created.extend(batch.created);
        self.updated.extend(batch.updated);
        self.plan.extend(batch.plan);
        self.waiting_namespaces.extend(batch.waiting_namespaces);
    }
}

/// Turns the mapping report, the plan and the write results into an outcome.
pub fn describe(
    dry_run: bool,
    desired: &DesiredState,
    plan: &Plan,
    writes: &[WriteResult],
) -> SyncOutcome {
    let report = &desired.report;
    let counts = plan.counts();
    let unwritten: BTreeSet<&SecretRef> = writes
        .iter()
        .filter(|w| w.result.is_err())
        .map(|w| &w.secret)
        .collect();
    let refused: Vec<(&SecretRef, &String)> = writes
        .iter()
        .filter_map(|w| match &w.result {
            Err(WriteError::Refused(message)) => Some((&w.secret, message)),
            _ => None,
        })
        .collect();
    // Namespaces the API server said are terminating: their keys wait.
    let terminating = writes.iter().filter_map(|w| match &w.result {
        Err(WriteError::NamespaceTerminating(namespace)) => Some(namespace.clone()),
        _ => None,
    });
    let done = |action: SecretAction| -> Vec<String> {
        if dry_run {
            return Vec::new();
        }
        plan.secrets
            .iter()
            .filter(|p| p.action == action && !unwritten.contains(&p.secret))
            .map(|p| p.secret.to_string())
            .collect()
    };
    let mut conflicts: Vec<String> = report.conflicts.iter().map(ToString::to_string).collect();
    conflicts.extend(plan.ownership_conflicts());
    let secrets = SecretCounts {
        created: counts.created as i64,
        updated: counts.updated as i64,
        unchanged: counts.unchanged as i64,
        skipped: counts.skipped as i64,
        managed: plan
            .secrets
            .iter()
            .filter(|p| !matches!(p.action, SecretAction::Skip(_)))
            .count() as i64,
    };
    // Names of Secrets that would fail their type's validation count as
    // invalid too.
    let invalid_typed: usize = plan
        .secrets
        .iter()
        .filter(|p| {
            matches!(
                p.action,
                SecretAction::Skip(SkipReason::InvalidForType { .. })
            )
        })
        .filter_map(|p| desired.secrets.get(&p.secret))
        .map(|d| d.names)
        .sum();
    let skipped_for = |wanted: fn(&SkipReason) -> bool| -> Vec<String> {
        plan.secrets
            .iter()
            .filter_map(|p| match &p.action {
                SecretAction::Skip(reason) if wanted(reason) => {
                    Some(format!("{}: {reason}", p.secret))
                }
                _ => None,
            })
            .collect()
    };
    let keys = KeyCounts {
        total: report.total as i64,
        invalid: (report.invalid.len() + invalid_typed) as i64,
        failed: report.failed.len() as i64,
        conflicting: (report.conflicting_names() + counts.keys_owned_by_other) as i64,
        waiting_for_namespace: report.waiting() as i64,
        excluded: report.excluded as i64,
    };
    let changed_keys = if dry_run {
        BTreeMap::new()
    } else {
        plan.secrets
            .iter()
            .filter(|p| p.writes() && !unwritten.contains(&p.secret))
            .map(|p| {
                let keys = p.keys.iter().filter(|k| k.change.changes_data());
                (p.secret.clone(), keys.map(|k| k.key.clone()).collect())
            })
            .collect()
    };
    SyncOutcome {
        dry_run,
        waiting_namespaces: report
            .waiting_for_namespace
            .keys()
            .cloned()
            .chain(terminating)
            .collect(),
        secrets,
        keys,
        key_failures: report.failed.iter().map(ToString::to_string).collect(),
        conflicts,
        invalid_names: report.invalid.iter().map(ToString::to_string).collect(),
        write_failures: refused
            .iter()
            .map(|(secret, message)| format!("{secret}: {message}"))
            .collect(),
        failed_secrets: refused
            .iter()
            .map(|(secret, _)| (*secret).clone())
            .collect(),
        changed_keys,
        skipped: skipped_for(|r| !is_invalid(r) && !is_type_mismatch(r)),
        invalid_secrets: skipped_for(is_invalid),
        type_mismatches: skipped_for(is_type_mismatch),
        created: done(SecretAction::Create),
        updated: done(SecretAction::Update),
        plan: plan.summary(),
        ..Default::default()
    }
}

fn is_invalid(reason: &SkipReason) -> bool {
    matches!(reason, SkipReason::InvalidForType { .. })
}

fn is_type_mismatch(reason: &SkipReason) -> bool {
    matches!(reason, SkipReason::TypeMismatch { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretPlan;

    #[test]
    fn a_create_refused_in_a_terminating_namespace_waits_for_it_and_is_no_failure() {
        let secret = |namespace: &str| SecretRef {
            namespace: namespace.to_owned(),
            name: "app".to_owned(),
        };
        let create = |namespace: &str| SecretPlan {
            secret: secret(namespace),
            action: SecretAction::Create,
            keys: Vec::new(),
            apply: None,
            metadata_conflicts: Vec::new(),
            secret_type: crate::templates::SecretType::Opaque,
        };
        let plan = Plan {
            secrets: vec![create("ns-a"), create("ns-b"), create("ns-c")],
        };
        let write = |namespace: &str, result| WriteResult {
            secret: secret(namespace),
            action: SecretAction::Create,
            result,
        };
        let writes = [
            write("ns-a", Ok(None)),
            write(
                "ns-b",
                Err(WriteError::NamespaceTerminating("ns-b".to_owned())),
            ),
            write(
                "ns-c",
                Err(WriteError::Refused("quota exceeded".to_owned())),
            ),
        ];
        let outcome = describe(false, &DesiredState::default(), &plan, &writes);
        assert_eq!(outcome.created, ["ns-a/app"]);
        assert_eq!(
            outcome.waiting_namespaces.iter().collect::<Vec<_>>(),
            ["ns-b"]
        );
        assert_eq!(outcome.write_failures, ["ns-c/app: quota exceeded"]);
        assert_eq!(
            outcome.failed_secrets.iter().collect::<Vec<_>>(),
            [&secret("ns-c")]
        );
    }

    #[test]
    fn typed_secret_skips_are_listed_apart_and_their_names_count_as_invalid() {
        use crate::mapping::DesiredSecret;
        use crate::secrets::SkipReason;
        use crate::templates::SecretType;
        let skip = |name: &str, reason: SkipReason| SecretPlan {
            secret: SecretRef::new("web", name),
            action: SecretAction::Skip(reason),
            keys: Vec::new(),
            apply: None,
            metadata_conflicts: Vec::new(),
            secret_type: SecretType::Tls,
        };
        let plan = Plan {
            secrets: vec![
                skip(
                    "half",
                    SkipReason::InvalidForType {
                        secret_type: SecretType::Tls,
                        problems: vec!["tls.key missing".into()],
                    },
                ),
                skip(
                    "old",
                    SkipReason::TypeMismatch {
                        live: "Opaque".into(),
                        wanted: SecretType::Tls,
                    },
                ),
                skip("other", SkipReason::NotAdopted),
            ],
        };
        let mut desired = DesiredState::default();
        for (name, names) in [("half", 2), ("old", 3), ("other", 1)] {
            desired.secrets.insert(
                SecretRef::new("web", name),
                DesiredSecret {
                    names,
                    ..Default::default()
                },
            );
        }
        let outcome = describe(false, &desired, &plan, &[]);
        assert_eq!(
            outcome.invalid_secrets,
            ["web/half: invalid kubernetes.io/tls Secret: tls.key missing"]
        );
        assert_eq!(outcome.type_mismatches.len(), 1);
        assert!(outcome.type_mismatches[0].starts_with("web/old: type mismatch"));
        assert_eq!(outcome.skipped.len(), 1);
        assert!(outcome.skipped[0].starts_with("web/other: "));
        assert_eq!(outcome.keys.invalid, 2, "the names of the invalid Secret");
        assert_eq!(outcome.secrets.skipped, 3);
        assert_eq!(outcome.result(), SyncResult::PartialFailure);
    }
}
