//! The operator: reconciles CredstashSyncs into Secrets.
//!
//! One kube-runtime `Controller` over CredstashSyncs. Each reconcile decides
//! ([`triggers`]) between a full sync, applying pending work, or nothing
//! ([`reconcile`]), over what this process keeps of the CredstashSync
//! ([`state`]); syncs run through [`crate::sync`], which sees the cluster
//! through the watch caches ([`CachedCluster`]); outcomes become status,
//! events and metrics ([`report`]). A DynamoDB stream ([`streaming`]) wakes
//! the reconciler when records arrive; changed Secrets roll the workloads
//! that opted in ([`rollout`]).

pub mod reconcile;
pub mod report;
pub mod rollout;
pub mod state;
pub mod streaming;
pub mod triggers;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::channel::mpsc::{unbounded, UnboundedSender};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;

use crate::crd::{CredstashSync, CredstashSyncStatus, ValidSpec};
use crate::credstash::{self, ReaderOptions, TableLocation, TableReader};
use crate::mapping::SecretRef;
use crate::metrics::Metrics;
use crate::secrets::live::reduce_event;
use crate::secrets::observed::{has_manager, secret_ref};
use crate::secrets::{self, Echo, LiveSecret, OwnWrites, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::server::Health;
use crate::sync::{ClusterPicture, ClusterView, Labels};
use crate::write_gate::WriteGate;
use report::{Notice, Severity};
use state::SharedState;

/// Finalizer that earlier versions put on every CredstashSync (to forget
/// its metrics). No longer used: metrics are forgotten when the watch sees
/// the deletion, and the operator removes the finalizer where it finds it,
/// so no CredstashSync is ever stuck Terminating (e.g. on `helm uninstall`).
pub const LEGACY_FINALIZER: &str = "kubestash.io/cleanup";
/// Name of the controller in events and the status field manager.
pub const CONTROLLER_NAME: &str = "kubestash";

/// Errors that make a reconcile retry ([`triggers::after_error`] says when).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status of CredstashSync {name}: {source}")]
    Status {
        name: String,
        source: kube::Error,
        /// The backoff of the CredstashSync's failed status writes.
        retry_in: Duration,
    },
    #[error("sync of CredstashSync {name} failed: {reason}")]
    SyncFailed {
        name: String,
        reason: String,
        /// The backoff of the CredstashSync's failed full syncs.
        retry_in: Duration,
    },
    #[error("removing the legacy finalizer of CredstashSync {name}: {source}")]
    Finalizer { name: String, source: kube::Error },
    #[error("CredstashSync has no name")]
    Unnamed,
}

impl Error {
    /// Whether the request lost a race with a change of the object the
    /// cache had not yet seen (409 Conflict, or 422 when a JSON Patch `test`
    /// fails). Nothing failed: the watch event on its way reconciles again,
    /// so no backoff and no warning.
    pub fn is_stale_object(&self) -> bool {
        match self {
            Error::Finalizer {
                source: kube::Error::Api(status),
                ..
            } => status.is_conflict() || status.is_invalid(),
            _ => false,
        }
    }
}

/// Process-wide settings of the operator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The operator's own namespace (always excluded).
    pub operator_namespace: String,
    /// Pod name, for events' reportingInstance.
    pub instance: Option<String>,
    /// Options for the table readers.
    pub reader: ReaderOptions,
    /// How often a followed stream is checked for replacement and new
    /// shards, and a table without a stream for a new one.
    pub stream_check_interval: Duration,
    /// Write batches pass it; the operator closes it to hand over.
    pub write_gate: WriteGate,
}

/// Shared state of the reconcilers.
pub struct Context {
    client: Client,
    metrics: Metrics,
    health: Health,
    recorder: Recorder,
    /// Managed Secrets without their values (see [`secrets::live`]).
    managed_secrets: Store<LiveSecret>,
    namespaces: Store<Namespace>,
    syncs: Store<CredstashSync>,
    settings: Settings,
    /// What this process keeps of each CredstashSync: taken once per
    /// reconcile, and by the watches that mark work pending.
    states: Mutex<HashMap<String, SharedState>>,
    /// Our recent Secret writes, until the watch cache has them.
    own_writes: Mutex<OwnWrites>,
    /// Asks the controller to reconcile every CredstashSync.
    wake: UnboundedSender<()>,
    /// True once every cache has completed its first list.
    caches_synced: tokio::sync::watch::Receiver<bool>,
    /// uids of CredstashSyncs seen deleted: a reconcile still in flight
    /// when the deletion arrived must not bring their metrics back.
    deleted: Mutex<HashSet<String>>,
    /// One reader per table location, shared by the CredstashSyncs that
    /// name it (one Scan when they sync together, one Decrypt per item
    /// version); it lives while one of them holds it.
    readers: Mutex<BTreeMap<TableLocation, Weak<TableReader>>>,
    /// Restarts of workloads whose Secrets changed (`spec.rollout`).
    rollouts: rollout::Rollouts,
}

