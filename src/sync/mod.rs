//! The sync engine, shared by the operator (`controller`) and `kubestash
//! sync`: read the table (all of it, or the names a stream touched), map it
//! to desired Secrets, plan against what the cluster has, apply (unless dry
//! run), and describe the outcome.
//!
//! ```text
//! table read ──> TableSnapshot ──> batches of whole Secrets ──┐
//!                                                            v
//! ClusterView ──> NamespaceScope   map ─> observe (+ hand-over) ─> plan ─> apply ─> SyncOutcome
//! ```
//!
//! - [`env`]: what the engine asks of the cluster ([`ClusterView`]): the
//!   operator answers from its watch caches, `kubestash sync` from LISTs.
//! - [`scope`]: where the sync may write and what it may prune
//!   ([`NamespaceScope`]), computed once per sync.
//! - [`snapshot`]: the table as last read ([`TableSnapshot`]).
//! - [`batches`]: a sync goes through its Secrets a batch of whole Secrets
//!   at a time.
//! - [`observe`]: the live state of a batch's Secrets, and the hand-over of
//!   deleted CredstashSyncs' keys.
//! - [`outcome`]: what the sync did ([`SyncOutcome`]).
//!
//! Every plan covers whole Secrets: the desired keys of a Secret always come
//! from every name of the table snapshot that maps into it, never from a
//! cached copy of the Secret, so an apply can not drop a key that an earlier
//! write added. Nothing here calls back into its caller: it asks the
//! [`ClusterView`] it is given.

pub mod batches;
pub mod env;
pub mod observe;
pub mod outcome;
pub mod scope;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use crate::crd::ValidSpec;
use crate::credstash::{Entry, KmsTally, TableError, TableReader};
use crate::mapping::{self, DesiredState, MappingScope, SecretRef, TableValue};
use crate::metrics::Metrics;
use crate::secrets::apply::SecretOperation;
use crate::secrets::apply::{self, WriteError, WriteResult};
use crate::secrets::observed::secret_ref;
use crate::secrets::{self, LiveSecret, Managers, Plan, PlanOptions, SecretAction, SecretPlan};
use batches::{Batch, Named, SecretBatches};
use observe::Unobserved;

pub use env::{is_active, ClusterPicture, ClusterView, ListedCluster};
pub use outcome::{describe, SyncOutcome, SyncResult};
pub use scope::{Labels, NamespaceScope, Picture};
pub use snapshot::TableSnapshot;

/// Names of one stream batch read at once (each a Query and, for a new
/// version, a KMS Decrypt).
const REFRESH_CONCURRENCY: usize = 16;

/// One sync of one CredstashSync: what it may do ([`NamespaceScope`]) and
/// the cluster as it was when the sync began.
pub struct Engine<'a> {
    view: &'a dyn ClusterView,
    metrics: &'a Metrics,
    /// The CredstashSync's name.
    name: &'a str,
    spec: &'a ValidSpec,
    /// Our field manager, `kubestash/<name>`.
    manager: String,
    scope: NamespaceScope,
    managed_secrets: Vec<Arc<LiveSecret>>,
    living_managers: BTreeSet<String>,
}

/// What every batch of one pass over the entries shares.
struct Pass<'p> {
    mapping: MappingScope,
    plan: PlanOptions,
    picture: &'p Picture,
    /// Only these Secrets, when given (a run of pending work).
    only: Option<&'p BTreeSet<SecretRef>>,
}

impl<'a> Engine<'a> {
    /// A sync of CredstashSync `name` (`spec`) over the cluster as `view`
    /// shows it now.
    pub fn new(
        view: &'a dyn ClusterView,
        metrics: &'a Metrics,
        name: &'a str,
        spec: &'a ValidSpec,
    ) -> Self {
        let picture = view.picture();
        Self {
            scope: NamespaceScope::new(spec, &picture.namespaces),
            managed_secrets: picture.managed_secrets,
            living_managers: picture.living_managers,
            manager: secrets::field_manager(name),
            view,
            metrics,
            name,
            spec,
        }
    }

    /// Where this sync may write and what it may prune.
    pub fn scope(&self) -> &NamespaceScope {
        &self.scope
    }

    /// Runs a full sync from a read of the whole table that started no
    /// earlier than `not_before` (shared with other CredstashSyncs of the
    /// table reading at the same time). Returns what happened and, when the
    /// table could be read, the snapshot to keep.
    pub async fn full_sync(
        &self,
        reader: &Arc<TableReader>,
        not_before: tokio::time::Instant,
    ) -> (SyncOutcome, Option<TableSnapshot>) {
        let started = Instant::now();
        let read = reader.read_all_joined(not_before).await;
        self.metrics
            .sync(self.name)
            .observe_table_read(started.elapsed());
        self.record_kms_calls(reader);
        if let Some(error) = &read.error {
            let outcome = SyncOutcome {
                dry_run: self.spec.dry_run,
                table_error: Some(error.to_string()),
                ..Default::default()
            };
            return (outcome, None);
        }
        let snapshot = TableSnapshot::new(read);
        let picture = Picture::new(&snapshot, &BTreeSet::new());
        let outcome = self.sync_entries(snapshot.entries(), &picture, None).await;
        (outcome, Some(snapshot))
    }

