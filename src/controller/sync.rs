//! One full sync: read the table, map it to desired Secrets, plan against
//! what the cluster has, apply (unless dry run), and describe the outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use std::sync::Arc;

use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;

use super::report::SyncOutcome;
use crate::crd::{KeyCounts, SecretCounts, ValidSpec};
use crate::credstash::{Entry, ReadStats, TableError, TableRead, TableReader};
use crate::mapping::{self, DesiredState, MappingScope, SecretRef, TableValue};
use crate::metrics::{Metrics, SecretOperation};
use crate::secrets::apply::{self, WriteResult};
use crate::secrets::{self, ChangeScope, ObservedSecret, Plan, PlanOptions, SecretAction};
use crate::write_gate::WriteGate;

/// What a full sync works with besides the table: the cluster as the caller
/// sees it (the operator's caches, or one LIST for `kubestash sync`).
pub struct SyncEnv<'a> {
    pub client: &'a Client,
    pub metrics: &'a Metrics,
    /// Names of the namespaces that exist.
    pub namespaces: BTreeSet<String>,
    /// Secrets labelled as managed by kubestash; others are read with GET.
    pub managed_secrets: Vec<Arc<Secret>>,
    /// Passed from plan to last write; closed, it parks a batch before it
    /// writes (a leader handing over).
    pub write_gate: WriteGate,
}

impl<'a> SyncEnv<'a> {
    /// The cluster as one LIST of namespaces and one of managed Secrets show
    /// it (for one-shot syncs, which have no watch caches).
    pub async fn list(
        client: &'a Client,
        metrics: &'a Metrics,
    ) -> Result<SyncEnv<'a>, kube::Error> {
        use k8s_openapi::api::core::v1::Namespace;
        use kube::api::{Api, ListParams};
        use kube::ResourceExt;
        let namespaces = Api::<Namespace>::all(client.clone())
            .list(&ListParams::default())
            .await?;
        let selector = format!(
            "{}={}",
            secrets::MANAGED_BY_LABEL,
            secrets::MANAGED_BY_VALUE
        );
        let managed = Api::<Secret>::all(client.clone())
            .list(&ListParams::default().labels(&selector))
            .await?;
        Ok(SyncEnv {
            client,
            metrics,
            namespaces: namespaces.items.iter().map(|ns| ns.name_any()).collect(),
            managed_secrets: managed.items.into_iter().map(Arc::new).collect(),
            write_gate: WriteGate::default(),
        })
    }
}

/// The latest entry of every credstash name, as last read: kept between
/// syncs so that a stream change can be planned with every name of the
/// Secrets it touches (conflicts included).
pub type TableSnapshot = BTreeMap<String, Entry>;

/// Runs one full sync of CredstashSync `name`. Returns what happened and,
/// when the table was read completely, the snapshot to keep.
pub async fn full_sync(
    env: &SyncEnv<'_>,
    name: &str,
    spec: &ValidSpec,
    reader: &TableReader,
) -> (SyncOutcome, Option<TableSnapshot>) {
    let read = read_table(env, name, reader).await;
    if let Some(error) = &read.error {
        let outcome = SyncOutcome {
            dry_run: spec.dry_run,
            table_error: Some(error.to_string()),
            ..Default::default()
        };
        return (outcome, None);
    }
    let complete = read.unnamed_failures.is_empty();
    let outcome = sync_entries(env, name, spec, &read.entries, complete, ChangeScope::Full).await;
    (outcome, Some(read.entries))
}