impl Context {
    /// The state of CredstashSync `name` (new if this process has none).
    fn state(&self, name: &str) -> SharedState {
        self.states
            .lock()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Every CredstashSync's state (to mark work pending).
    fn all_states(&self) -> Vec<(String, SharedState)> {
        let states = self.states.lock();
        states.iter().map(|(n, s)| (n.clone(), s.clone())).collect()
    }

    /// Waits until the CredstashSync, Namespace and managed-Secret caches
    /// have completed their first list: nothing is planned from less.
    async fn caches_ready(&self) {
        let mut synced = self.caches_synced.clone();
        let _ = synced.wait_for(|ready| *ready).await;
    }

    /// The table reader of a CredstashSync (`state`), kept across
    /// reconciles for the values it remembers, shared with the other
    /// CredstashSyncs of the same location, and replaced when the table's
    /// location changes.
    async fn reader(&self, state: &SharedState, spec: &ValidSpec) -> Arc<TableReader> {
        let location = TableLocation {
            table: spec.table.clone(),
            region: spec.region.clone(),
            kms_region: spec.kms_region.clone(),
            encryption_context: spec.encryption_context.clone(),
        };
        let existing = state.lock().reader_for(&location);
        if let Some(reader) = existing {
            return reader;
        }
        let shared = self.readers.lock().get(&location).and_then(Weak::upgrade);
        let reader = match shared {
            Some(reader) => reader,
            None => {
                let reader =
                    Arc::new(credstash::connect(&location, self.settings.reader.clone()).await);
                let mut readers = self.readers.lock();
                readers.retain(|_, reader| reader.strong_count() > 0);
                readers
                    .entry(location.clone())
                    .or_insert_with(|| Arc::downgrade(&reader))
                    .upgrade()
                    .unwrap_or(reader)
            }
        };
        state.lock().reader_opened(location, reader.clone());
        reader
    }

    /// The namespaces that exist and are not terminating, with their labels.
    fn active_namespaces(&self) -> BTreeMap<String, Labels> {
        self.namespaces
            .state()
            .iter()
            .filter(|ns| crate::sync::is_active(ns))
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect()
    }

    /// What a sync of `css` sees of the cluster.
    fn cluster<'a>(&'a self, css: &'a CredstashSync) -> CachedCluster<'a> {
        CachedCluster { ctx: self, css }
    }

    /// Whether `css` (this very object, by uid) exists and is not being
    /// deleted, as far as either watch has seen.
    fn still_exists(&self, css: &CredstashSync) -> bool {
        if self.was_deleted(css) {
            return false;
        }
        self.syncs
            .get(&ObjectRef::from_obj(css))
            .is_some_and(|live| live.uid() == css.uid() && live.meta().deletion_timestamp.is_none())
    }

    /// The managed Secrets: the watch cache with our own recent writes laid
    /// over it.
    fn managed_secrets_now(&self) -> Vec<Arc<LiveSecret>> {
        let cached = self.managed_secrets.state();
        self.own_writes
            .lock()
            .overlay(cached, tokio::time::Instant::now())
    }

    /// A managed Secret changed or was deleted. Unless it is the echo of
    /// our own write, every CredstashSync with keys in it checks it again
    /// (drift repair, from what it already knows).
    fn secret_changed(&self, secret: &LiveSecret, deleted: bool) {
        if self.own_writes.lock().observe(secret, deleted) == Echo::Own {
            return;
        }
        let Some(reference) = secret_ref(secret) else {
            return;
        };
        self.plan_again(&reference, |name| {
            has_manager(secret, &secrets::field_manager(name))
        });
    }

    /// A Secret without our label is gone. It may have been left alone
    /// (`adoptExisting: false`, a type kubestash does not write): the
    /// CredstashSyncs that map into it may now create it.
    fn unmanaged_secret_deleted(&self, secret: &PartialObjectMeta<Secret>) {
        let (Some(namespace), Some(name)) = (&secret.metadata.namespace, &secret.metadata.name)
        else {
            return;
        };
        self.plan_again(&SecretRef::new(namespace, name), |_| false);
    }

    /// Has every CredstashSync that maps into `reference`, or that
    /// `also(name)` names, plan that Secret again, and wakes them.
    fn plan_again(&self, reference: &SecretRef, also: impl Fn(&str) -> bool) {
        let mut woken = false;
        for (name, state) in self.all_states() {
            let mut state = state.lock();
            if state.maps_into(reference) || also(&name) {
                state.drifted(reference.clone());
                woken = true;
            }
        }
        if woken {
            let _ = self.wake.unbounded_send(());
        }
    }

    /// The managed-Secret cache was listed again (after a watch gap, where
    /// changes may have been missed): every CredstashSync checks its Secrets.
    fn secrets_relisted(&self) {
        for (_, state) in self.all_states() {
            state.lock().recheck_all();
        }
        let _ = self.wake.unbounded_send(());
    }

    /// A CredstashSync was deleted: forget its metrics and state. Its
    /// Secrets, values and field ownership stay: the `kubestash/<name>`
    /// entries pass to the next CredstashSync that writes each Secret (see
    /// [`sync`]), keys of names deleted meanwhile included, so that they stay
    /// prunable. Dropping the entries here would leave such keys owned by
    /// nobody, never to be pruned (soak seed 1002). The CredstashSyncs that
    /// map into its Secrets plan them again now, so that a key they were
    /// refused as a conflict passes to them at once.
    fn forget(&self, name: &str) {
        self.forget_state(name);
        tracing::info!(credstashsync = %name, "CredstashSync deleted: its metrics are removed; its Secrets, values and keys stay until another CredstashSync writes those Secrets and takes them over");
        let manager = secrets::field_manager(name);
        let held: Vec<SecretRef> = self
            .managed_secrets
            .state()
            .iter()
            .filter(|secret| has_manager(secret, &manager))
            .filter_map(|secret| secret_ref(secret))
            .collect();
        if held.is_empty() {
            return;
        }
        for (_, state) in self.all_states() {
            let mut state = state.lock();
            held.iter().for_each(|secret| state.owner_gone(secret));
        }
        let _ = self.wake.unbounded_send(());
    }

    /// Drops the metrics and state of CredstashSync `name`.
    fn forget_state(&self, name: &str) {
        self.metrics.sync(name).forget();
        self.states.lock().remove(name);
    }

    /// Whether the CredstashSync with this uid was seen deleted.
    fn was_deleted(&self, css: &CredstashSync) -> bool {
        css.uid()
            .is_some_and(|uid| self.deleted.lock().contains(&uid))
    }

    async fn publish(&self, css: &CredstashSync, notice: &Notice) {
        let event = KubeEvent {
            type_: match notice.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: notice.reason.to_owned(),
            note: Some(report::fit_note(&notice.note)),
            action: notice.action.to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &css.object_ref(&())).await {
            tracing::warn!(credstashsync = %css.name_any(), error = %err, "could not publish event");
        }
    }

    /// Writes `status` of `css` (whose state is `state`) with server-side
    /// apply, unless it is what the object has. A failed write is kept in
    /// the state, to build on and write again after a backoff.
    async fn write_status(
        &self,
        css: &CredstashSync,
        state: &SharedState,
        status: &CredstashSyncStatus,
    ) -> Result<(), Error> {
        let name = css.name_any();
        let current = self.current_status(css, state);
        // Not for a CredstashSync gone meanwhile: its status would land on
        // one re-created under the same name.
        if !state.lock().needs_write(status, current.as_ref()) || !self.still_exists(css) {
            return Ok(());
        }
        let api: Api<CredstashSync> = Api::all(self.client.clone());
        let patch = serde_json::json!({
            "apiVersion": CredstashSync::api_version(&()),
            "kind": CredstashSync::kind(&()),
            "status": status,
        });
        let params = PatchParams::apply(CONTROLLER_NAME).force();
        match api
            .patch_status(&name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(stored) => {
                let version = stored.resource_version();
                state.lock().status_written(version, status.clone());
                Ok(())
            }
            Err(source) => {
                let now = tokio::time::Instant::now();
                let retry_in = state.lock().status_unwritten(status.clone(), now);
                Err(Error::Status {
                    name,
                    source,
                    retry_in,
                })
            }
        }
    }

    /// The status of `css` as this process last knew it: its own latest
    /// write (or failed write), while the cache has not delivered it yet.
    fn current_status(
        &self,
        css: &CredstashSync,
        state: &SharedState,
    ) -> Option<CredstashSyncStatus> {
        let version = css.meta().resource_version.as_deref();
        state.lock().current_status(version, css.status.as_ref())
    }

    /// Removes the finalizer earlier versions added (a JSON patch that tests
    /// the list first, so a concurrent change is not overwritten).
    async fn remove_legacy_finalizer(&self, css: &CredstashSync) -> Result<(), Error> {
        let name = css.name_any();
        let finalizers = css.finalizers();
        let Some(index) = finalizers.iter().position(|f| f == LEGACY_FINALIZER) else {
            return Ok(());
        };
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": LEGACY_FINALIZER},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ]))
        .map_err(|err| Error::Finalizer {
            name: name.clone(),
            source: kube::Error::SerdeError(err),
        })?;
        let api: Api<CredstashSync> = Api::all(self.client.clone());
        api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map(|_| ())
            .map_err(|source| Error::Finalizer { name, source })
    }
}

/// What a sync of one CredstashSync sees of the cluster: the watch caches
/// now, with our own recent writes laid over the managed Secrets; a
/// CredstashSync lives as far as either of its watches has seen.
pub struct CachedCluster<'a> {
    ctx: &'a Context,
    css: &'a CredstashSync,
}

