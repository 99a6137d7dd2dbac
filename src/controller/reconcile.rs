//! One reconcile of a CredstashSync: validate, decide, then run a full sync,
//! apply stream changes, or wait; report status, events and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::report::{self, Notice, Severity, SyncOutcome};
use super::streaming::{self, Opened, StreamHealth, StreamKey, StreamLink};
use super::sync;
use super::triggers::{self, Action as Next, TriggerInputs};
use super::{Context, Error};
use crate::crd::{
    condition_type, reason, set_condition, to_time, ConditionStatus, CredstashSync,
    CredstashSyncStatus, StreamStatus, ValidSpec, RESYNC_ANNOTATION,
};
use crate::metrics::{StreamEvent as RecordKind, SyncResult, SyncTrigger};
use crate::stream::{Changes, EventKind};

/// Reconciles one CredstashSync (boxed for the same reason as the caller).
pub(super) fn apply(
    css: Arc<CredstashSync>,
    ctx: Arc<Context>,
) -> BoxFuture<'static, Result<Action, Error>> {
    Box::pin(async move { reconcile(&css, &ctx).await })
}

async fn reconcile(css: &CredstashSync, ctx: &Context) -> Result<Action, Error> {
    let name = css.meta().name.clone().ok_or(Error::Unnamed)?;
    ctx.metrics.set_settings(&name, &css.spec);
    let spec = match css.spec.validate() {
        Ok(spec) => spec.with_operator_namespace(&ctx.settings.operator_namespace),
        Err(problem) => return invalid_spec(css, ctx, &name, &problem.to_string()).await,
    };
    collect_stream_news(ctx, &name, &StreamKey::of(&spec));
    let previous = css.status.clone().unwrap_or_default();
    let resync_requested = css.annotations().get(RESYNC_ANNOTATION).cloned();
    let now = Utc::now();
    let mut decision = decide(
        css,
        ctx,
        &name,
        &spec,
        &previous,
        resync_requested.as_deref(),
        now,
    );

    let mut opened = None;
    let key = StreamKey::of(&spec);
    if stream_needs_open(ctx, &name, &key) {
        let full_sync_coming = matches!(decision.action, Next::FullSync(_));
        if full_sync_coming || stream_check_due(ctx, &name) {
            let result = streaming::open(&key, ctx.settings.stream_check_interval).await;
            ctx.with_worker(&name, |w| {
                w.stream_checked_at = Some(tokio::time::Instant::now())
            });
            if matches!(result, Opened::Follower(_)) && !full_sync_coming {
                decision.action = Next::FullSync(SyncTrigger::StreamGap);
            }
            opened = Some(result);
        }
    }

    let mut status = previous.clone();
    match decision.action {
        Next::FullSync(trigger) => {
            if trigger == SyncTrigger::StreamGap {
                report_stream_gap(css, ctx, &name).await;
            }
            let run = FullSyncRun {
                css,
                ctx,
                name: &name,
                spec: &spec,
                trigger,
            };
            status = run
                .execute(&previous, resync_requested.as_deref(), opened)
                .await?;
        }
        Next::ApplyStreamChanges => {
            if let Some(applied_at) = apply_stream_changes(css, ctx, &name, &spec).await? {
                status
                    .stream
                    .get_or_insert_with(Default::default)
                    .last_applied_time = Some(to_time(applied_at));
            }
        }
        Next::Idle => {}
    }
    set_stream_status(ctx, &name, &mut status, css.meta().generation, Utc::now());
    ctx.write_status(css, &status).await?;

    if let (Some(until), Some(requested)) = (decision.deferred_resync_until, resync_requested) {
        let first_time = ctx.with_worker(&name, |w| {
            w.deferred_notice_for.replace(requested.clone()) != Some(requested)
        });
        if first_time {
            ctx.publish(css, &report::deferred_notice(until)).await;
        }
    }
    Ok(Action::requeue(next_look(
        ctx,
        &name,
        decision.requeue_after,
    )))
}

/// When to reconcile again at the latest: the decision's time, a pending
/// retry (a reconcile triggered meanwhile replaces the controller's own
/// retry schedule), and the periodic stream check when no stream is followed.
fn next_look(ctx: &Context, name: &str, decided: Duration) -> Duration {
    let (stream_live, retry_at) = ctx.with_worker(name, |w| {
        let live = w.stream.as_ref().is_some_and(StreamLink::is_live);
        (live, w.retry_at.filter(|_| w.consecutive_failures > 0))
    });
    let mut next = decided;
    if !stream_live {
        next = next.min(ctx.settings.stream_check_interval);
    }
    if let Some(at) = retry_at {
        let wait = at.saturating_duration_since(tokio::time::Instant::now());
        next = next.min(wait.max(Duration::from_millis(100)));
    }
    next
}

