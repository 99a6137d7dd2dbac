//! The operator: reconciles CredstashSyncs into Secrets.
//!
//! One kube-runtime `Controller` over CredstashSyncs. Each reconcile decides
//! ([`triggers`]) between a full sync, applying stream changes, or nothing
//! ([`reconcile`]); syncs run through [`sync`]; outcomes become status,
//! events and metrics ([`report`]). A DynamoDB stream ([`streaming`]) wakes
//! the reconciler when records arrive.

pub mod reconcile;
pub mod report;
pub mod streaming;
pub mod sync;
pub mod triggers;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::channel::mpsc::{unbounded, UnboundedSender};
use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};

use crate::crd::{CredstashSync, CredstashSyncStatus, ValidSpec};
use crate::credstash::{self, ReaderOptions, TableLocation, TableReader};
use crate::metrics::Metrics;
use crate::secrets::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::server::Health;
use crate::stream::Changes;
use report::{Notice, Severity};
use streaming::{StreamHealth, StreamLink};
use sync::TableSnapshot;

/// Finalizer that lets the operator forget a deleted CredstashSync's metrics.
/// The Secrets themselves are left in place.
pub const FINALIZER: &str = "kubestash.io/cleanup";
/// Name of the controller in events and the status field manager.
pub const CONTROLLER_NAME: &str = "kubestash";

/// Errors that make a reconcile retry with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status of CredstashSync {name}: {source}")]
    Status { name: String, source: kube::Error },
    #[error("sync of CredstashSync {name} failed: {reason}")]
    SyncFailed { name: String, reason: String },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("CredstashSync has no name")]
    Unnamed,
}

