//! One reconcile of a CredstashSync: validate, take in what happened since
//! the last one (stream batches, namespaces that appeared), decide, then run
//! a full sync, apply the pending work, or wait; report status, events and
//! metrics.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::report::{self, Notice, Severity, SyncOutcome, SyncResult};
use super::state::{Cause, PendingWork};
use super::streaming::{self, Opened, StreamHealth, StreamKey, StreamLink};
use super::sync;
use super::triggers::{self, Action as Next, SyncTrigger, TriggerInputs};
use super::{Context, Error};
use crate::crd::{
    condition_type, reason, set_condition, to_time, ConditionStatus, CredstashSync,
    CredstashSyncStatus, StreamStatus, ValidSpec, RESYNC_ANNOTATION,
};
use crate::mapping::SecretRef;

/// Reconciles one CredstashSync (boxed for the same reason as the caller).
pub(super) fn apply(
    css: Arc<CredstashSync>,
    ctx: Arc<Context>,
) -> BoxFuture<'static, Result<Action, Error>> {
    Box::pin(async move { reconcile(&css, &ctx).await })
}

async fn reconcile(css: &CredstashSync, ctx: &Context) -> Result<Action, Error> {
    let name = css.meta().name.clone().ok_or(Error::Unnamed)?;
    // A full sync reads the table from a Scan that starts after this (or
    // after the stream iterators it opens): never one begun before the
    // request it answers.
    let mut read_not_before = tokio::time::Instant::now();
    ctx.metrics.sync(&name).set_settings(&css.spec);
    let spec = match css.spec.validate() {
        Ok(spec) => spec.with_operator_namespace(&ctx.settings.operator_namespace),
        Err(problem) => return invalid_spec(css, ctx, &name, &problem.to_string()).await,
    };
    let _running = ctx.health.begin_reconcile(&name, spec.sync_timeout);
    if spec.rollout.enabled {
        ctx.rollouts.enable();
    }
    let key = StreamKey::of(&spec);
    let namespaces = ctx.active_namespaces();
    let unselected = spec.unselected_namespaces(&namespaces);
    let active: BTreeSet<String> = namespaces.into_keys().collect();
    let stream_live = ctx.with_state(&name, |s| {
        s.namespaces_appeared(&active);
        s.selection_changed(&unselected, &active);
        s.take_stream_news(&key)
    });
    if !stream_live {
        ctx.metrics.sync(&name).clear_stream_lag();
    }
    let previous = ctx.current_status(css).unwrap_or_default();
    let resync_requested = css.annotations().get(RESYNC_ANNOTATION).cloned();
    let mut decision = decide(
        css,
        ctx,
        &name,
        &spec,
        &previous,
        resync_requested.as_deref(),
    );

    let mut opened = None;
    if !stream_live {
        let full_sync_coming = matches!(decision.action, Next::FullSync(_));
        if full_sync_coming || stream_check_due(ctx, &name) {
            let result = streaming::open(&key, ctx.settings.stream_check_interval).await;
            ctx.with_state(&name, |s| {
                s.stream.checked_at = Some(tokio::time::Instant::now())
            });
            if matches!(result, Opened::Follower(_)) {
                read_not_before = tokio::time::Instant::now();
                if !full_sync_coming {
                    decision.action = Next::FullSync(SyncTrigger::StreamGap);
                }
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
                read_not_before,
            };
            status = run
                .execute(&previous, resync_requested.as_deref(), opened)
                .await?;
        }
        Next::ApplyPending => {
            let run = PendingRun {
                css,
                ctx,
                name: &name,
                spec: &spec,
            };
            if let Some(applied_at) = run.execute().await {
                status
                    .stream
                    .get_or_insert_with(Default::default)
                    .last_applied_time = Some(to_time(applied_at));
            }
        }
        Next::Idle => {}
    }
    let pending = ctx.with_state(&name, |s| s.pending_secrets());
    ctx.metrics.sync(&name).set_pending_secrets(pending);
    status.pending_secrets = (pending > 0).then_some(pending as i64);
    set_stream_status(ctx, &name, &mut status, css.meta().generation);
    ctx.write_status(css, &status).await?;

    if let (Some(until), Some(requested)) = (decision.deferred_resync_until, resync_requested) {
        let first_time = ctx.with_state(&name, |s| {
            s.deferred_notice_for.replace(requested.clone()) != Some(requested)
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
    let now = tokio::time::Instant::now();
    let (stream_live, retries, more_pending) = ctx.with_state(name, |s| {
        let live = s.stream.link.as_ref().is_some_and(StreamLink::is_live);
        let retries = [s.full_sync_retry.due_at(), s.pending_due_at()];
        (live, retries, s.pending_due(now))
    });
    if more_pending {
        return Duration::from_millis(10);
    }
    let mut next = decided;
    if !stream_live {
        next = next.min(ctx.settings.stream_check_interval);
    }
    for at in retries.into_iter().flatten() {
        let wait = at.saturating_duration_since(now);
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
) -> triggers::Decision {
    let now = tokio::time::Instant::now();
    let (last_full_sync, last_manual_resync, retry, stream_gap, pending_due) =
        ctx.with_state(name, |s| {
            (
                s.last_full_sync,
                s.last_manual_resync,
                s.full_sync_retry,
                s.stream.gap.is_some(),
                s.pending_due(now),
            )
        });
    let backing_off = retry.backing_off(now);
    triggers::decide(&TriggerInputs {
        now: Utc::now(),
        generation: css.meta().generation,
        observed_generation: previous.observed_generation,
        resync_requested,
        last_resync_handled: previous.last_resync_request.as_deref(),
        last_full_sync,
        last_manual_resync,
        schedule: &spec.schedule,
        min_resync_interval: spec.min_resync_interval,
        retry_due: retry.failing() && !backing_off,
        backing_off,
        stream_gap,
        pending_due,
    })
}

async fn invalid_spec(
    css: &CredstashSync,
    ctx: &Context,
    name: &str,
    problem: &str,
) -> Result<Action, Error> {
    let previous = ctx.current_status(css);
    let status = report::status_invalid_spec(
        &previous.clone().unwrap_or_default(),
        problem,
        css.meta().generation,
        Utc::now(),
    );
    ctx.with_state(name, |s| s.stream.link = None);
    if previous.as_ref() != Some(&status) {
        ctx.metrics.sync(name).record_sync(
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

/// Tells why the stream made a full sync necessary.
async fn report_stream_gap(css: &CredstashSync, ctx: &Context, name: &str) {
    let why = ctx.with_state(name, |s| s.stream.gap.clone());
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

fn stream_check_due(ctx: &Context, name: &str) -> bool {
    ctx.with_state(name, |s| {
        s.stream
            .checked_at
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
    /// The table read must start no earlier than this.
    read_not_before: tokio::time::Instant,
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
        let started = Instant::now();
        let reader = ctx.reader(name, spec).await;
        let taken = ctx.with_state(name, |s| s.begin_full_sync());
        tracing::info!(credstashsync = %name, trigger = self.trigger.as_str(), table = %spec.table, "full sync");
        let env = ctx.sync_env(self.css);
        let result = tokio::time::timeout(
            spec.sync_timeout,
            sync::full_sync(&env, name, spec, &reader, self.read_not_before),
        )
        .await;
        self.start_stream(opened);
        if !ctx.still_exists(self.css) {
            ctx.with_state(name, |s| s.full_sync_failed(taken));
            tracing::info!(credstashsync = %name, "full sync abandoned: the CredstashSync was deleted while it ran");
            return Ok(previous.clone());
        }
        let generation = self.css.meta().generation;
        let Ok((outcome, snapshot)) = result else {
            ctx.with_state(name, |s| s.full_sync_failed(taken));
            return Err(self.timed_out(previous, started.elapsed()).await);
        };
        let now = Utc::now();
        let outcome = SyncOutcome {
            trigger: Some(self.trigger),
            finished_at: Some(now),
            duration: started.elapsed(),
            ..outcome
        };
        record_sync_metrics(ctx, name, &outcome, now);
        ctx.rollouts
            .secrets_changed(name, spec.rollout, outcome.changed_keys.keys());
        let manual = self.trigger == SyncTrigger::Manual;
        match snapshot {
            Some(snapshot) if outcome.cluster_error.is_none() => {
                let retry = snapshot.names_to_retry(spec);
                let at = tokio::time::Instant::now();
                ctx.with_state(name, |s| {
                    s.full_sync_done(&outcome, snapshot, now, manual);
                    s.retry_names(retry, at);
                });
            }
            _ => ctx.with_state(name, |s| s.full_sync_failed(taken)),
        }
        crate::allocator::release_freed_memory();
        let status =
            report::status_after_sync(previous, &outcome, generation, resync_requested, now);
        for notice in report::sync_notices(&outcome) {
            ctx.publish(self.css, &notice).await;
        }
        tracing::info!(credstashsync = %name, result = outcome.result().as_str(), summary = %outcome.summary(), "full sync finished");
        if let Some(reason) = outcome
            .table_error
            .as_ref()
            .or(outcome.cluster_error.as_ref())
        {
            // Keep what the failed sync learned in status, then retry with backoff.
            ctx.write_status(self.css, &status).await?;
            return Err(Error::SyncFailed {
                name: name.to_owned(),
                reason: reason.clone(),
            });
        }
        Ok(status)
    }

    fn start_stream(&self, opened: Option<Opened>) {
        let Some(opened) = opened else { return };
        let key = StreamKey::of(self.spec);
        let health = match opened {
            Opened::Follower(follower) => {
                let wake = self.ctx.wake.clone();
                let link = StreamLink::spawn(key, *follower, self.spec.wait_time, move || {
                    let _ = wake.unbounded_send(());
                });
                let health = link.health();
                self.ctx
                    .with_state(self.name, |s| s.stream.link = Some(link));
                health
            }
            Opened::Disabled => StreamHealth::Disabled,
            Opened::Failed(reason) => StreamHealth::Failed(reason),
        };
        // Lag exists exactly while a stream is followed (alerts key on it).
        match &health {
            StreamHealth::Following(_) => self
                .ctx
                .metrics
                .sync(self.name)
                .set_stream_lag(Duration::ZERO),
            _ => self.ctx.metrics.sync(self.name).clear_stream_lag(),
        }
        self.ctx
            .with_state(self.name, |s| s.stream.health = Some(health));
    }

    async fn timed_out(&self, previous: &CredstashSyncStatus, elapsed: Duration) -> Error {
        let (ctx, name, spec) = (self.ctx, self.name, self.spec);
        ctx.metrics
            .sync(name)
            .record_sync(self.trigger, SyncResult::Timeout, elapsed);
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

/// Most stream names read again in one run of pending work; the rest stays
/// pending and runs right after.
const NAMES_PER_RUN: usize = 256;

/// The pending work about to be applied from the snapshot: names the stream
/// touched are read again, then every pending Secret is planned whole.
struct PendingRun<'a> {
    css: &'a CredstashSync,
    ctx: &'a Context,
    name: &'a str,
    spec: &'a ValidSpec,
}

impl PendingRun<'_> {
    /// Applies what is pending; anything that could not be applied stays
    /// pending (retried with backoff). Returns when stream changes were applied
    /// (`status.stream.lastAppliedTime`; repairs alone do not move it).
    async fn execute(&self) -> Option<DateTime<Utc>> {
        let (ctx, name, spec) = (self.ctx, self.name, self.spec);
        let (mut work, mut snapshot) = ctx.with_state(name, |s| s.take_pending())?;
        let changes = work.changes.take();
        if let Some(changes) = &changes {
            ctx.metrics
                .sync(name)
                .record_stream_records(&changes.counts);
        }
        let mut names = std::mem::take(&mut work.names);
        let mut deferred = BTreeSet::new();
        if names.len() > NAMES_PER_RUN {
            // Bounded runs: a huge burst is applied in parts, each well
            // within syncTimeout, instead of timing out and starting over.
            deferred =
                names.split_off(&names.iter().nth(NAMES_PER_RUN).cloned().unwrap_or_default());
            ctx.with_state(name, |s| s.defer_names(deferred.clone()));
        }
        let reader = if names.is_empty() {
            None
        } else {
            Some(ctx.reader(name, spec).await)
        };
        let env = ctx.sync_env(self.css);
        let run = async {
            let mut unread = PendingWork::default();
            // Names whose re-read is still to come: their Secrets are not
            // pruned from the older snapshot.
            let mut waiting = deferred.clone();
            if let Some(reader) = &reader {
                match sync::refresh_names(&env, spec, reader, &mut snapshot, &names).await {
                    Ok(touched) => touched
                        .into_iter()
                        .for_each(|secret| work.mark(secret, Cause::Stream)),
                    Err(error) => {
                        tracing::warn!(credstashsync = %name, error = %error, "reading stream changes failed; they stay pending");
                        unread.names = names.clone();
                        unread.changes = changes.clone();
                        waiting.extend(names.iter().cloned());
                    }
                }
            }
            let targets: BTreeSet<SecretRef> = work.secrets.keys().cloned().collect();
            let outcome =
                sync::apply_secrets(&env, name, spec, &snapshot, &targets, &waiting).await;
            (unread, outcome)
        };
        let result = tokio::time::timeout(spec.sync_timeout, run).await;
        if !ctx.still_exists(self.css) {
            tracing::info!(credstashsync = %name, "pending changes abandoned: the CredstashSync was deleted while they were applied");
            return None;
        }
        let now = tokio::time::Instant::now();
        let Ok((unread, outcome)) = result else {
            tracing::warn!(credstashsync = %name, "applying pending changes timed out; they stay pending");
            let mut back = work;
            back.names = names;
            back.changes = changes;
            ctx.with_state(name, |s| s.pending_applied(snapshot, back, None, now));
            if reader.is_some() {
                ctx.metrics
                    .sync(name)
                    .record_stream_apply(SyncResult::Timeout);
            }
            return None;
        };
        let failing = snapshot.failed_names(spec);
        let repaired = repaired_secrets(&work, &outcome);
        let changed = outcome.changed_keys.keys();
        let not_repaired = changed.filter(|s| work.secrets.get(*s) != Some(&Cause::Drift));
        ctx.rollouts
            .secrets_changed(name, spec.rollout, not_repaired);
        let read_ok = unread.is_empty();
        // Names that failed for a reason that may pass are read again, with
        // the backoff of a failed run.
        let mut unread = unread;
        unread.names.extend(snapshot.names_to_retry(spec));
        ctx.with_state(name, |s| {
            s.pending_applied(snapshot, unread, Some(&outcome), now)
        });
        ctx.metrics.sync(name).set_key_sync_failed(failing as i64);
        if reader.is_some() {
            let result = if read_ok {
                outcome.result()
            } else {
                SyncResult::Failure
            };
            ctx.metrics.sync(name).record_stream_apply(result);
        }
        if let (Some(changes), true) = (&changes, read_ok) {
            if let Some(lag) = changes.lag(Utc::now()) {
                ctx.metrics.sync(name).set_stream_lag(lag);
            }
        }
        tracing::info!(credstashsync = %name, secrets = work.secrets.len(), names = names.len(), summary = %outcome.summary(), "applied pending changes");
        self.report(&outcome, &repaired).await;
        let streamed = reader.is_some() && read_ok;
        (streamed && !outcome.changed_keys.is_empty()).then(Utc::now)
    }

    async fn report(&self, outcome: &SyncOutcome, repaired: &[(SecretRef, Vec<String>)]) {
        let (ctx, name) = (self.ctx, self.name);
        let mut notices = report::sync_notices(outcome);
        for (secret, keys) in repaired {
            ctx.metrics.sync(name).record_drift_repair();
            tracing::info!(credstashsync = %name, secret = %secret, keys = %keys.join(", "), "repaired drift");
            notices.push(report::repaired_notice(secret, keys));
        }
        for notice in notices {
            ctx.publish(self.css, &notice).await;
        }
    }
}

/// The Secrets marked as drifted that the apply wrote, with the keys put
/// back (names only).
fn repaired_secrets(work: &PendingWork, outcome: &SyncOutcome) -> Vec<(SecretRef, Vec<String>)> {
    work.secrets
        .iter()
        .filter(|(_, cause)| **cause == Cause::Drift)
        .filter_map(|(secret, _)| {
            let keys = outcome.changed_keys.get(secret)?;
            Some((secret.clone(), keys.clone()))
        })
        .collect()
}

fn record_sync_metrics(ctx: &Context, name: &str, outcome: &SyncOutcome, now: DateTime<Utc>) {
    let metrics = ctx.metrics.sync(name);
    metrics.record_sync(
        outcome.trigger.unwrap_or(SyncTrigger::Startup),
        outcome.result(),
        outcome.duration,
    );
    metrics.set_table_fetch_failed(outcome.table_error.is_some());
    if outcome.table_error.is_none() && outcome.cluster_error.is_none() {
        metrics.set_keys(&outcome.keys);
    }
    if outcome.result() == SyncResult::Success {
        metrics.set_last_successful_sync(now);
    }
}

/// The `Streaming` condition and `status.stream` from the follower's state.
fn set_stream_status(
    ctx: &Context,
    name: &str,
    status: &mut CredstashSyncStatus,
    generation: Option<i64>,
) {
    let Some(health) = ctx.with_state(name, |s| s.stream.health.clone()) else {
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
        Utc::now(),
    );
}
