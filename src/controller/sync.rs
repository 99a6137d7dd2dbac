//! Syncs: read the table (all of it, or the names a stream touched), map it
//! to desired Secrets, plan against what the cluster has, apply (unless dry
//! run), and describe the outcome.
//!
//! Every plan covers whole Secrets: the desired keys of a Secret always come
//! from every name of the table snapshot that maps into it, never from a
//! cached copy of the Secret, so an apply can not drop a key that an earlier
//! write added. What the cluster has comes from the watch cache with the
//! operator's own recent writes laid over it ([`crate::secrets::OwnWrites`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use parking_lot::Mutex;

use super::report::SyncOutcome;
use crate::crd::{KeyCounts, SecretCounts, ValidSpec};
use crate::credstash::{Entry, KmsTally, TableError, TableRead, TableReader};
use crate::mapping::{self, DesiredState, MappingScope, SecretRef, TableValue};
use crate::metrics::Metrics;
use crate::secrets::apply::{self, SecretOperation, WriteError, WriteResult};
use crate::secrets::observed::{holds_orphaned_fields_of, owns_data_keys, secret_ref};
use crate::secrets::{
    self, LiveSecret, Managers, ObservedSecret, OwnWrites, Plan, PlanOptions, SecretAction,
    SecretPlan,
};
use crate::write_gate::WriteGate;

/// The labels of an object.
pub type Labels = BTreeMap<String, String>;

/// What a sync works with besides the table: the cluster as the caller sees
/// it (the operator's caches, or one LIST each for `kubestash sync`).
pub struct SyncEnv<'a> {
    pub client: &'a Client,
    pub metrics: &'a Metrics,
    /// The namespaces that exist and are not terminating, with their labels.
    pub namespaces: BTreeMap<String, Labels>,
    /// Secrets labelled as managed by kubestash (without values), our own
    /// recent writes included; others are read with GET.
    pub managed_secrets: Vec<Arc<LiveSecret>>,
    /// Field managers of the CredstashSyncs that exist (`kubestash/<name>`):
    /// only they can own a key against us.
    pub living_managers: BTreeSet<String>,
    /// Where successful writes are recorded (read-your-writes).
    pub own_writes: &'a Mutex<OwnWrites>,
    /// The resourceVersion of a Secret in the managed-Secret watch cache
    /// now (`None`: not cached, or no cache): a write the cache holds
    /// already is not recorded.
    pub cached_version: CachedVersion<'a>,
    /// Passed from plan to last write; closed, it parks a batch before it
    /// writes (a leader handing over).
    pub write_gate: WriteGate,
    /// Whether the CredstashSync being synced still exists, asked right
    /// before anything is written: a sync that outlived its CredstashSync
    /// (deleted, or replaced under another name, while it read or planned)
    /// writes nothing, so that no dead manager's entry appears after its
    /// heir has taken the keys over.
    pub still_exists: Box<dyn Fn() -> bool + Send + Sync + 'a>,
    /// Whether a namespace exists and is not terminating, asked right
    /// before a batch writes: a namespace deleted while the sync ran takes
    /// no new Secret, and its keys wait for it as in `namespaces`.
    pub namespace_active: Box<dyn Fn(&str) -> bool + Send + Sync + 'a>,
}

/// See [`SyncEnv::cached_version`].
pub type CachedVersion<'a> = Box<dyn Fn(&SecretRef) -> Option<String> + Send + Sync + 'a>;