impl Error {
    /// Whether the finalizer patch lost a race with a change of the object
    /// the cache had not yet seen (409 Conflict, or 422 when the JSON Patch
    /// `test` of the finalizer list fails). Nothing failed: the watch event
    /// on its way reconciles again, so no backoff and no warning.
    pub fn is_stale_object(&self) -> bool {
        use kube::runtime::finalizer::Error as FinalizerError;
        let Error::Finalizer(err) = self else {
            return false;
        };
        match err.as_ref() {
            FinalizerError::AddFinalizer(kube::Error::Api(status))
            | FinalizerError::RemoveFinalizer(kube::Error::Api(status)) => {
                status.is_conflict() || status.is_invalid()
            }
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

/// What this process remembers of one CredstashSync between reconciles.
#[derive(Default)]
struct Worker {
    reader: Option<(TableLocation, Arc<TableReader>)>,
    last_full_sync: Option<DateTime<Utc>>,
    last_manual_resync: Option<DateTime<Utc>>,
    consecutive_failures: u32,
    /// When a failed sync may be retried (reconciles triggered sooner, e.g.
    /// by our own status write, must not bypass the backoff).
    retry_at: Option<tokio::time::Instant>,
    waiting_namespaces: BTreeSet<String>,
    deferred_notice_for: Option<String>,
    /// Every name's latest entry as last read (for stream changes).
    snapshot: Option<TableSnapshot>,
    stream: Option<StreamLink>,
    stream_health: Option<StreamHealth>,
    stream_checked_at: Option<tokio::time::Instant>,
    pending_changes: Option<Changes>,
    pending_gap: Option<String>,
    last_applied: Option<DateTime<Utc>>,
}

/// Shared state of the reconcilers.
pub struct Context {
    client: Client,
    metrics: Metrics,
    health: Health,
    recorder: Recorder,
    managed_secrets: Store<Secret>,
    namespaces: Store<Namespace>,
    settings: Settings,
    workers: Mutex<HashMap<String, Worker>>,
    /// Asks the controller to reconcile a CredstashSync (stream batches).
    wake: UnboundedSender<ObjectRef<CredstashSync>>,
}

impl Context {
    fn workers(&self) -> MutexGuard<'_, HashMap<String, Worker>> {
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_worker<T>(&self, name: &str, f: impl FnOnce(&mut Worker) -> T) -> T {
        f(self.workers().entry(name.to_owned()).or_default())
    }

    /// The table reader of `name`, kept across reconciles for its KMS cache and
    /// rebuilt when the table's location changes.
    async fn reader(&self, name: &str, spec: &ValidSpec) -> Arc<TableReader> {
        let location = TableLocation {
            table: spec.table.clone(),
            region: spec.region.clone(),
            kms_region: spec.kms_region.clone(),
            encryption_context: spec.encryption_context.clone(),
        };
        let existing = self.with_worker(name, |w| {
            w.reader
                .as_ref()
                .filter(|(known, _)| *known == location)
                .map(|(_, r)| r.clone())
        });
        if let Some(reader) = existing {
            return reader;
        }
        let reader = Arc::new(credstash::connect(&location, self.settings.reader.clone()).await);
        self.with_worker(name, |w| {
            w.reader = Some((location, reader.clone()));
            w.snapshot = None;
        });
        reader
    }

    /// Whether a namespace some keys of `name` wait for now exists.
    fn namespace_appeared(&self, name: &str) -> bool {
        let waiting = self.with_worker(name, |w| w.waiting_namespaces.clone());
        waiting
            .iter()
            .any(|ns| self.namespaces.get(&ObjectRef::new(ns)).is_some())
    }

    /// Names of the namespaces that exist.
    fn existing_namespaces(&self) -> BTreeSet<String> {
        self.namespaces
            .state()
            .iter()
            .map(|ns| ns.name_any())
            .collect()
    }

    /// What a sync sees of the cluster: the watch caches.
    fn sync_env(&self) -> sync::SyncEnv<'_> {
        sync::SyncEnv {
            client: &self.client,
            metrics: &self.metrics,
            namespaces: self.existing_namespaces(),
            managed_secrets: self.managed_secrets.state(),
            write_gate: self.settings.write_gate.clone(),
        }
    }

    async fn publish(&self, css: &CredstashSync, notice: &Notice) {
        let event = KubeEvent {
            type_: match notice.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: notice.reason.to_owned(),
            note: Some(notice.note.clone()),
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
        if css.status.as_ref() == Some(status) {
            return Ok(());
        }
        let name = css.name_any();
        let api: Api<CredstashSync> = Api::all(self.client.clone());
        let patch = serde_json::json!({
            "apiVersion": CredstashSync::api_version(&()),
            "kind": CredstashSync::kind(&()),
            "status": status,
        });
        let params = PatchParams::apply(CONTROLLER_NAME).force();
        api.patch_status(&name, &params, &Patch::Apply(&patch))
            .await
            .map(|_| ())
            .map_err(|source| Error::Status { name, source })
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    metrics: Metrics,
    health: Health,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (managed_secrets, secrets_writer) = reflector::store();
    let managed_selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
    let secrets_watch = reflector::reflector(
        secrets_writer,
        watcher(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels(&managed_selector),
        ),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| futures::future::ready(()));

    let (namespaces, namespaces_writer) = reflector::store();
    let namespace_changes = reflector::reflector(
        namespaces_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(|result| futures::future::ready(result.ok().map(|_| ())));

    let (wake, woken) = unbounded();
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
        settings,
        workers: Mutex::new(HashMap::new()),
        wake,
    });

    let controller = Controller::new(
        Api::<CredstashSync>::all(client),
        watcher::Config::default(),
    )
    .reconcile_all_on(namespace_changes)
    // Stream batches wake every CredstashSync (stable API; the others find
    // nothing to do): `reconcile_on` is still an unstable kube feature.
    .reconcile_all_on(woken.map(|_: ObjectRef<CredstashSync>| ()))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, context)
    .for_each(|result| {
        if let Err(err) = result {
            tracing::debug!(error = %err, "reconcile request failed");
        }
        futures::future::ready(())
    });

    let ready = async {
        let _ = managed_secrets.wait_until_ready().await;
        let _ = namespaces.wait_until_ready().await;
        health.set_ready(true);
        tracing::info!("caches synced; kubestash is ready");
    };
    let heartbeat = async {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            health.controller_heartbeat();
        }
    };
    tokio::select! {
        _ = controller => tracing::info!("controller stopped"),
        _ = secrets_watch => tracing::warn!("managed Secret watch ended"),
        _ = futures::future::join(ready, heartbeat) => {}
    }
}

/// Boxed so that the future's `Send` bound is proven here, where the
/// compiler can see every lifetime (not inside kube-runtime's generics).
fn reconcile(
    css: Arc<CredstashSync>,
    ctx: Arc<Context>,
) -> BoxFuture<'static, Result<Action, Error>> {
    Box::pin(async move {
        ctx.health.controller_heartbeat();
        let api: Api<CredstashSync> = Api::all(ctx.client.clone());
        finalizer(&api, FINALIZER, css, |event| async move {
            match event {
                FinalizerEvent::Apply(css) => reconcile::apply(css, ctx).await,
                FinalizerEvent::Cleanup(css) => Ok(cleanup(&css, &ctx)),
            }
        })
        .await
        .map_err(|err| Error::Finalizer(Box::new(err)))
    })
}