/// Applies the names a stream batch touched: re-reads each (one consistent
/// Query), updates `snapshot`, and plans only those keys, with every name of
/// the touched Secrets in view. A name with no version left is a removed key.
pub async fn apply_changes(
    env: &SyncEnv<'_>,
    name: &str,
    spec: &ValidSpec,
    reader: &TableReader,
    snapshot: &mut TableSnapshot,
    touched: &BTreeSet<String>,
) -> Result<SyncOutcome, TableError> {
    // Only names that can become a key we write are worth a Query.
    let touched: BTreeSet<String> = touched
        .iter()
        .filter(|n| secret_of(n).is_some_and(|s| !spec.is_excluded(&s.namespace)))
        .cloned()
        .collect();
    let touched = &touched;
    let before = reader.stats();
    for credstash_name in touched {
        match reader.read_latest(credstash_name).await? {
            Some(entry) => snapshot.insert(credstash_name.clone(), entry),
            None => snapshot.remove(credstash_name),
        };
    }
    record_kms_calls(
        env,
        before,
        reader.stats(),
        touched.iter().filter_map(|n| snapshot.get(n)),
    );
    let touched_secrets: BTreeSet<SecretRef> =
        touched.iter().filter_map(|n| secret_of(n)).collect();
    let related: BTreeMap<String, Entry> = snapshot
        .iter()
        .filter(|(n, _)| secret_of(n).is_some_and(|s| touched_secrets.contains(&s)))
        .map(|(n, e)| (n.clone(), e.clone()))
        .collect();
    let scope = ChangeScope::from_names(touched.iter().map(String::as_str));
    Ok(sync_entries(env, name, spec, &related, true, scope).await)
}

fn secret_of(credstash_name: &str) -> Option<SecretRef> {
    match mapping::parse_name(credstash_name) {
        mapping::ParsedName::Key(key) => Some(key.secret),
        _ => None,
    }
}

/// Maps `entries` to desired Secrets, plans them against the cluster within
/// `scope`, applies the plan unless dry run, and describes the outcome.
async fn sync_entries(
    ctx: &SyncEnv<'_>,
    name: &str,
    spec: &ValidSpec,
    entries: &BTreeMap<String, Entry>,
    read_complete: bool,
    scope: ChangeScope,
) -> SyncOutcome {
    let reasons: BTreeMap<&str, String> = entries
        .iter()
        .filter_map(|(item, entry)| {
            entry
                .value
                .as_ref()
                .err()
                .map(|e| (item.as_str(), e.to_string()))
        })
        .collect();
    let mapped = entries.iter().map(|(item, entry)| {
        let value = match &entry.value {
            Ok(value) => TableValue::Value(value),
            Err(_) => TableValue::Failed(
                reasons
                    .get(item.as_str())
                    .map(String::as_str)
                    .unwrap_or("unreadable"),
            ),
        };
        (item.as_str(), value)
    });
    let mapping_scope = MappingScope {
        excluded: spec.excluded_namespaces.clone(),
        existing_namespaces: Some(ctx.namespaces.clone()),
    };
    let desired = mapping::map_table(mapped, &mapping_scope);

    let _batch = ctx.write_gate.enter().await;
    let manager = secrets::field_manager(name);
    let observed = match observe(ctx, &desired, &manager).await {
        Ok(observed) => observed,
        Err(error) => {
            return SyncOutcome {
                dry_run: spec.dry_run,
                table_error: Some(error),
                ..Default::default()
            }
        }
    };
    let options = PlanOptions {
        manager,
        source: secrets::source_annotation(name, &spec.table),
        prune: spec.prune,
        read_complete: read_complete && reasons.is_empty(),
        now: Utc::now(),
        scope,
        excluded_namespaces: spec.excluded_namespaces.clone(),
    };
    let plan = secrets::plan(&desired.secrets, &observed, &options);
    let writes = if spec.dry_run {
        Vec::new()
    } else {
        apply::apply_all(ctx.client, &plan.secrets).await
    };
    for write in writes.iter().filter(|w| w.result.is_ok()) {
        let operation = if write.action == SecretAction::Create {
            SecretOperation::Create
        } else {
            SecretOperation::Update
        };
        ctx.metrics.record_secret_write(name, operation);
    }
    describe(spec.dry_run, &desired, &plan, &writes)
}

async fn read_table(ctx: &SyncEnv<'_>, name: &str, reader: &TableReader) -> TableRead {
    let before = reader.stats();
    let started = Instant::now();
    let read = reader.read_all().await;
    ctx.metrics.observe_table_read(name, started.elapsed());
    record_kms_calls(ctx, before, reader.stats(), read.entries.values());
    read
}