    /// Re-reads the names a stream batch touched (one consistent Query each)
    /// into `snapshot`; a name with no version left is removed from it.
    /// Returns the Secrets whose keys may have changed. Reads run
    /// concurrently; on error, `snapshot` is left as it was and the caller
    /// keeps the names.
    pub async fn refresh_names(
        &self,
        reader: &Arc<TableReader>,
        snapshot: &mut TableSnapshot,
        names: &BTreeSet<String>,
    ) -> Result<BTreeSet<SecretRef>, TableError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        // Only names that can become a key we write are worth a Query.
        let wanted: Vec<(String, SecretRef)> = names
            .iter()
            .filter_map(|name| Some((name.clone(), snapshot::secret_of(name)?)))
            .filter(|(_, secret)| self.scope.reads(&secret.namespace))
            .collect();
        // Owned items: borrowing closures here trip rustc's higher-ranked Send
        // checks once this future runs inside kube-runtime's controller.
        let read: Result<Vec<(String, SecretRef, Option<Entry>)>, TableError> =
            stream::iter(wanted)
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
        self.record_kms_calls(reader);
        result.map(|()| touched)
    }

    /// Plans and applies whole `secrets` from `snapshot` (no table read): for
    /// stream changes, namespaces that appeared, drift and failed writes.
    /// `unread` are the credstash names still waiting to be re-read (their
    /// Secrets are not pruned: the snapshot is older than the table there).
    pub async fn apply_secrets(
        &self,
        snapshot: &TableSnapshot,
        secrets: &BTreeSet<SecretRef>,
        unread: &BTreeSet<String>,
    ) -> SyncOutcome {
        let entries = secrets.iter().flat_map(|s| snapshot.entries_of(s));
        let picture = Picture::new(snapshot, unread);
        self.sync_entries(entries, &picture, Some(secrets)).await
    }

    /// Maps `entries` to desired Secrets, plans them against the cluster
    /// (only `only` when given), applies the plan unless dry run, and
    /// describes the outcome; a batch of whole Secrets at a time.
    async fn sync_entries<'e>(
        &self,
        entries: impl Iterator<Item = Named<'e>>,
        picture: &Picture,
        only: Option<&BTreeSet<SecretRef>>,
    ) -> SyncOutcome {
        let pass = Pass {
            mapping: self.scope.mapping(&self.spec.secret_templates),
            plan: PlanOptions {
                manager: self.manager.clone(),
                source: secrets::source_annotation(self.name, &self.spec.table),
                now: Utc::now(),
                secret_metadata: self.spec.secret_metadata.clone(),
                adopt_existing: self.spec.adopt_existing,
                templates: self.spec.secret_templates.clone(),
            },
            picture,
            only,
        };
        let mut outcome = SyncOutcome {
            dry_run: self.spec.dry_run,
            unselected_namespaces: self.scope.unselected().clone(),
            ..Default::default()
        };
        let _batch = self.view.write_gate().enter().await;
        let named = SecretBatches::new(entries.collect());
        for batch in named.with_cached(self.cached_in_view(only)) {
            match self.sync_batch(&pass, batch).await {
                Ok(part) => outcome.absorb(part),
                Err(Unobserved::Outlived) => return self.outlived(),
                Err(Unobserved::Cluster(error)) => {
                    outcome.cluster_error = Some(error);
                    break;
                }
            }
        }
        outcome
    }

    /// Maps, observes, plans and applies one batch; records its writes.
    async fn sync_batch(
        &self,
        pass: &Pass<'_>,
        batch: Batch<'_, '_>,
    ) -> Result<SyncOutcome, Unobserved> {
        let dry_run = self.spec.dry_run;
        let desired = map_entries(batch.entries, &pass.mapping);
        let observed = self.observe(&desired, batch.cached, pass.only).await?;
        let plan = secrets::plan(&desired.secrets, &observed, &pass.plan, |secret, wanted| {
            self.scope.secret(secret, wanted, pass.picture)
        });
        drop(observed);
        if !dry_run && !self.view.still_exists() {
            return Err(Unobserved::Outlived);
        }
        let writes = if dry_run {
            Vec::new()
        } else {
            self.apply_where_namespaces_live(&plan).await
        };
        let outcome = describe(dry_run, &desired, &plan, &writes);
        self.record_writes(writes);
        Ok(outcome)
    }

    /// Applies the writes of `plan` whose namespace is still active; a write
    /// into one that began terminating since the sync looked is not sent,
    /// and is reported as the API server would refuse it.
    async fn apply_where_namespaces_live(&self, plan: &Plan) -> Vec<WriteResult> {
        let (live, terminating): (Vec<&SecretPlan>, Vec<&SecretPlan>) = plan
            .secrets
            .iter()
            .filter(|p| p.apply.is_some())
            .partition(|p| self.view.namespace_active(&p.secret.namespace));
        let mut writes = apply::apply_all(self.view.client(), live).await;
        writes.extend(terminating.into_iter().map(|p| WriteResult {
            secret: p.secret.clone(),
            action: p.action.clone(),
            result: Err(WriteError::NamespaceTerminating(p.secret.namespace.clone())),
        }));
        writes
    }

    /// Whose field ownership counts for this sync.
    fn managers(&self) -> Managers<'_> {
        Managers {
            ours: &self.manager,
            living: &self.living_managers,
        }
    }

    /// The cached managed Secrets this sync may plan, by reference.
    fn cached_in_view(
        &self,
        only: Option<&BTreeSet<SecretRef>>,
    ) -> BTreeMap<SecretRef, Arc<LiveSecret>> {
        self.managed_secrets
            .iter()
            .filter_map(|secret| Some((secret_ref(secret)?, secret.clone())))
            .filter(|(reference, _)| self.in_view(only, reference))
            .collect()
    }

    /// Whether this sync may plan `secret`: its namespace can receive
    /// Secrets, and it is one of `only` when given.
    fn in_view(&self, only: Option<&BTreeSet<SecretRef>>, secret: &SecretRef) -> bool {
        self.scope.is_active(&secret.namespace) && only.is_none_or(|set| set.contains(secret))
    }

    /// The outcome of a sync whose CredstashSync went away before it wrote:
    /// nothing written, and a failure, so that nothing it learned is kept.
    fn outlived(&self) -> SyncOutcome {
        SyncOutcome {
            dry_run: self.spec.dry_run,
            cluster_error: Some(
                "the CredstashSync was deleted while this sync ran; nothing was written".to_owned(),
            ),
            ..Default::default()
        }
    }

    /// Counts successful writes and hands what they returned to the view,
    /// so that the next plan sees them even before the watch cache does.
    fn record_writes(&self, writes: Vec<WriteResult>) {
        for write in writes {
            let Ok(written) = write.result else { continue };
            let operation = if write.action == SecretAction::Create {
                SecretOperation::Create
            } else {
                SecretOperation::Update
            };
            self.metrics.sync(self.name).record_secret_write(operation);
            if let Some(secret) = written {
                self.view.wrote(secret);
            }
        }
    }

    /// Reports the reader's KMS work not reported yet (by this
    /// CredstashSync or another one sharing the reader).
    fn record_kms_calls(&self, reader: &TableReader) {
        let tally = reader.take_unreported_kms();
        let metrics = self.metrics;
        metrics.record_kms_decrypts(Ok(()), tally.succeeded);
        for (reason, count) in KmsTally::FAILURE_REASONS.into_iter().zip(tally.failed) {
            metrics.record_kms_decrypts(Err(reason), count);
        }
        metrics.kms_cache_hits(tally.cache_hits);
    }
}