fn decide(
    css: &CredstashSync,
    ctx: &Context,
    name: &str,
    spec: &ValidSpec,
    previous: &CredstashSyncStatus,
    resync_requested: Option<&str>,
    now: DateTime<Utc>,
) -> triggers::Decision {
    let (last_full_sync, last_manual_resync, failed, retry_at, stream_gap, changes_pending) = ctx
        .with_worker(name, |w| {
            (
                w.last_full_sync,
                w.last_manual_resync,
                w.consecutive_failures > 0,
                w.retry_at,
                w.pending_gap.is_some(),
                w.pending_changes.is_some(),
            )
        });
    let backing_off = failed && retry_at.is_some_and(|at| at > tokio::time::Instant::now());
    triggers::decide(&TriggerInputs {
        now,
        generation: css.meta().generation,
        observed_generation: previous.observed_generation,
        resync_requested,
        last_resync_handled: previous.last_resync_request.as_deref(),
        last_full_sync,
        last_manual_resync,
        schedule: &spec.schedule,
        min_resync_interval: spec.min_resync_interval,
        retry_due: failed && !backing_off,
        backing_off,
        stream_gap,
        namespace_appeared: ctx.namespace_appeared(name),
        stream_changes_pending: changes_pending,
    })
}

async fn invalid_spec(
    css: &CredstashSync,
    ctx: &Context,
    name: &str,
    problem: &str,
) -> Result<Action, Error> {
    let previous = css.status.clone().unwrap_or_default();
    let status = report::status_invalid_spec(&previous, problem, css.meta().generation, Utc::now());
    ctx.with_worker(name, |w| w.stream = None);
    if css.status.as_ref() != Some(&status) {
        ctx.metrics.record_sync(
            name,
            SyncTrigger::SpecChange,
            SyncResult::InvalidSpec,
            Duration::ZERO,
        );
        let notice = Notice {
            severity: Severity::Warning,
            reason: reason::INVALID_SPEC,
            action: "Validate",
            note: problem.to_owned(),
        };
        ctx.publish(css, &notice).await;
    }
    ctx.write_status(css, &status).await?;
    Ok(Action::await_change())
}

/// Moves what the stream follower reported into the worker; drops a
/// follower whose stream the spec no longer asks for.
fn collect_stream_news(ctx: &Context, name: &str, key: &StreamKey) {
    ctx.with_worker(name, |w| {
        if w.stream.as_ref().is_some_and(|link| link.key != *key) {
            w.stream = None;
        }
        let Some(link) = &w.stream else { return };
        let pending = link.take();
        if let Some(changes) = pending.changes {
            match &mut w.pending_changes {
                Some(existing) => existing.merge(changes),
                None => w.pending_changes = Some(changes),
            }
        }
        if pending.gap.is_some() {
            w.pending_gap = pending.gap;
        }
        w.stream_health = Some(link.health());
        if !link.is_live() {
            w.stream = None;
            ctx.metrics.clear_stream_lag(name);
        }
    });
}

/// Tells why the stream made a full sync necessary.
async fn report_stream_gap(css: &CredstashSync, ctx: &Context, name: &str) {
    let why = ctx.with_worker(name, |w| w.pending_gap.clone());
    let notice = match why {
        Some(why) => Notice {
            severity: Severity::Warning,
            reason: reason::STREAM_GAP,
            action: "Sync",
            note: format!("{why}: running a full sync so that no change is missed"),
        },
        None => Notice {
            severity: Severity::Normal,
            reason: reason::STREAMING,
            action: "Sync",
            note: "a DynamoDB stream is now available: a full sync runs before following it"
                .to_owned(),
        },
    };
    tracing::info!(credstashsync = %name, note = %notice.note, "full sync for the stream");
    ctx.publish(css, &notice).await;
}

fn stream_needs_open(ctx: &Context, name: &str, key: &StreamKey) -> bool {
    ctx.with_worker(name, |w| {
        !w.stream
            .as_ref()
            .is_some_and(|link| link.is_live() && link.key == *key)
    })
}

fn stream_check_due(ctx: &Context, name: &str) -> bool {
    ctx.with_worker(name, |w| {
        w.stream_checked_at
            .is_none_or(|at| at.elapsed() >= ctx.settings.stream_check_interval)
    })
}

/// A full sync about to run, and what it needs.
struct FullSyncRun<'a> {
    css: &'a CredstashSync,
    ctx: &'a Context,
    name: &'a str,
    spec: &'a ValidSpec,
    trigger: SyncTrigger,
}