impl<'a> SyncEnv<'a> {
    /// The cluster as one LIST of namespaces, of managed Secrets and of
    /// CredstashSyncs show it (for one-shot syncs, which have no caches).
    /// Without the CredstashSync resource installed, no CredstashSync lives.
    pub async fn list(
        client: &'a Client,
        metrics: &'a Metrics,
        own_writes: &'a Mutex<OwnWrites>,
    ) -> Result<SyncEnv<'a>, kube::Error> {
        use crate::crd::CredstashSync;
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
        let living = match Api::<CredstashSync>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(list) => list.items.iter().map(|css| css.name_any()).collect(),
            Err(kube::Error::Api(status)) if status.is_not_found() => Vec::new(),
            Err(err) => return Err(err),
        };
        let namespaces: BTreeMap<String, Labels> = namespaces
            .items
            .iter()
            .filter(|ns| is_active(ns))
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect();
        let active: BTreeSet<String> = namespaces.keys().cloned().collect();
        Ok(SyncEnv {
            client,
            metrics,
            namespaces,
            managed_secrets: managed
                .items
                .into_iter()
                .map(|secret| Arc::new(secret.into()))
                .collect(),
            living_managers: living.iter().map(|n| secrets::field_manager(n)).collect(),
            own_writes,
            cached_version: Box::new(|_| None),
            write_gate: WriteGate::default(),
            still_exists: Box::new(|| true),
            namespace_active: Box::new(move |namespace| active.contains(namespace)),
        })
    }
}