impl ClusterView for CachedCluster<'_> {
    fn client(&self) -> &Client {
        &self.ctx.client
    }

    fn picture(&self) -> ClusterPicture {
        let syncs = self.ctx.syncs.state();
        let living = syncs
            .iter()
            .filter(|css| css.meta().deletion_timestamp.is_none() && !self.ctx.was_deleted(css));
        ClusterPicture {
            namespaces: self.ctx.active_namespaces(),
            managed_secrets: self.ctx.managed_secrets_now(),
            living_managers: living
                .map(|css| secrets::field_manager(&css.name_any()))
                .collect(),
        }
    }

    fn write_gate(&self) -> &WriteGate {
        &self.ctx.settings.write_gate
    }

    fn still_exists(&self) -> bool {
        self.ctx.still_exists(self.css)
    }

    fn namespace_active(&self, namespace: &str) -> bool {
        let namespace = self.ctx.namespaces.get(&ObjectRef::new(namespace));
        namespace.is_some_and(|ns| crate::sync::is_active(&ns))
    }

    /// Laid over the cache until the cache has it (a write the cache holds
    /// already, by resourceVersion, is not recorded).
    fn wrote(&self, secret: LiveSecret) {
        let key = |s: SecretRef| ObjectRef::new(&s.name).within(&s.namespace);
        let cached = secret_ref(&secret)
            .and_then(|reference| self.ctx.managed_secrets.get(&key(reference)))
            .and_then(|cached| cached.metadata.resource_version.clone());
        let now = tokio::time::Instant::now();
        self.ctx
            .own_writes
            .lock()
            .record(secret, cached.as_deref(), now);
    }
}