impl FullSyncRun<'_> {
    /// Reads the whole table and applies it; starts the stream follower that
    /// was opened before the read. Returns the new status (not yet written).
    async fn execute(
        &self,
        previous: &CredstashSyncStatus,
        resync_requested: Option<&str>,
        opened: Option<Opened>,
    ) -> Result<CredstashSyncStatus, Error> {
        let (ctx, name, spec) = (self.ctx, self.name, self.spec);
        ctx.with_worker(name, |w| {
            w.pending_changes = None;
            w.pending_gap = None;
        });
        let started = Instant::now();
        let reader = ctx.reader(name, spec).await;
        tracing::info!(credstashsync = %name, trigger = self.trigger.as_str(), table = %spec.table, "full sync");
        let env = ctx.sync_env();
        let result = tokio::time::timeout(
            spec.sync_timeout,
            sync::full_sync(&env, name, spec, &reader),
        )
        .await;
        self.start_stream(opened);
        let generation = self.css.meta().generation;
        let Ok((outcome, snapshot)) = result else {
            return Err(self.timed_out(previous, started.elapsed()).await);
        };
        ctx.health.record_sync_completed();
        let now = Utc::now();
        let outcome = SyncOutcome {
            trigger: Some(self.trigger),
            finished_at: Some(now),
            duration: started.elapsed(),
            ..outcome
        };
        record_sync_metrics(ctx, name, &outcome, now);
        ctx.with_worker(name, |w| {
            w.waiting_namespaces = outcome.waiting_namespaces.clone();
            w.last_full_sync = Some(now);
            if self.trigger == SyncTrigger::Manual {
                w.last_manual_resync = Some(now);
            }
            if snapshot.is_some() {
                w.snapshot = snapshot;
            }
        });
        super::release_freed_memory();
        let status =
            report::status_after_sync(previous, &outcome, generation, resync_requested, now);
        for notice in report::sync_notices(&outcome) {
            ctx.publish(self.css, &notice).await;
        }
        tracing::info!(credstashsync = %name, result = outcome.result().as_str(), summary = %outcome.summary(), "full sync finished");
        if let Some(reason) = retry_reason(&outcome) {
            // Keep what the failed sync learned in status, then retry with backoff.
            ctx.write_status(self.css, &status).await?;
            return Err(Error::SyncFailed {
                name: name.to_owned(),
                reason,
            });
        }
        ctx.with_worker(name, |w| w.consecutive_failures = 0);
        Ok(status)
    }

    fn start_stream(&self, opened: Option<Opened>) {
        let Some(opened) = opened else { return };
        let key = StreamKey::of(self.spec);
        let health = match opened {
            Opened::Follower(follower) => {
                let wake = self.ctx.wake.clone();
                let target = ObjectRef::new(self.name);
                let link = StreamLink::spawn(key, *follower, self.spec.wait_time, move || {
                    let _ = wake.unbounded_send(target.clone());
                });
                let health = link.health();
                self.ctx.with_worker(self.name, |w| w.stream = Some(link));
                health
            }
            Opened::Disabled => StreamHealth::Disabled,
            Opened::Failed(reason) => StreamHealth::Failed(reason),
        };
        // Lag exists exactly while a stream is followed (alerts key on it).
        match &health {
            StreamHealth::Following(_) => {
                self.ctx.metrics.set_stream_lag(self.name, Duration::ZERO)
            }
            _ => self.ctx.metrics.clear_stream_lag(self.name),
        }
        self.ctx
            .with_worker(self.name, |w| w.stream_health = Some(health));
    }

    async fn timed_out(&self, previous: &CredstashSyncStatus, elapsed: Duration) -> Error {
        let (ctx, name, spec) = (self.ctx, self.name, self.spec);
        ctx.health.record_sync_timeout();
        ctx.metrics
            .record_sync(name, self.trigger, SyncResult::Timeout, elapsed);
        let status = report::status_timed_out(
            previous,
            spec.sync_timeout,
            self.css.meta().generation,
            Utc::now(),
        );
        if let Err(err) = ctx.write_status(self.css, &status).await {
            return err;
        }
        let note = format!(
            "sync did not finish within {}s and was cancelled",
            spec.sync_timeout.as_secs()
        );
        let notice = Notice {
            severity: Severity::Warning,
            reason: reason::SYNC_TIMEOUT,
            action: "Sync",
            note: note.clone(),
        };
        ctx.publish(self.css, &notice).await;
        Error::SyncFailed {
            name: name.to_owned(),
            reason: note,
        }
    }
}

/// Why a finished sync must be retried soon: the table could not be read, or
/// Secrets could not be written (API errors are usually transient). Keys that
/// failed to decrypt wait for the next sync or stream change instead.
fn retry_reason(outcome: &SyncOutcome) -> Option<String> {
    if let Some(error) = &outcome.table_error {
        return Some(error.clone());
    }
    (!outcome.write_failures.is_empty()).then(|| {
        format!(
            "writing Secrets failed: {}",
            report::listed(&outcome.write_failures)
        )
    })
}