/// Whether a namespace can receive Secrets: it exists and is not being
/// deleted (kube-apiserver refuses new objects in a terminating namespace).
pub fn is_active(namespace: &k8s_openapi::api::core::v1::Namespace) -> bool {
    let terminating_phase = namespace
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Terminating");
    namespace.metadata.deletion_timestamp.is_none() && !terminating_phase
}

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
    pub complete: bool,
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
    fn entries_of(&self, secret: &SecretRef) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries_from(format!("{}/{}/", secret.namespace, secret.name))
    }

    /// Names that map to a key we may write and failed to open.
    pub fn failed_names(&self, spec: &ValidSpec) -> usize {
        self.entries()
            .filter(|(name, entry)| {
                entry.value.is_err()
                    && secret_of(name).is_some_and(|s| !spec.is_excluded(&s.namespace))
            })
            .count()
    }

    /// Names that map to a key we may write and failed for a reason that
    /// may pass (KMS unavailable or throttled): to be read again, so that
    /// their Secrets do not keep a passing failure (and stay unpruned) until
    /// the next full read.
    pub fn names_to_retry(&self, spec: &ValidSpec) -> BTreeSet<String> {
        self.entries()
            .filter(|(name, entry)| {
                entry.value.as_ref().is_err_and(|error| error.may_pass())
                    && secret_of(name).is_some_and(|s| !spec.is_excluded(&s.namespace))
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

/// Runs one full sync of CredstashSync `name` from a read of the whole table
/// that started no earlier than `not_before` (shared with other
/// CredstashSyncs of the table reading at the same time). Returns what
/// happened and, when the table could be read, the snapshot to keep.
pub async fn full_sync(
    env: &SyncEnv<'_>,
    name: &str,
    spec: &ValidSpec,
    reader: &Arc<TableReader>,
    not_before: tokio::time::Instant,
) -> (SyncOutcome, Option<TableSnapshot>) {
    let started = Instant::now();
    let read = reader.read_all_joined(not_before).await;
    env.metrics.sync(name).observe_table_read(started.elapsed());
    record_kms_calls(env, reader);
    if let Some(error) = &read.error {
        let outcome = SyncOutcome {
            dry_run: spec.dry_run,
            table_error: Some(error.to_string()),
            ..Default::default()
        };
        return (outcome, None);
    }
    let snapshot = TableSnapshot::new(read);
    let picture = Picture {
        read_complete: snapshot.complete,
        unread: BTreeSet::new(),
    };
    let outcome = sync_entries(env, name, spec, snapshot.entries(), picture, None).await;
    (outcome, Some(snapshot))
}

/// Re-reads the names a stream batch touched (one consistent Query each)
/// into `snapshot`; a name with no version left is removed from it. Returns
/// the Secrets whose keys may have changed. Reads run concurrently; on
/// error, `snapshot` is left as it was and the caller keeps the names.
pub async fn refresh_names(
    env: &SyncEnv<'_>,
    spec: &ValidSpec,
    reader: &Arc<TableReader>,
    snapshot: &mut TableSnapshot,
    names: &BTreeSet<String>,
) -> Result<BTreeSet<SecretRef>, TableError> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    // Only names that can become a key we write are worth a Query.
    let wanted: Vec<(String, SecretRef)> = names
        .iter()
        .filter_map(|name| Some((name.clone(), secret_of(name)?)))
        .filter(|(_, secret)| !spec.is_excluded(&secret.namespace))
        .collect();
    // Owned items: borrowing closures here trip rustc's higher-ranked Send
    // checks once this future runs inside kube-runtime's controller.
    let read: Result<Vec<(String, SecretRef, Option<Entry>)>, TableError> = stream::iter(wanted)
        .map(|(name, secret)| {
            let reader = reader.clone();
            async move {
                let entry = reader.read_latest(&name).await?;
                Ok((name, secret, entry))
            }
        })
        .buffer_unordered(REFRESH_CONCURRENCY)
        .try_collect()
        .await;
    let mut touched = BTreeSet::new();
    let result = read.map(|entries| {
        for (name, secret, entry) in entries {
            snapshot.set(name, entry);
            touched.insert(secret);
        }
    });
    record_kms_calls(env, reader);
    result.map(|()| touched)
}

/// Names of one stream batch read at once (each a Query and, for a new
/// version, a KMS Decrypt).
const REFRESH_CONCURRENCY: usize = 16;

/// Plans and applies whole `secrets` from `snapshot` (no table read): for
/// stream changes, namespaces that appeared, drift and failed writes.
/// `unread` are the credstash names still waiting to be re-read (their
/// Secrets are not pruned: the snapshot is older than the table there).
pub async fn apply_secrets(
    env: &SyncEnv<'_>,
    name: &str,
    spec: &ValidSpec,
    snapshot: &TableSnapshot,
    secrets: &BTreeSet<SecretRef>,
    unread: &BTreeSet<String>,
) -> SyncOutcome {
    let entries = secrets.iter().flat_map(|s| snapshot.entries_of(s));
    let picture = Picture {
        read_complete: snapshot.complete,
        unread: unread.iter().filter_map(|name| secret_of(name)).collect(),
    };
    sync_entries(env, name, spec, entries, picture, Some(secrets)).await
}

/// What the prune rule needs to know of the table behind a sync besides
/// the entries themselves.
struct Picture {
    /// The last full read named every item.
    read_complete: bool,
    /// Secrets a name of which waits to be re-read.
    unread: BTreeSet<SecretRef>,
}

fn secret_of(credstash_name: &str) -> Option<SecretRef> {
    match mapping::parse_name(credstash_name) {
        mapping::ParsedName::Key(key) => Some(key.secret),
        _ => None,
    }
}

/// Secrets mapped, observed, planned and applied at once. A sync goes
/// through its Secrets in batches of this many, so that what planning costs
/// per Secret (desired keys, observed state, plan, apply bodies, written
/// copies) is held for one batch, not for every Secret of the table.
pub const SECRETS_PER_BATCH: usize = 100;

/// Maps `entries` to desired Secrets, plans them against the cluster (only
/// `only` when given), applies the plan unless dry run, and describes the
/// outcome; a batch of whole Secrets at a time ([`SECRETS_PER_BATCH`]).
async fn sync_entries<'e>(
    env: &SyncEnv<'_>,
    name: &str,
    spec: &ValidSpec,
    entries: impl Iterator<Item = (&'e str, &'e Entry)>,
    picture: Picture,
    only: Option<&BTreeSet<SecretRef>>,
) -> SyncOutcome {
    let unselected = spec.unselected_namespaces(&env.namespaces);
    let mapping_scope = MappingScope {
        excluded: spec
            .excluded_namespaces
            .union(&unselected)
            .cloned()
            .collect(),
        existing_namespaces: Some(env.namespaces.keys().cloned().collect()),
    };
    let manager = secrets::field_manager(name);
    // Never written, not even to hand ownership over: excluded namespaces,
    // and unselected ones unless their keys are being pruned.
    let frozen: BTreeSet<String> = if spec.prune {
        spec.excluded_namespaces.clone()
    } else {
        mapping_scope.excluded.clone()
    };
    let scope = ObserveScope {
        manager: &manager,
        table: &spec.table,
        frozen: &frozen,
        only,
        read_only: spec.dry_run,
    };
    let options = PlanOptions {
        manager: manager.clone(),
        source: secrets::source_annotation(name, &spec.table),
        prune: spec.prune,
        read_complete: picture.read_complete,
        unread_secrets: picture.unread,
        now: Utc::now(),
        excluded_namespaces: spec.excluded_namespaces.clone(),
        unselected_namespaces: unselected.clone(),
        secret_metadata: spec.secret_metadata.clone(),
        adopt_existing: spec.adopt_existing,
    };
    let mut outcome = SyncOutcome {
        dry_run: spec.dry_run,
        unselected_namespaces: unselected,
        ..Default::default()
    };
    let _batch = env.write_gate.enter().await;
    let mut cached = cached_in_view(env, only);
    let named = SecretBatches::new(entries.collect());
    let mut batches: Vec<Batch<'_, '_>> = named
        .batches()
        .map(|batch| Batch {
            cached: batch
                .secrets
                .iter()
                .filter_map(|secret| cached.remove_entry(secret))
                .collect(),
            entries: batch.entries,
        })
        .collect();
    // Secrets we may hold keys in that no name maps into come last.
    let unnamed: Vec<(SecretRef, Arc<LiveSecret>)> = cached.into_iter().collect();
    batches.extend(unnamed.chunks(SECRETS_PER_BATCH).map(|secrets| Batch {
        entries: &[],
        cached: secrets.to_vec(),
    }));
    let context = BatchContext {
        name,
        spec,
        mapping_scope: &mapping_scope,
        observe: &scope,
        plan: &options,
    };
    for batch in batches {
        match sync_batch(env, &context, batch).await {
            Ok(part) => outcome.absorb(part),
            Err(Unobserved::Outlived) => return outlived(spec),
            Err(Unobserved::Cluster(error)) => {
                outcome.cluster_error = Some(error);
                break;
            }
        }
    }
    outcome
}

/// One batch of a sync: the names of some whole Secrets, and the cached
/// copies of those Secrets (or, last, of Secrets no name maps into).
struct Batch<'b, 'e> {
    entries: &'b [(&'e str, &'e Entry)],
    cached: Vec<(SecretRef, Arc<LiveSecret>)>,
}

/// What every batch of one sync shares.
struct BatchContext<'s> {
    /// The CredstashSync's name.
    name: &'s str,
    spec: &'s ValidSpec,
    mapping_scope: &'s MappingScope,
    observe: &'s ObserveScope<'s>,
    plan: &'s PlanOptions,
}