fn error_policy(css: Arc<CredstashSync>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = css.name_any();
    if error.is_stale_object() {
        tracing::debug!(credstashsync = %name, error = %error, "object changed meanwhile; reconciling again");
        return Action::requeue(STALE_OBJECT_RETRY);
    }
    let backoff = ctx.with_worker(&name, |w| {
        w.consecutive_failures += 1;
        let backoff = retry_backoff(w.consecutive_failures);
        w.retry_at = Some(tokio::time::Instant::now() + backoff);
        backoff
    });
    tracing::warn!(credstashsync = %name, error = %error, retry_in_s = backoff.as_secs(), "reconcile failed");
    Action::requeue(backoff)
}

/// Hands memory freed by a full sync back to the system. A full sync
/// allocates a second copy of the table while the first is alive; glibc keeps
/// the freed pages resident and fragmented, so without this the peak RSS
/// crept up sync after sync (see BENCHMARKS.md).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages of glibc's own heap to
    // the kernel; it takes glibc's allocator locks and touches no live data.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How soon a reconcile that raced a change of its object runs again.
const STALE_OBJECT_RETRY: Duration = Duration::from_secs(1);

/// Exponential backoff for failed syncs: 5 s, 10 s, 20 s ... at most 5 minutes.
pub fn retry_backoff(consecutive_failures: u32) -> Duration {
    let exponent = consecutive_failures.saturating_sub(1).min(6);
    Duration::from_secs(5u64 << exponent).min(Duration::from_secs(300))
}

fn cleanup(css: &CredstashSync, ctx: &Context) -> Action {
    let name = css.name_any();
    ctx.metrics.forget(&name);
    ctx.workers().remove(&name);
    tracing::info!(credstashsync = %name, "CredstashSync deleted: its metrics are removed, its Secrets stay");
    Action::await_change()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| retry_backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    fn finalizer_error(
        wrap: fn(kube::Error) -> kube::runtime::finalizer::Error<Error>,
        reason: &str,
        code: u16,
    ) -> Error {
        let status = kube::core::Status::failure("the finalizer patch failed", reason);
        Error::Finalizer(Box::new(wrap(kube::Error::Api(
            status.with_code(code).boxed(),
        ))))
    }

    #[test]
    fn a_finalizer_patch_racing_a_change_is_not_a_failure() {
        use kube::runtime::finalizer::Error as FinalizerError;
        let add = FinalizerError::AddFinalizer;
        let remove = FinalizerError::RemoveFinalizer;
        assert!(finalizer_error(add, "Invalid", 422).is_stale_object());
        assert!(finalizer_error(add, "Conflict", 409).is_stale_object());
        assert!(finalizer_error(remove, "Conflict", 409).is_stale_object());
        assert!(!finalizer_error(add, "Forbidden", 403).is_stale_object());
        assert!(!finalizer_error(add, "InternalError", 500).is_stale_object());
        let sync = Error::SyncFailed {
            name: "x".into(),
            reason: "timeout".into(),
        };
        assert!(!sync.is_stale_object());
    }
}
