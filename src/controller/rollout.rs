//! Rollout on change, the I/O side: the watch of the opted-in workloads
//! (started the first time a CredstashSync enables `spec.rollout`, so that
//! an operator without the RBAC for apps/v1 never asks), the debounce loop,
//! and the pod-template patch. What to restart and when is decided in
//! [`crate::rollout`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::watcher::{self, watcher, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::report::{self, Notice, Severity};
use super::Context;
use crate::crd::{event_reason, RolloutSettings};
use crate::mapping::SecretRef;
use crate::rollout::debounce::{Change, Due};
use crate::rollout::{
    secret_key_digests, workload_digest, RestartDebouncer, Workload, WorkloadIndex, WorkloadKind,
    WorkloadRef, DIGEST_ANNOTATION, ROLLED_AT_ANNOTATION,
};

/// How soon a failed restart is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// Field manager of the pod-template patch.
const FIELD_MANAGER: &str = "kubestash";

/// A Secret the operator changed, on its way to the rollout loop.
struct SecretChange {
    secret: SecretRef,
    source: String,
    window: Duration,
}

/// Shared between the reconcilers (which report changed Secrets) and the
/// rollout loop.
pub struct Rollouts {
    enabled: tokio::sync::watch::Sender<bool>,
    changes: Mutex<Vec<SecretChange>>,
    wake: tokio::sync::Notify,
}

impl Default for Rollouts {
    fn default() -> Self {
        Self {
            enabled: tokio::sync::watch::Sender::new(false),
            changes: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
        }
    }
}

impl Rollouts {
    /// A CredstashSync enables rollout: start watching workloads (once).
    pub fn enable(&self) {
        self.enabled
            .send_if_modified(|on| !std::mem::replace(on, true));
    }

    /// CredstashSync `source` changed the data of `secrets` (its own writes,
    /// never repairs of drift: a repair puts back what the pods had).
    pub fn secrets_changed<'s>(
        &self,
        source: &str,
        settings: RolloutSettings,
        secrets: impl IntoIterator<Item = &'s SecretRef>,
    ) {
        if !settings.enabled {
            return;
        }
        let mut changes = self.changes.lock();
        let before = changes.len();
        changes.extend(secrets.into_iter().map(|secret| SecretChange {
            secret: secret.clone(),
            source: source.to_owned(),
            window: settings.debounce,
        }));
        if changes.len() > before {
            self.wake.notify_one();
        }
    }
}

/// A workload watch event, reduced to what the index needs.
enum IndexEvent {
    Changed(WorkloadRef, Option<Workload>),
    Deleted(WorkloadRef),
    ListStart(WorkloadKind),
    Listed(WorkloadKind, Option<(WorkloadRef, Workload)>),
    ListDone(WorkloadKind),
    Failed(WorkloadKind, watcher::Error),
}

fn watch_kind<K>(
    client: &Client,
    kind: WorkloadKind,
    opted_in: fn(&K) -> Option<(WorkloadRef, Workload)>,
) -> BoxStream<'static, IndexEvent>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let reference = move |object: &K| WorkloadRef {
        kind,
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
    };
    watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(move |event| match event {
            Ok(WatchEvent::Apply(object)) => {
                IndexEvent::Changed(reference(&object), opted_in(&object).map(|(_, w)| w))
            }
            Ok(WatchEvent::Delete(object)) => IndexEvent::Deleted(reference(&object)),
            Ok(WatchEvent::Init) => IndexEvent::ListStart(kind),
            Ok(WatchEvent::InitApply(object)) => IndexEvent::Listed(kind, opted_in(&object)),
            Ok(WatchEvent::InitDone) => IndexEvent::ListDone(kind),
            Err(error) => IndexEvent::Failed(kind, error),
        })
        .boxed()
}

/// The loop's own state.
#[derive(Default)]
struct RolloutLoop {
    index: WorkloadIndex,
    listing: BTreeMap<WorkloadKind, Vec<(WorkloadRef, Workload)>>,
    debouncer: RestartDebouncer<WorkloadRef>,
}