/// Logs a watch error with the resource it concerns and reports it in
/// `/readyz` and `kubestash_watch_errors_total`; the watcher retries with
/// backoff by itself.
fn report_watch_error(health: &Health, resource: &str, error: &watcher::Error) {
    tracing::warn!(resource, error = %error, "watch failed; retrying with backoff");
    health.record_watch_error(resource, &error.to_string());
}

/// Tells a watch's first complete listing from a relist, after a gap in
/// which events may have been missed.
#[derive(Default)]
struct Listings {
    listed_once: bool,
}

impl Listings {
    /// A listing ended: whether it was a relist.
    fn relisted(&mut self) -> bool {
        std::mem::replace(&mut self.listed_once, true)
    }
}

/// Feeds the managed-Secret watch into the cache and the drift detection.
fn follow_managed_secrets(
    events: impl Stream<Item = watcher::Result<WatchEvent<LiveSecret>>> + Send,
    ctx: Arc<Context>,
) -> impl std::future::Future<Output = ()> + Send {
    let mut listings = Listings::default();
    events.for_each(move |event| {
        match &event {
            Ok(WatchEvent::Apply(secret)) => ctx.secret_changed(secret, false),
            Ok(WatchEvent::Delete(secret)) => ctx.secret_changed(secret, true),
            Ok(WatchEvent::InitDone) => {
                if listings.relisted() {
                    ctx.secrets_relisted();
                }
            }
            Ok(_) => {}
            Err(error) => report_watch_error(&ctx.health, "secrets", error),
        }
        futures::future::ready(())
    })
}