/// Re-reads the names the stream touched and applies only those keys.
/// Returns when they were applied.
async fn apply_stream_changes(
    css: &CredstashSync,
    ctx: &Context,
    name: &str,
    spec: &ValidSpec,
) -> Result<Option<DateTime<Utc>>, Error> {
    let (changes, snapshot) =
        ctx.with_worker(name, |w| (w.pending_changes.take(), w.snapshot.take()));
    let (Some(changes), Some(mut snapshot)) = (changes, snapshot) else {
        return Ok(None);
    };
    record_stream_records(ctx, name, &changes);
    let reader = ctx.reader(name, spec).await;
    let env = ctx.sync_env();
    let applied = tokio::time::timeout(
        spec.sync_timeout,
        sync::apply_changes(&env, name, spec, &reader, &mut snapshot, &changes.names),
    )
    .await;
    let outcome = match applied {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(table_error)) => {
            restore_pending(ctx, name, changes, snapshot);
            ctx.metrics.record_stream_apply(name, SyncResult::Failure);
            return Err(Error::SyncFailed {
                name: name.to_owned(),
                reason: table_error.to_string(),
            });
        }
        Err(_elapsed) => {
            restore_pending(ctx, name, changes, snapshot);
            ctx.metrics.record_stream_apply(name, SyncResult::Timeout);
            return Err(Error::SyncFailed {
                name: name.to_owned(),
                reason: "applying stream changes timed out".into(),
            });
        }
    };
    ctx.with_worker(name, |w| w.snapshot = Some(snapshot));
    let now = Utc::now();
    ctx.metrics.record_stream_apply(name, outcome.result());
    if let Some(lag) = changes.lag(now) {
        ctx.metrics.set_stream_lag(name, lag);
    }
    tracing::info!(credstashsync = %name, names = changes.names.len(), summary = %outcome.summary(), "applied stream changes");
    for notice in report::sync_notices(&outcome) {
        ctx.publish(css, &notice).await;
    }
    ctx.with_worker(name, |w| w.last_applied = Some(now));
    Ok(Some(now))
}

fn restore_pending(ctx: &Context, name: &str, changes: Changes, snapshot: sync::TableSnapshot) {
    ctx.with_worker(name, |w| {
        w.snapshot = Some(snapshot);
        match &mut w.pending_changes {
            Some(newer) => newer.merge(changes),
            None => w.pending_changes = Some(changes),
        }
    });
}

fn record_stream_records(ctx: &Context, name: &str, changes: &Changes) {
    for (kind, label) in [
        (EventKind::Insert, RecordKind::Insert),
        (EventKind::Modify, RecordKind::Modify),
        (EventKind::Remove, RecordKind::Remove),
    ] {
        for _ in 0..changes.counts.get(kind) {
            ctx.metrics.record_stream_record(name, label);
        }
    }
}

fn record_sync_metrics(ctx: &Context, name: &str, outcome: &SyncOutcome, now: DateTime<Utc>) {
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

/// The `Streaming` condition and `status.stream` from the follower's state.
fn set_stream_status(
    ctx: &Context,
    name: &str,
    status: &mut CredstashSyncStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let Some(health) = ctx.with_worker(name, |w| w.stream_health.clone()) else {
        return;
    };
    let (state, why, message) = match &health {
        StreamHealth::Following(stream) => {
            let previous = status.stream.take().unwrap_or_default();
            status.stream = Some(StreamStatus {
                arn: Some(stream.arn.clone()),
                shards: Some(stream.shards as i64),
                last_record_time: stream
                    .last_record_time
                    .map(to_time)
                    .or(previous.last_record_time),
                last_applied_time: previous.last_applied_time,
            });
            let message = format!("following stream {} ({} shards)", stream.arn, stream.shards);
            (ConditionStatus::True, reason::STREAMING, message)
        }
        StreamHealth::Disabled => {
            status.stream = None;
            let message = "the table has no enabled DynamoDB stream: changes arrive with scheduled and manual syncs only. Enable a stream (KEYS_ONLY is enough) to apply puts within seconds";
            (
                ConditionStatus::False,
                reason::STREAM_DISABLED,
                message.to_owned(),
            )
        }
        StreamHealth::Failed(problem) => {
            let message = format!("{problem}; retrying. Check dynamodb:DescribeStream/GetShardIterator/GetRecords permissions");
            (ConditionStatus::False, reason::STREAM_ERROR, message)
        }
    };
    set_condition(
        &mut status.conditions,
        condition_type::STREAMING,
        state,
        why,
        &message,
        generation,
        now,
    );
}