impl RolloutLoop {
    fn apply(&mut self, ctx: &Context, event: IndexEvent) {
        match event {
            IndexEvent::Changed(reference, found) => self.index.changed(reference, found),
            IndexEvent::Deleted(reference) => self.index.deleted(&reference),
            IndexEvent::ListStart(kind) => {
                self.listing.insert(kind, Vec::new());
            }
            IndexEvent::Listed(kind, found) => {
                if let Some(found) = found {
                    self.listing.entry(kind).or_default().push(found);
                }
            }
            IndexEvent::ListDone(kind) => {
                let listed = self.listing.remove(&kind).unwrap_or_default();
                self.index.relisted(kind, listed);
            }
            IndexEvent::Failed(kind, error) => {
                super::report_watch_error(&ctx.health, kind.plural(), &error)
            }
        }
    }

    /// Step 1 for every opted-in workload that references a changed Secret.
    fn take_changes(&mut self, ctx: &Context) {
        if !self.index.complete() {
            return;
        }
        let changes = std::mem::take(&mut *ctx.rollouts.changes.lock());
        let now = Instant::now();
        for change in changes {
            let (namespace, name) = (&change.secret.namespace, &change.secret.name);
            let workloads: Vec<WorkloadRef> =
                self.index.referencing(namespace, name).cloned().collect();
            for workload in workloads {
                let restarted_at = self
                    .index
                    .get(&workload)
                    .and_then(|w| w.restarted_at)
                    .map(|at| instant_of(at, now));
                let step = Change {
                    source: change.source.clone(),
                    window: change.window,
                    restarted_at,
                };
                self.debouncer.changed(workload, step, now);
            }
        }
    }

    /// Steps 2 and 3: restarts the workloads whose wait is over.
    async fn restart_due(&mut self, ctx: &Context) {
        for due in self.debouncer.take_due(Instant::now()) {
            self.restart(ctx, due).await;
        }
    }

    async fn restart(&mut self, ctx: &Context, due: Due<WorkloadRef>) {
        let Some(workload) = self.index.get(&due.workload).cloned() else {
            return;
        };
        let Some((digest, secrets)) = digest_of(ctx, &due.workload.namespace, &workload.secrets)
        else {
            return;
        };
        if workload.digest.as_deref() == Some(digest.as_str()) {
            tracing::debug!(workload = %due.workload, "referenced Secrets already as the pods have them: no restart");
            return;
        }
        let Some(_permit) = ctx.settings.write_gate.try_enter() else {
            return;
        };
        let at = Utc::now();
        match patch(&ctx.client, &due.workload, &digest, at).await {
            Ok(()) => {
                self.index.restarted(&due.workload, digest, at);
                self.debouncer
                    .restarted(due.workload.clone(), due.window, Instant::now());
                let kind = due.workload.kind.as_str();
                ctx.metrics
                    .sync(&due.source)
                    .record_rollout(&due.workload.namespace, kind);
                tracing::info!(workload = %due.workload, credstashsync = %due.source, secrets = %secrets.join(", "), "restarted: referenced Secrets changed");
                publish(ctx, &due, workload.uid, &secrets).await;
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => {
                tracing::warn!(workload = %due.workload, %error, retry_in_s = RETRY.as_secs(), "could not restart");
                let retry = Change {
                    source: due.source,
                    window: RETRY,
                    restarted_at: None,
                };
                self.debouncer.changed(due.workload, retry, Instant::now());
            }
        }
    }
}

/// The monotonic instant of a wall-clock time in the past.
fn instant_of(at: chrono::DateTime<Utc>, now: Instant) -> Instant {
    let ago = (Utc::now() - at).to_std().unwrap_or_default();
    now.checked_sub(ago).unwrap_or(now)
}

/// The digest of the managed Secrets among `secrets` (in `namespace`), and
/// their names; `None` when none of them is managed.
fn digest_of(
    ctx: &Context,
    namespace: &str,
    secrets: &BTreeSet<String>,
) -> Option<(String, Vec<String>)> {
    let managed: Vec<_> = ctx
        .managed_secrets_now()
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
        .filter(|s| {
            s.metadata
                .name
                .as_ref()
                .is_some_and(|n| secrets.contains(n))
        })
        .collect();
    if managed.is_empty() {
        return None;
    }
    let names = managed.iter().map(|s| s.name_any()).collect();
    let digest = workload_digest(managed.iter().flat_map(|s| secret_key_digests(s)));
    Some((digest, names))
}

/// Sets the pod template's digest (the restart) and the workload's
/// restart time, with a strategic merge patch as `kubectl rollout restart`.
async fn patch(
    client: &Client,
    workload: &WorkloadRef,
    digest: &str,
    at: chrono::DateTime<Utc>,
) -> Result<(), kube::Error> {
    let body = serde_json::json!({
        "metadata": {"annotations": {ROLLED_AT_ANNOTATION: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}},
        "spec": {"template": {"metadata": {"annotations": {DIGEST_ANNOTATION: digest}}}},
    });
    let params = PatchParams::default();
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..params
    };
    let (ns, name, patch) = (&workload.namespace, &workload.name, Patch::Strategic(&body));
    match workload.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .patch(name, &params, &patch)
            .await
            .map(drop),
    }
}