/// Maps, observes, plans and applies one batch; records its writes.
async fn sync_batch(
    env: &SyncEnv<'_>,
    context: &BatchContext<'_>,
    batch: Batch<'_, '_>,
) -> Result<SyncOutcome, Unobserved> {
    let dry_run = context.spec.dry_run;
    let desired = map_entries(batch.entries, context.mapping_scope);
    let observed = observe(env, &desired, batch.cached, context.observe).await?;
    let plan = secrets::plan(&desired.secrets, &observed, context.plan);
    drop(observed);
    if !dry_run && !(env.still_exists)() {
        return Err(Unobserved::Outlived);
    }
    let writes = if dry_run {
        Vec::new()
    } else {
        apply_where_namespaces_live(env, &plan).await
    };
    let outcome = describe(dry_run, &desired, &plan, &writes);
    record_writes(env, context.name, writes);
    Ok(outcome)
}

/// Applies the writes of `plan` whose namespace is still active; a write
/// into one that began terminating since the sync looked is not sent, and
/// is reported as the API server would refuse it.
async fn apply_where_namespaces_live(env: &SyncEnv<'_>, plan: &Plan) -> Vec<WriteResult> {
    let (live, terminating): (Vec<&SecretPlan>, Vec<&SecretPlan>) = plan
        .secrets
        .iter()
        .filter(|p| p.apply.is_some())
        .partition(|p| (env.namespace_active)(&p.secret.namespace));
    let mut writes = apply::apply_all(env.client, live).await;
    writes.extend(terminating.into_iter().map(|p| WriteResult {
        secret: p.secret.clone(),
        action: p.action.clone(),
        result: Err(WriteError::NamespaceTerminating(p.secret.namespace.clone())),
    }));
    writes
}