/// Follows the Secrets without our label, by metadata only, for their
/// deletions (see [`Context::unmanaged_secret_deleted`]). After a watch gap
/// every CredstashSync checks its Secrets, as for the managed watch.
fn follow_unmanaged_secret_deletions(
    client: Client,
    ctx: Arc<Context>,
) -> impl std::future::Future<Output = ()> + Send {
    let unmanaged = format!("{MANAGED_BY_LABEL}!={MANAGED_BY_VALUE}");
    let mut listings = Listings::default();
    watcher(
        Api::<PartialObjectMeta<Secret>>::all(client),
        watcher::Config::default().labels(&unmanaged),
    )
    .default_backoff()
    .for_each(move |event| {
        match &event {
            Ok(WatchEvent::Delete(secret)) => ctx.unmanaged_secret_deleted(secret),
            Ok(WatchEvent::InitDone) => {
                if listings.relisted() {
                    ctx.secrets_relisted();
                }
            }
            Ok(_) => {}
            Err(error) => report_watch_error(&ctx.health, "secrets", error),
        }
        futures::future::ready(())
    })
}

/// Forgets CredstashSyncs when the watch sees them deleted (and, after a
/// watch gap, those that are no longer listed).
fn follow_deletions(
    client: Client,
    ctx: Arc<Context>,
) -> impl std::future::Future<Output = ()> + Send {
    let mut listed: BTreeSet<String> = BTreeSet::new();
    watcher(
        Api::<PartialObjectMeta<CredstashSync>>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .for_each(move |event| {
        let mut gone = Vec::new();
        match event {
            Ok(WatchEvent::Delete(meta)) => {
                if let Some(uid) = meta.uid() {
                    ctx.deleted.lock().insert(uid);
                }
                gone.push(meta.name_any());
            }
            Ok(WatchEvent::Init) => listed.clear(),
            Ok(WatchEvent::InitApply(meta)) => {
                listed.insert(meta.name_any());
            }
            Ok(WatchEvent::InitDone) => {
                let known: Vec<String> = ctx.states.lock().keys().cloned().collect();
                gone.extend(known.into_iter().filter(|n| !listed.contains(n)));
            }
            Ok(WatchEvent::Apply(_)) => {}
            Err(error) => report_watch_error(&ctx.health, "credstashsyncs", &error),
        }
        for name in gone {
            ctx.forget(&name);
        }
        futures::future::ready(())
    })
}

/// How long in-flight reconciles get to finish after the shutdown signal
/// before the controller stops regardless: well inside the chart's
/// `terminationGracePeriodSeconds` (30 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the controller until `shutdown` resolves and its in-flight
/// reconciles end (at most [`SHUTDOWN_GRACE`] later; at once when the
/// caches never synced, since kube-runtime holds its runner until the
/// CredstashSync store is ready, and a store whose first LIST was cut short
/// by the shutdown never is).
pub async fn run(
    client: Client,
    metrics: Metrics,
    health: Health,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (managed_secrets, secrets_writer) = reflector::store();
    let (namespaces, namespaces_writer) = reflector::store();
    let (wake, woken) = unbounded();
    let (caches_synced_tx, caches_synced) = tokio::sync::watch::channel(false);
    let shutdown = shutdown.shared();
    let grace_over = {
        let (shutdown, synced) = (shutdown.clone(), caches_synced.clone());
        async move {
            shutdown.await;
            if *synced.borrow() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            }
        }
    };
    let controller = Controller::new(
        Api::<CredstashSync>::all(client.clone()),
        watcher::Config::default(),
    );
    let reporter = Reporter {
        controller: CONTROLLER_NAME.into(),
        instance: settings.instance.clone(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        metrics,
        health: health.clone(),
        managed_secrets: managed_secrets.clone(),
        namespaces: namespaces.clone(),
        syncs: controller.store(),
        settings,
        states: Mutex::new(HashMap::new()),
        own_writes: Mutex::new(OwnWrites::default()),
        wake,
        caches_synced,
        deleted: Mutex::new(HashSet::new()),
        readers: Mutex::new(BTreeMap::new()),
        rollouts: rollout::Rollouts::default(),
    });

    let managed_selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
    let secret_events = watcher(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels(&managed_selector),
    )
    .default_backoff()
    .map_ok(reduce_event)
    .reflect(secrets_writer);
    let secrets_watch = follow_managed_secrets(secret_events, context.clone());

    let namespace_health = health.clone();
    let namespace_changes = watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(namespaces_writer)
    .touched_objects()
    .filter_map(move |result| {
        if let Err(error) = &result {
            report_watch_error(&namespace_health, "namespaces", error);
        }
        futures::future::ready(result.ok().map(|_| ()))
    });

    let deletions = follow_deletions(client.clone(), context.clone());
    let unmanaged_deletions = follow_unmanaged_secret_deletions(client.clone(), context.clone());
    let rollouts = rollout::run(context.clone());
    let controller = controller
        .reconcile_all_on(namespace_changes)
        // Stream batches and drift wake every CredstashSync (stable API; the
        // others find nothing to do): `reconcile_on` is still unstable.
        .reconcile_all_on(woken)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, context.clone())
        .for_each(|result| {
            if let Err(err) = result {
                tracing::debug!(error = %err, "reconcile request failed");
            }
            futures::future::ready(())
        });

    // One waiter per store: kube-runtime's readiness future wakes only the
    // last task that polled it, so reconciles wait on `caches_synced`.
    health.set_ready(true);
    let ready = async {
        let _ = context.syncs.wait_until_ready().await;
        health.set_cache_synced("credstashsyncs", true);
        let _ = namespaces.wait_until_ready().await;
        health.set_cache_synced("namespaces", true);
        let _ = managed_secrets.wait_until_ready().await;
        health.set_cache_synced("secrets", true);
        let _ = caches_synced_tx.send(true);
        tracing::info!("caches synced; kubestash is ready");
        std::future::pending::<()>().await
    };
    let stopped = tokio::select! {
        _ = controller => "the controller loop ended",
        _ = secrets_watch => "the managed Secret watch ended",
        _ = deletions => "the CredstashSync deletion watch ended",
        _ = unmanaged_deletions => "the unmanaged Secret watch ended",
        _ = rollouts => "the workload watch ended",
        _ = grace_over => "shut down without waiting any longer for in-flight reconciles",
        _ = ready => "unreachable",
    };
    tracing::info!(reason = stopped, "controller stopped");
    health.controller_stopped(stopped);
}