/// Events on the workload and on the CredstashSync (Secret names only).
async fn publish(ctx: &Context, due: &Due<WorkloadRef>, uid: Option<String>, secrets: &[String]) {
    let workload = &due.workload;
    let note = format!(
        "restarted: CredstashSync {} changed Secret(s) {} that it references",
        due.source,
        secrets.join(", ")
    );
    let event = KubeEvent {
        type_: EventType::Normal,
        reason: event_reason::SECRETS_CHANGED.into(),
        note: Some(report::fit_note(&note)),
        action: "Restart".into(),
        secondary: None,
    };
    let reference = ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some(workload.kind.as_str().into()),
        namespace: Some(workload.namespace.clone()),
        name: Some(workload.name.clone()),
        uid,
        ..Default::default()
    };
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(%workload, %error, "could not publish event");
    }
    let css = ctx
        .syncs
        .state()
        .into_iter()
        .find(|c| c.name_any() == due.source);
    if let Some(css) = css {
        let notice = Notice {
            severity: Severity::Normal,
            reason: event_reason::SECRETS_CHANGED,
            action: "Restart",
            note: format!(
                "restarted {workload}: Secret(s) {} changed",
                secrets.join(", ")
            ),
        };
        ctx.publish(&css, &notice).await;
    }
}

/// Runs the rollout loop once some CredstashSync enables rollout; until
/// then nothing is watched.
pub(super) async fn run(ctx: Arc<Context>) {
    let mut enabled = ctx.rollouts.enabled.subscribe();
    if enabled.wait_for(|on| *on).await.is_err() {
        return std::future::pending().await;
    }
    tracing::info!("rollout enabled: watching Deployments, StatefulSets and DaemonSets");
    let mut events = futures::stream::select_all([
        watch_kind(
            &ctx.client,
            WorkloadKind::Deployment,
            Workload::of_deployment,
        ),
        watch_kind(
            &ctx.client,
            WorkloadKind::StatefulSet,
            Workload::of_stateful_set,
        ),
        watch_kind(
            &ctx.client,
            WorkloadKind::DaemonSet,
            Workload::of_daemon_set,
        ),
    ]);
    let mut state = RolloutLoop::default();
    loop {
        let next_due = state.debouncer.next_due();
        tokio::select! {
            event = events.next() => match event {
                Some(event) => state.apply(&ctx, event),
                None => return,
            },
            () = ctx.rollouts.wake.notified() => {}
            () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
        }
        state.take_changes(&ctx);
        state.restart_due(&ctx).await;
    }
}