/// The desired Secrets of `entries` (a failed item keeps its reason).
fn map_entries(entries: &[(&str, &Entry)], scope: &MappingScope) -> DesiredState {
    let reasons: BTreeMap<&str, String> = entries
        .iter()
        .filter_map(|(item, entry)| entry.value.as_ref().err().map(|e| (*item, e.to_string())))
        .collect();
    let mapped = entries.iter().map(|(item, entry)| {
        let value = match &entry.value {
            Ok(value) => TableValue::Value(value),
            Err(_) => TableValue::Failed(
                reasons
                    .get(item)
                    .map(String::as_str)
                    .unwrap_or("unreadable"),
            ),
        };
        (*item, value)
    });
    mapping::map_table(mapped, scope)
}

/// The names of a sync ordered by the Secret they map into (the
/// `namespace/secret` of `namespace/secret/KEY`; other names first), so
/// that every batch holds all the names of its Secrets: a Secret planned
/// from part of its names would lose the others' keys.
struct SecretBatches<'e> {
    entries: Vec<(&'e str, &'e Entry)>,
}

/// The names of the Secrets of one batch, and those Secrets.
struct NamedBatch<'b, 'e> {
    entries: &'b [(&'e str, &'e Entry)],
    secrets: Vec<SecretRef>,
}

impl<'e> SecretBatches<'e> {
    fn new(mut entries: Vec<(&'e str, &'e Entry)>) -> Self {
        entries.sort_by(|(a, _), (b, _)| secret_parts(a).cmp(&secret_parts(b)).then(a.cmp(b)));
        Self { entries }
    }

    /// Consecutive runs of the names of at most [`SECRETS_PER_BATCH`]
    /// Secrets each.
    fn batches(&self) -> impl Iterator<Item = NamedBatch<'_, 'e>> {
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
            let batch = NamedBatch {
                entries: &self.entries[start..end],
                secrets,
            };
            start = end;
            Some(batch)
        })
    }
}

/// `(namespace, secret)` of a name of three parts `namespace/secret/KEY`,
/// valid or not: the Secret [`mapping::parse_name`] maps it into if valid.
fn secret_parts(name: &str) -> Option<(&str, &str)> {
    mapping::name_parts(name).map(|[namespace, secret, _]| (namespace, secret))
}

/// The cached managed Secrets in namespaces that can receive Secrets (and
/// within `only` when given), by reference.
fn cached_in_view(
    env: &SyncEnv<'_>,
    only: Option<&BTreeSet<SecretRef>>,
) -> BTreeMap<SecretRef, Arc<LiveSecret>> {
    env.managed_secrets
        .iter()
        .filter_map(|secret| Some((secret_ref(secret)?, secret.clone())))
        .filter(|(reference, _)| in_view(env, only, reference))
        .collect()
}

/// Whether a sync may plan `secret`: its namespace can receive Secrets, and
/// it is one of `only` when given.
fn in_view(env: &SyncEnv<'_>, only: Option<&BTreeSet<SecretRef>>, secret: &SecretRef) -> bool {
    env.namespaces.contains_key(&secret.namespace) && only.is_none_or(|set| set.contains(secret))
}

/// The outcome of a sync whose CredstashSync went away before it wrote:
/// nothing written, and a failure, so that nothing it learned is kept.
fn outlived(spec: &ValidSpec) -> SyncOutcome {
    SyncOutcome {
        dry_run: spec.dry_run,
        cluster_error: Some(
            "the CredstashSync was deleted while this sync ran; nothing was written".to_owned(),
        ),
        ..Default::default()
    }
}

/// Counts successful writes and keeps what they returned, so that the
/// next plan sees them even before the watch cache does.
fn record_writes(env: &SyncEnv<'_>, name: &str, writes: Vec<WriteResult>) {
    let now = tokio::time::Instant::now();
    for write in writes {
        let Ok(written) = write.result else { continue };
        let operation = if write.action == SecretAction::Create {
            SecretOperation::Create
        } else {
            SecretOperation::Update
        };
        env.metrics.sync(name).record_secret_write(operation);
        if let Some(secret) = written {
            record_write(env, secret, now);
        }
    }
}