/// Boxed so that the future's `Send` bound is proven here, where the
/// compiler can see every lifetime (not inside kube-runtime's generics).
fn reconcile(
    css: Arc<CredstashSync>,
    ctx: Arc<Context>,
) -> BoxFuture<'static, Result<Action, Error>> {
    Box::pin(async move {
        ctx.caches_ready().await;
        ctx.remove_legacy_finalizer(&css).await?;
        if css.meta().deletion_timestamp.is_some() || ctx.was_deleted(&css) {
            return Ok(Action::await_change());
        }
        let name = css.name_any();
        let result = reconcile::apply(css.clone(), ctx.clone()).await;
        if ctx.was_deleted(&css) {
            // Deleted while this reconcile ran: what it recorded goes too.
            ctx.forget_state(&name);
            return Ok(Action::await_change());
        }
        result
    })
}

/// Maps a failed reconcile to its requeue: what failed was recorded in the
/// CredstashSync's state where it happened.
fn error_policy(css: Arc<CredstashSync>, error: &Error, _ctx: Arc<Context>) -> Action {
    let name = css.name_any();
    let retry_in = triggers::after_error(error);
    if error.is_stale_object() {
        tracing::debug!(credstashsync = %name, error = %error, "object changed meanwhile; reconciling again");
    } else {
        tracing::warn!(credstashsync = %name, error = %error, retry_in_s = retry_in.as_secs(), "reconcile failed");
    }
    Action::requeue(retry_in)
}

#[cfg(test)]
mod tests;
