//! The operator: reconciles CredstashSyncs into Secrets.
//!
//! One kube-runtime `Controller` over CredstashSyncs. Each reconcile decides
//! ([`triggers`]) whether to run a full sync ([`sync`]) and reports the
//! outcome ([`report`]) as status, events and metrics.

pub mod report;
pub mod sync;
pub mod triggers;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};

use crate::crd::{CredstashSync, CredstashSyncStatus, ValidSpec, RESYNC_ANNOTATION};
use crate::credstash::{self, ReaderOptions, TableLocation, TableReader};
use crate::metrics::{Metrics, SyncResult, SyncTrigger};
use crate::secrets::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::server::Health;
use report::{Notice, Severity, SyncOutcome};
use triggers::{Action as Next, TriggerInputs};

/// Finalizer that lets the operator forget a deleted CredstashSync's metrics.
/// The Secrets themselves are left in place.
pub const FINALIZER: &str = "kubestash.io/cleanup";
/// Name of the controller in events and status field managers.
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

/// Process-wide settings of the operator.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The operator's own namespace (always excluded).
    pub operator_namespace: String,
    /// Pod name, for events' reportingInstance.
    pub instance: Option<String>,
    /// Options for the table readers.
    pub reader: ReaderOptions,
}

/// What this process remembers of one CredstashSync between reconciles.
#[derive(Default)]
struct Worker {
    reader: Option<(TableLocation, Arc<TableReader>)>,
    last_full_sync: Option<DateTime<Utc>>,
    last_manual_resync: Option<DateTime<Utc>>,
    consecutive_failures: u32,
    waiting_namespaces: BTreeSet<String>,
    deferred_notice_for: Option<String>,
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
                .filter(|(loc, _)| loc_eq(loc, &location))
                .map(|(_, r)| r.clone())
        });
        if let Some(reader) = existing {
            return reader;
        }
        let reader = Arc::new(credstash::connect(&location, self.settings.reader.clone()).await);
        self.with_worker(name, |w| w.reader = Some((location, reader.clone())));
        reader
    }

    /// Whether a namespace some keys of `name` wait for now exists.
    fn namespace_appeared(&self, name: &str) -> bool {
        let waiting = self.with_worker(name, |w| w.waiting_namespaces.clone());
        waiting.iter().any(|ns| {
            self.namespaces
                .get(&reflector::ObjectRef::new(ns))
                .is_some()
        })
    }

    /// Names of the namespaces that exist.
    pub fn existing_namespaces(&self) -> BTreeSet<String> {
        self.namespaces
            .state()
            .iter()
            .map(|ns| ns.name_any())
            .collect()
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

fn loc_eq(a: &TableLocation, b: &TableLocation) -> bool {
    a.table == b.table
        && a.region == b.region
        && a.kms_region == b.kms_region
        && a.encryption_context == b.encryption_context
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
    });

    let controller = Controller::new(
        Api::<CredstashSync>::all(client),
        watcher::Config::default(),
    )
    .reconcile_all_on(namespace_changes)
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
                FinalizerEvent::Apply(css) => reconcile_apply(css, ctx).await,
                FinalizerEvent::Cleanup(css) => Ok(cleanup(&css, &ctx)),
            }
        })
        .await
        .map_err(|err| Error::Finalizer(Box::new(err)))
    })
}

fn error_policy(css: Arc<CredstashSync>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = css.name_any();
    let failures = ctx.with_worker(&name, |w| {
        w.consecutive_failures += 1;
        w.consecutive_failures
    });
    let backoff = retry_backoff(failures);
    tracing::warn!(credstashsync = %name, error = %error, retry_in_s = backoff.as_secs(), "reconcile failed");
    Action::requeue(backoff)
}

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

fn reconcile_apply(
    css: Arc<CredstashSync>,
    ctx: Arc<Context>,
) -> BoxFuture<'static, Result<Action, Error>> {
    Box::pin(async move { apply_css(&css, &ctx).await })
}