/// Lays one write over the cache until the cache has it.
fn record_write(env: &SyncEnv<'_>, secret: LiveSecret, now: tokio::time::Instant) {
    let cached = secret_ref(&secret).and_then(|reference| (env.cached_version)(&reference));
    env.own_writes.lock().record(secret, cached.as_deref(), now);
}

/// Reports the reader's KMS work not reported yet (by this CredstashSync
/// or another one sharing the reader).
fn record_kms_calls(env: &SyncEnv<'_>, reader: &TableReader) {
    let tally = reader.take_unreported_kms();
    env.metrics.record_kms_decrypts(Ok(()), tally.succeeded);
    for (reason, count) in KmsTally::FAILURE_REASONS.into_iter().zip(tally.failed) {
        env.metrics.record_kms_decrypts(Err(reason), count);
    }
    env.metrics.kms_cache_hits(tally.cache_hits);
}

/// The live state of the Secrets of one batch the plan may touch: the
/// desired ones and, of the `cached` ones, those where we own keys, in
/// namespaces that can receive Secrets. The managed-Secret cache answers
/// for Secrets kubestash wrote; only the others cost a GET. Unless
/// `read_only`, the entries of `kubestash/*` managers whose CredstashSync no
/// longer exists are released first, so that their keys can be taken over
/// and pruned.
async fn observe(
    env: &SyncEnv<'_>,
    desired: &DesiredState,
    cached: Vec<(SecretRef, Arc<LiveSecret>)>,
    scope: &ObserveScope<'_>,
) -> Result<BTreeMap<SecretRef, ObservedSecret>, Unobserved> {
    let ObserveScope {
        manager,
        table,
        frozen,
        only,
        read_only,
    } = *scope;
    let managers = Managers {
        ours: manager,
        living: &env.living_managers,
    };
    let mut live: BTreeMap<SecretRef, Arc<LiveSecret>> = cached
        .into_iter()
        .filter(|(reference, secret)| {
            let writable = !read_only && !frozen.contains(&reference.namespace);
            desired.secrets.contains_key(reference)
                || owns_data_keys(secret, manager)
                || (writable && holds_orphaned_fields_of(secret, managers, table))
        })
        .collect();
    let missing: Vec<SecretRef> = desired
        .secrets
        .keys()
        .filter(|secret| in_view(env, only, secret) && !live.contains_key(secret))
        .cloned()
        .collect();
    let fetched = apply::fetch_secrets(env.client, missing)
        .await
        .map_err(Unobserved::Cluster)?;
    for secret in fetched {
        if let Some(reference) = secret_ref(&secret) {
            live.insert(reference, Arc::new(secret));
        }
    }
    if !read_only {
        if !(env.still_exists)() {
            return Err(Unobserved::Outlived);
        }
        let writable = live
            .iter_mut()
            .filter(|(reference, _)| !frozen.contains(&reference.namespace));
        for (_, secret) in writable {
            if let Some(released) = release_dead_managers(env, secret, manager).await {
                *secret = Arc::new(released);
            }
        }
    }
    Ok(secrets::observe_all(
        live.values().map(|s| s.as_ref()),
        managers,
    ))
}

/// Why a sync could not observe the cluster.
enum Unobserved {
    /// A Secret could not be read.
    Cluster(String),
    /// The CredstashSync is gone: not even a handover is written.
    Outlived,
}

/// Whose Secrets a sync observes, and which it may change before planning.
#[derive(Clone, Copy)]
struct ObserveScope<'a> {
    /// Our field manager.
    manager: &'a str,
    /// Our table (Secrets whose source names it may be inherited).
    table: &'a str,
    /// Namespaces where nothing is written, not even a handover.
    frozen: &'a BTreeSet<String>,
    /// Only these Secrets, when given.
    only: Option<&'a BTreeSet<SecretRef>>,
    /// Dry run: change nothing.
    read_only: bool,
}

