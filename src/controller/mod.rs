//! The operator: reconciles CredstashSyncs into Secrets.
//!
//! One kube-runtime `Controller` over CredstashSyncs. Each reconcile decides
//! ([`triggers`]) between a full sync, applying stream changes, or nothing
//! ([`reconcile`]); syncs run through [`sync`]; outcomes become status,
//! events and metrics ([`report`]). A DynamoDB stream ([`streaming`]) wakes
//! the reconciler when records arrive.

pub mod reconcile;
pub mod report;
pub mod rollout;
pub mod state;
pub mod streaming;
pub mod sync;
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
use report::{Notice, Severity};
use state::SyncState;

/// Finalizer that earlier versions put on every CredstashSync (to forget
/// its metrics). No longer used: metrics are forgotten when the watch sees
/// the deletion, and the operator removes the finalizer where it finds it,
/// so no CredstashSync is ever stuck Terminating (e.g. on `helm uninstall`).
pub const LEGACY_FINALIZER: &str = "kubestash.io/cleanup";
/// Name of the controller in events and the status field manager.
pub const CONTROLLER_NAME: &str = "kubestash";

/// Errors that make a reconcile retry with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status of CredstashSync {name}: {source}")]
    Status { name: String, source: kube::Error },
    #[error("sync of CredstashSync {name} failed: {reason}")]
    SyncFailed { name: String, reason: String },
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
    pub write_gate: crate::write_gate::WriteGate,
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
    states: Mutex<HashMap<String, SyncState>>,
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
    fn with_state<T>(&self, name: &str, f: impl FnOnce(&mut SyncState) -> T) -> T {
        f(self.states.lock().entry(name.to_owned()).or_default())
    }

    /// Waits until the CredstashSync, Namespace and managed-Secret caches
    /// have completed their first list: nothing is planned from less.
    async fn caches_ready(&self) {
        let mut synced = self.caches_synced.clone();
        let _ = synced.wait_for(|ready| *ready).await;
    }

    /// The table reader of `name`, kept across reconciles for the values it
    /// remembers, shared with the other CredstashSyncs of the same location,
    /// and replaced when the table's location changes.
    async fn reader(&self, name: &str, spec: &ValidSpec) -> Arc<TableReader> {
        let location = TableLocation {
            table: spec.table.clone(),
            region: spec.region.clone(),
            kms_region: spec.kms_region.clone(),
            encryption_context: spec.encryption_context.clone(),
        };
        let existing = self.with_state(name, |s| {
            s.reader
                .as_ref()
                .filter(|(known, _)| *known == location)
                .map(|(_, r)| r.clone())
        });
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
        self.with_state(name, |s| {
            s.forget_table();
            s.reader = Some((location, reader.clone()));
        });
        reader
    }

    /// The namespaces that exist and are not terminating, with their labels.
    fn active_namespaces(&self) -> BTreeMap<String, sync::Labels> {
        self.namespaces
            .state()
            .iter()
            .filter(|ns| sync::is_active(ns))
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect()
    }

    /// Whether `namespace` exists and is not terminating (the watch cache
    /// now).
    fn namespace_active(&self, namespace: &str) -> bool {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .is_some_and(|ns| sync::is_active(&ns))
    }

    /// Field managers of the CredstashSyncs that exist and are not deleted
    /// (as far as either watch has seen).
    fn living_managers(&self) -> BTreeSet<String> {
        self.syncs
            .state()
            .iter()
            .filter(|css| css.meta().deletion_timestamp.is_none() && !self.was_deleted(css))
            .map(|css| secrets::field_manager(&css.name_any()))
            .collect()
    }

    /// What a sync of `css` sees of the cluster: the watch caches, with our
    /// own recent writes laid over the managed Secrets.
    fn sync_env<'a>(&'a self, css: &'a CredstashSync) -> sync::SyncEnv<'a> {
        sync::SyncEnv {
            client: &self.client,
            metrics: &self.metrics,
            namespaces: self.active_namespaces(),
            managed_secrets: self.managed_secrets_now(),
            living_managers: self.living_managers(),
            own_writes: &self.own_writes,
            cached_version: Box::new(move |secret| self.cached_version(secret)),
            write_gate: self.settings.write_gate.clone(),
            still_exists: Box::new(move || self.still_exists(css)),
            namespace_active: Box::new(move |namespace| self.namespace_active(namespace)),
        }
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

    /// The resourceVersion of `secret` in the managed-Secret watch cache.
    fn cached_version(&self, secret: &SecretRef) -> Option<String> {
        let key = ObjectRef::new(&secret.name).within(&secret.namespace);
        self.managed_secrets
            .get(&key)
            .and_then(|cached| cached.metadata.resource_version.clone())
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
        let mut woken = false;
        for (name, state) in self.states.lock().iter_mut() {
            if state.maps_into(&reference) || has_manager(secret, &secrets::field_manager(name)) {
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
        for state in self.states.lock().values_mut() {
            state.recheck_all();
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
        for state in self.states.lock().values_mut() {
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

    /// Writes `status` with server-side apply, unless it is what the object has.
    async fn write_status(
        &self,
        css: &CredstashSync,
        status: &CredstashSyncStatus,
    ) -> Result<(), Error> {
        let name = css.name_any();
        // Not for a CredstashSync gone meanwhile: its status would land on
        // one re-created under the same name.
        if self.current_status(css).as_ref() == Some(status) || !self.still_exists(css) {
            return Ok(());
        }
        let api: Api<CredstashSync> = Api::all(self.client.clone());
        let patch = serde_json::json!({
            "apiVersion": CredstashSync::api_version(&()),
            "kind": CredstashSync::kind(&()),
            "status": status,
        });
        let params = PatchParams::apply(CONTROLLER_NAME).force();
        let stored = api
            .patch_status(&name, &params, &Patch::Apply(&patch))
            .await
            .map_err(|source| Error::Status {
                name: name.clone(),
                source,
            })?;
        self.with_state(&name, |s| {
            s.status_written(stored.resource_version(), status.clone())
        });
        Ok(())
    }

    /// The status of `css` as this process last knew it: its own latest
    /// write, while the CredstashSync cache has not delivered it yet.
    fn current_status(&self, css: &CredstashSync) -> Option<CredstashSyncStatus> {
        let version = css.meta().resource_version.as_deref();
        self.with_state(&css.name_any(), |s| {
            s.current_status(version, css.status.as_ref())
        })
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
        .map_err(|err| Error::SyncFailed {
            name: name.clone(),
            reason: format!("building the finalizer patch: {err}"),
        })?;
        let api: Api<CredstashSync> = Api::all(self.client.clone());
        api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map(|_| ())
            .map_err(|source| Error::Finalizer { name, source })
    }
}

/// Logs a watch error with the resource it concerns and reports it in
/// `/readyz` and `kubestash_watch_errors_total`; the watcher retries with
/// backoff by itself.
fn report_watch_error(health: &Health, resource: &str, error: &watcher::Error) {
    tracing::warn!(resource, error = %error, "watch failed; retrying with backoff");
    health.record_watch_error(resource, &error.to_string());
}

/// Feeds the managed-Secret watch into the cache and the drift detection.
fn follow_managed_secrets(
    events: impl Stream<Item = watcher::Result<WatchEvent<LiveSecret>>> + Send,
    ctx: Arc<Context>,
) -> impl std::future::Future<Output = ()> + Send {
    let mut listed_once = false;
    events.for_each(move |event| {
        match &event {
            Ok(WatchEvent::Apply(secret)) => ctx.secret_changed(secret, false),
            Ok(WatchEvent::Delete(secret)) => ctx.secret_changed(secret, true),
            Ok(WatchEvent::InitDone) => {
                if listed_once {
                    ctx.secrets_relisted();
                }
                listed_once = true;
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

fn error_policy(css: Arc<CredstashSync>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = css.name_any();
    if error.is_stale_object() {
        tracing::debug!(credstashsync = %name, error = %error, "object changed meanwhile; reconciling again");
        return Action::requeue(STALE_OBJECT_RETRY);
    }
    let backoff = ctx.with_state(&name, |s| {
        s.full_sync_retry
            .failed(tokio::time::Instant::now(), retry_backoff)
    });
    tracing::warn!(credstashsync = %name, error = %error, retry_in_s = backoff.as_secs(), "reconcile failed");
    Action::requeue(backoff)
}

/// How soon a reconcile that raced a change of its object runs again.
const STALE_OBJECT_RETRY: Duration = Duration::from_secs(1);

/// Exponential backoff for failed syncs: 5 s, 10 s, 20 s ... at most 5 minutes.
pub fn retry_backoff(consecutive_failures: u32) -> Duration {
    let exponent = consecutive_failures.saturating_sub(1).min(6);
    Duration::from_secs(5u64 << exponent).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| retry_backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    fn finalizer_error(reason: &str, code: u16) -> Error {
        let status = kube::core::Status::failure("the finalizer patch failed", reason);
        Error::Finalizer {
            name: "x".into(),
            source: kube::Error::Api(status.with_code(code).boxed()),
        }
    }

    #[test]
    fn a_finalizer_patch_racing_a_change_is_not_a_failure() {
        assert!(finalizer_error("Invalid", 422).is_stale_object());
        assert!(finalizer_error("Conflict", 409).is_stale_object());
        assert!(!finalizer_error("Forbidden", 403).is_stale_object());
        assert!(!finalizer_error("InternalError", 500).is_stale_object());
        let sync = Error::SyncFailed {
            name: "x".into(),
            reason: "timeout".into(),
        };
        assert!(!sync.is_stale_object());
    }
}