async fn apply_css(css: &CredstashSync, ctx: &Context) -> Result<Action, Error> {
    let name = css.meta().name.clone().ok_or(Error::Unnamed)?;
    ctx.metrics.set_settings(&name, &css.spec);
    let previous = css.status.clone().unwrap_or_default();
    let generation = css.meta().generation;
    let now = Utc::now();
    let spec = match css.spec.validate() {
        Ok(spec) => spec.with_operator_namespace(&ctx.settings.operator_namespace),
        Err(problem) => {
            let status =
                report::status_invalid_spec(&previous, &problem.to_string(), generation, now);
            if css.status.as_ref() != Some(&status) {
                ctx.metrics.record_sync(
                    &name,
                    SyncTrigger::SpecChange,
                    SyncResult::InvalidSpec,
                    Duration::ZERO,
                );
                ctx.publish(
                    css,
                    &Notice {
                        severity: Severity::Warning,
                        reason: "InvalidSpec",
                        action: "Validate",
                        note: problem.to_string(),
                    },
                )
                .await;
            }
            ctx.write_status(css, &status).await?;
            return Ok(Action::await_change());
        }
    };

    let resync_requested = css.annotations().get(RESYNC_ANNOTATION).cloned();
    let (last_full_sync, last_manual_resync, retry_due) = ctx.with_worker(&name, |w| {
        (
            w.last_full_sync,
            w.last_manual_resync,
            w.consecutive_failures > 0,
        )
    });
    let inputs = TriggerInputs {
        now,
        generation,
        observed_generation: previous.observed_generation,
        resync_requested: resync_requested.as_deref(),
        last_resync_handled: previous.last_resync_request.as_deref(),
        last_full_sync,
        last_manual_resync,
        schedule: &spec.schedule,
        min_resync_interval: spec.min_resync_interval,
        retry_due,
        stream_gap: false,
        namespace_appeared: ctx.namespace_appeared(&name),
        stream_changes_pending: false,
    };
    let decision = triggers::decide(&inputs);
    match decision.action {
        Next::FullSync(trigger) => {
            run_full_sync(
                css,
                ctx,
                &name,
                &spec,
                trigger,
                &previous,
                resync_requested.as_deref(),
            )
            .await?;
        }
        Next::ApplyStreamChanges | Next::Idle => {}
    }
    if let (Some(until), Some(requested)) = (decision.deferred_resync_until, resync_requested) {
        let first_time = ctx.with_worker(&name, |w| {
            w.deferred_notice_for.replace(requested.clone()) != Some(requested)
        });
        if first_time {
            ctx.publish(css, &report::deferred_notice(until)).await;
        }
    }
    Ok(Action::requeue(decision.requeue_after))
}

async fn run_full_sync(
    css: &CredstashSync,
    ctx: &Context,
    name: &str,
    spec: &ValidSpec,
    trigger: SyncTrigger,
    previous: &CredstashSyncStatus,
    resync_requested: Option<&str>,
) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let reader = ctx.reader(name, spec).await;
    tracing::info!(credstashsync = %name, trigger = trigger.as_str(), table = %spec.table, "full sync");
    let generation = css.meta().generation;
    let env = sync::SyncEnv {
        client: &ctx.client,
        metrics: &ctx.metrics,
        namespaces: ctx.existing_namespaces(),
        managed_secrets: ctx.managed_secrets.state(),
    };
    let outcome = match tokio::time::timeout(
        spec.sync_timeout,
        sync::full_sync(&env, name, spec, &reader),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_elapsed) => {
            ctx.health.record_sync_timeout();
            ctx.metrics
                .record_sync(name, trigger, SyncResult::Timeout, started.elapsed());
            let status =
                report::status_timed_out(previous, spec.sync_timeout, generation, Utc::now());
            ctx.write_status(css, &status).await?;
            let note = format!(
                "sync did not finish within {}s and was cancelled",
                spec.sync_timeout.as_secs()
            );
            ctx.publish(
                css,
                &Notice {
                    severity: Severity::Warning,
                    reason: "SyncTimeout",
                    action: "Sync",
                    note: note.clone(),
                },
            )
            .await;
            return Err(Error::SyncFailed {
                name: name.to_owned(),
                reason: note,
            });
        }
    };
    ctx.health.record_sync_completed();
    let now = Utc::now();
    let outcome = SyncOutcome {
        trigger: Some(trigger),
        finished_at: Some(now),
        duration: started.elapsed(),
        ..outcome
    };
    let result = outcome.result();
    record_metrics(ctx, name, &outcome, now);
    ctx.with_worker(name, |w| {
        w.waiting_namespaces = outcome.waiting_namespaces.clone();
        w.last_full_sync = Some(now);
        if trigger == SyncTrigger::Manual {
            w.last_manual_resync = Some(now);
        }
    });
    let status = report::status_after_sync(previous, &outcome, generation, resync_requested, now);
    ctx.write_status(css, &status).await?;
    for notice in report::sync_notices(&outcome) {
        ctx.publish(css, &notice).await;
    }
    tracing::info!(credstashsync = %name, result = result.as_str(), summary = %outcome.summary(), "full sync finished");
    match &outcome.table_error {
        Some(error) => Err(Error::SyncFailed {
            name: name.to_owned(),
            reason: error.clone(),
        }),
        None => {
            ctx.with_worker(name, |w| w.consecutive_failures = 0);
            Ok(())
        }
    }
}

fn record_metrics(ctx: &Context, name: &str, outcome: &SyncOutcome, now: DateTime<Utc>) {
    let metrics = &ctx.metrics;
    metrics.record_sync(
        name,
        outcome.trigger.unwrap_or(SyncTrigger::Startup),
        outcome.result(),
        outcome.duration,
    );
    metrics.set_table_fetch_failed(name, outcome.table_error.is_some());
    if outcome.table_error.is_none() {
        metrics.set_keys(name, &outcome.keys);
    }
    if outcome.result() == SyncResult::Success {
        metrics.set_last_successful_sync(name, now);
    }
}