/// Hands the keys of the `kubestash/*` managers of `secret` that belong to
/// no living CredstashSync (a renamed or deleted one, or `kubestash sync`)
/// over to `ours`. A failure is logged and leaves the Secret as it was: its
/// keys are then written (they are not owned against us) but may not be
/// prunable yet.
async fn release_dead_managers(
    env: &SyncEnv<'_>,
    secret: &LiveSecret,
    ours: &str,
) -> Option<LiveSecret> {
    let dead: BTreeSet<String> = secret
        .managed_fields
        .iter()
        .filter_map(|entry| entry.manager().map(str::to_owned))
        .filter(|m| {
            m.starts_with(secrets::MANAGER_PREFIX) && m != ours && !env.living_managers.contains(m)
        })
        .collect();
    if dead.is_empty() {
        return None;
    }
    match apply::release_managers(env.client, secret, &dead, ours).await {
        Ok(Some(released)) => {
            tracing::info!(managers = ?dead, secret = ?secret_ref(&released), "released the keys of CredstashSyncs that no longer exist");
            record_write(env, released.clone(), tokio::time::Instant::now());
            Some(released)
        }
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "could not release a deleted CredstashSync's keys");
            None
        }
    }
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
    let keys = KeyCounts {
        total: report.total as i64,
        invalid: report.invalid.len() as i64,
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
        skipped: plan
            .secrets
            .iter()
            .filter_map(|p| match &p.action {
                SecretAction::Skip(reason) => Some(format!("{}: {reason}", p.secret)),
                _ => None,
            })
            .collect(),
        created: done(SecretAction::Create),
        updated: done(SecretAction::Update),
        plan: plan.summary(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::ApplySecret;

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

    #[tokio::test]
    async fn no_write_is_sent_into_a_namespace_that_began_terminating() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("test URL"));
        let client = Client::try_from(config).expect("test client");
        let metrics = Metrics::new().expect("metrics");
        let own_writes = Mutex::new(OwnWrites::default());
        let env = SyncEnv {
            client: &client,
            metrics: &metrics,
            namespaces: BTreeMap::from([("ns-b".to_owned(), Labels::default())]),
            managed_secrets: Vec::new(),
            living_managers: BTreeSet::new(),
            own_writes: &own_writes,
            cached_version: Box::new(|_| None),
            write_gate: WriteGate::default(),
            still_exists: Box::new(|| true),
            namespace_active: Box::new(|_| false),
        };
        let secret = SecretRef::new("ns-b", "app");
        let plan = Plan {
            secrets: vec![SecretPlan {
                secret: secret.clone(),
                action: SecretAction::Create,
                keys: Vec::new(),
                apply: Some(ApplySecret {
                    namespace: "ns-b".to_owned(),
                    name: "app".to_owned(),
                    field_manager: "kubestash/test".to_owned(),
                    labels: BTreeMap::new(),
                    annotations: BTreeMap::new(),
                    data: BTreeMap::new(),
                    carried: BTreeSet::new(),
                }),
                metadata_conflicts: Vec::new(),
            }],
        };
        // Nothing listens on the client's address: a write sent would fail
        // with a connection error, not as a terminating namespace.
        let writes = apply_where_namespaces_live(&env, &plan).await;
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].secret, secret);
        assert_eq!(
            writes[0].result.as_ref().err(),
            Some(&WriteError::NamespaceTerminating("ns-b".to_owned()))
        );
    }

    /// The names of every batch, and the Secrets each batch names.
    fn batch_names(names: &[String]) -> Vec<(Vec<String>, Vec<SecretRef>)> {
        let entries: Vec<Entry> = names.iter().map(|n| Entry::opened(n)).collect();
        let pairs = names.iter().map(String::as_str).zip(entries.iter());
        let batches = SecretBatches::new(pairs.collect());
        batches
            .batches()
            .map(|b| {
                let names = b.entries.iter().map(|(n, _)| (*n).to_owned()).collect();
                (names, b.secrets)
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
        use crate::credstash::crypto::CryptoError;
        use crate::credstash::{ItemError, KmsError};
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
        let names: Vec<String> = snapshot.names_to_retry(&spec).into_iter().collect();
        assert_eq!(names, ["ns/app/THROTTLED", "ns/db/LATER"]);
        snapshot.set(
            "ns/app/THROTTLED".into(),
            Some(Entry::opened("ns/app/THROTTLED")),
        );
        let names: Vec<String> = snapshot.names_to_retry(&spec).into_iter().collect();
        assert_eq!(names, ["ns/db/LATER"], "opened on a re-read");
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