fn record_kms_calls<'e>(
    ctx: &SyncEnv<'_>,
    before: ReadStats,
    after: ReadStats,
    entries: impl Iterator<Item = &'e Entry>,
) {
    let kms_failures: Vec<&str> = entries
        .filter_map(|e| e.value.as_ref().err())
        .filter(|e| matches!(e, crate::credstash::ItemError::Kms(_)))
        .map(|e| e.reason())
        .collect();
    let calls = after
        .kms_decrypt_calls
        .saturating_sub(before.kms_decrypt_calls);
    for _ in 0..calls.saturating_sub(kms_failures.len() as u64) {
        ctx.metrics.record_kms_decrypt(Ok(()));
    }
    for reason in kms_failures {
        ctx.metrics.record_kms_decrypt(Err(reason));
    }
    for _ in 0..after.kms_cache_hits.saturating_sub(before.kms_cache_hits) {
        ctx.metrics.kms_cache_hit();
    }
}

/// The live state of every Secret the plan may touch: the desired ones and
/// those where we own keys. The managed-Secret cache answers for Secrets
/// kubestash wrote; only the others cost a GET.
async fn observe(
    ctx: &SyncEnv<'_>,
    desired: &DesiredState,
    manager: &str,
) -> Result<BTreeMap<SecretRef, ObservedSecret>, String> {
    let mut observed =
        secrets::observe_all(ctx.managed_secrets.iter().map(|s| s.as_ref()), manager);
    let missing: Vec<SecretRef> = desired
        .secrets
        .keys()
        .filter(|secret| !observed.contains_key(secret))
        .cloned()
        .collect();
    observed
        .retain(|secret, live| !live.owned_keys.is_empty() || desired.secrets.contains_key(secret));
    let fetched = apply::fetch_secrets(ctx.client, missing).await?;
    observed.extend(secrets::observe_all(fetched.iter(), manager));
    Ok(observed)
}

/// Turns the mapping report, the plan and the write results into an outcome.
fn describe(
    dry_run: bool,
    desired: &DesiredState,
    plan: &Plan,
    writes: &[WriteResult],
) -> SyncOutcome {
    let report = &desired.report;
    let counts = plan.counts();
    let failed_writes: BTreeSet<&SecretRef> = writes
        .iter()
        .filter(|w| w.result.is_err())
        .map(|w| &w.secret)
        .collect();
    let done = |action: SecretAction| -> Vec<String> {
        plan.secrets
            .iter()
            .filter(|p| p.action == action && !failed_writes.contains(&p.secret))
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
    let keys = KeyCounts {
        total: report.total as i64,
        invalid: report.invalid.len() as i64,
        failed: report.failed.len() as i64,
        conflicting: (report.conflicting_names() + counts.keys_owned_by_other) as i64,
        waiting_for_namespace: report.waiting() as i64,
        excluded: report.excluded as i64,
    };
    SyncOutcome {
        dry_run,
        waiting_namespaces: report.waiting_for_namespace.keys().cloned().collect(),
        secrets,
        keys,
        key_failures: report.failed.iter().map(ToString::to_string).collect(),
        conflicts,
        invalid_names: report.invalid.iter().map(ToString::to_string).collect(),
        write_failures: writes
            .iter()
            .filter_map(|w| {
                w.result
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {e}", w.secret))
            })
            .collect(),
        skipped: plan
            .secrets
            .iter()
            .filter_map(|p| match &p.action {
                SecretAction::Skip(reason) => Some(format!("{}: {reason}", p.secret)),
                _ => None,
            })
            .collect(),
        created: if dry_run {
            Vec::new()
        } else {
            done(SecretAction::Create)
        },
        updated: if dry_run {
            Vec::new()
        } else {
            done(SecretAction::Update)
        },
        plan: plan.summary(),
        ..Default::default()
    }
}