/// The desired Secrets of `entries` (a failed item keeps its reason).
fn map_entries(entries: &[Named<'_>], scope: &MappingScope) -> DesiredState {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::ApplySecret;
    use crate::write_gate::WriteGate;

    /// A cluster where namespace `ns-b` was listed but has begun
    /// terminating, and nothing listens on the client's address.
    struct Terminating {
        client: kube::Client,
        gate: WriteGate,
    }

    impl ClusterView for Terminating {
        fn client(&self) -> &kube::Client {
            &self.client
        }
        fn picture(&self) -> ClusterPicture {
            ClusterPicture {
                namespaces: BTreeMap::from([("ns-b".to_owned(), Labels::default())]),
                ..Default::default()
            }
        }
        fn write_gate(&self) -> &WriteGate {
            &self.gate
        }
        fn still_exists(&self) -> bool {
            true
        }
        fn namespace_active(&self, _namespace: &str) -> bool {
            false
        }
        fn wrote(&self, _secret: LiveSecret) {}
    }

    #[tokio::test]
    async fn no_write_is_sent_into_a_namespace_that_began_terminating() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("test URL"));
        let view = Terminating {
            client: kube::Client::try_from(config).expect("test client"),
            gate: WriteGate::default(),
        };
        let metrics = Metrics::new().expect("metrics");
        let spec = crate::crd::CredstashSyncSpec::new("table")
            .validate()
            .expect("a valid spec");
        let engine = Engine::new(&view, &metrics, "test", &spec);
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
                    secret_type: crate::templates::SecretType::Opaque,
                }),
                metadata_conflicts: Vec::new(),
                secret_type: crate::templates::SecretType::Opaque,
            }],
        };
        // Nothing listens on the client's address: a write sent would fail
        // with a connection error, not as a terminating namespace.
        let writes = engine.apply_where_namespaces_live(&plan).await;
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].secret, secret);
        assert_eq!(
            writes[0].result.as_ref().err(),
            Some(&WriteError::NamespaceTerminating("ns-b".to_owned()))
        );
    }
}
