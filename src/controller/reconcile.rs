//! One reconcile of a CredstashSync: validate, take in what happened since
//! the last one (stream batches, namespaces that appeared or changed
//! selection), decide ([`super::triggers`]), then run a full sync, apply
//! the pending work, or wait ([`Run`]); report status, events and metrics.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tokio::time::Instant;

use super::report::{self, Notice};
use super::state::{Cause, Memory, PendingWork, SharedState};
use super::streaming::{self, Opened, StreamHealth, StreamKey, StreamLink};
use super::triggers::{self, Action as Next, SyncTrigger, TriggerInputs};
use super::{Context, Error};
use crate::crd::{
    condition_type, reason, set_condition, to_time, ConditionStatus, CredstashSync,
    CredstashSyncStatus, StreamStatus, ValidSpec, RESYNC_ANNOTATION,
};
use crate::mapping::SecretRef;
use crate::sync::{Engine, NamespaceScope, SyncOutcome, SyncResult};

/// Reconciles one CredstashSync (boxed for the same reason as the caller).
pub(super) fn apply(
    css: Arc<CredstashSync>,
    ctx: Arc<Context>,
) -> BoxFuture<'static, Result<Action, Error>> {
    Box::pin(async move { reconcile(&css, &ctx).await })
}

async fn reconcile(css: &CredstashSync, ctx: &Context) -> Result<Action, Error> {
    let name = css.meta().name.clone().ok_or(Error::Unnamed)?;
    let state = ctx.state(&name);
    // A full sync reads the table from a Scan that starts after this (or
    // after the stream iterators it opens): never one begun before the
    // request it answers.
    let mut read_not_before = Instant::now();
    ctx.metrics.sync(&name).set_settings(&css.spec);
    let spec = match css.spec.validate() {
        Ok(spec) => spec.with_operator_namespace(&ctx.settings.operator_namespace),
        Err(problem) => return invalid_spec(css, ctx, &state, &problem.to_string()).await,
    };
    let _running = ctx.health.begin_reconcile(&name, spec.sync_timeout);
    if spec.rollout.enabled {
        ctx.rollouts.enable();
    }
    let run = Run {
        css,
        ctx,
        name: &name,
        spec: &spec,
        state: &state,
    };
    let key = StreamKey::of(&spec);
    let (memory, stream_check_due) = run.look_around(&key);
    if !memory.stream_live {
        ctx.metrics.sync(&name).clear_stream_lag();
    }
    let previous = ctx.current_status(css, &state).unwrap_or_default();
    let resync_requested = css.annotations().get(RESYNC_ANNOTATION).cloned();
    let mut decision = triggers::decide(&TriggerInputs {
        now: Utc::now(),
        generation: css.meta().generation,
        observed_generation: previous.observed_generation,
        resync_requested: resync_requested.as_deref(),
        last_resync_handled: previous.last_resync_request.as_deref(),
        schedule: &spec.schedule,
        min_resync_interval: spec.min_resync_interval,
        last_full_sync: memory.last_full_sync,
        last_manual_resync: memory.last_manual_resync,
        retry_due: memory.retry_due,
        backing_off: memory.backing_off,
        stream_gap: memory.stream_gap,
        pending_due: memory.pending_due,
    });

    let mut opened = None;
    if !memory.stream_live && decision.opens_stream(stream_check_due) {
        let result = streaming::open(&key, ctx.settings.stream_check_interval).await;
        let now = Instant::now();
        state.lock().stream_checked(now);
        if matches!(result, Opened::Follower(_)) {
            read_not_before = now;
            decision.stream_opened();
        }
        opened = Some(result);
    }

    let mut status = previous.clone();
    match decision.action {
        Next::FullSync(trigger) => {
            let resync = resync_requested.as_deref();
            status = run
                .full_sync(trigger, read_not_before, &previous, resync, opened)
                .await?;
        }
        Next::ApplyPending => {
            if let Some(applied_at) = run.pending().await {
                status
                    .stream
                    .get_or_insert_with(Default::default)
                    .last_applied_time = Some(to_time(applied_at));
            }
        }
        Next::Idle => {}
    }
    let pending = state.lock().pending_secrets();
    ctx.metrics.sync(&name).set_pending_secrets(pending);
    status.pending_secrets = (pending > 0).then_some(pending as i64);
    set_stream_status(&state, &mut status, css.meta().generation);
    ctx.write_status(css, &state, &status).await?;

    if let (Some(until), Some(requested)) = (decision.deferred_resync_until, resync_requested) {
        if state.lock().first_deferral_of(&requested) {
            ctx.publish(css, &report::deferred_notice(until)).await;
        }
    }
    let now = Instant::now();
    let memory = state.lock().memory(now);
    let interval = ctx.settings.stream_check_interval;
    let next = triggers::next_look(decision.requeue_after, &memory, interval, now);
    Ok(Action::requeue(next))
}

async fn invalid_spec(
    css: &CredstashSync,
    ctx: &Context,
    state: &SharedState,
    problem: &str,
) -> Result<Action, Error> {
    let name = css.name_any();
    let previous = ctx.current_status(css, state);
    let status = report::status_invalid_spec(
        &previous.clone().unwrap_or_default(),
        problem,
        css.meta().generation,
        Utc::now(),
    );
    state.lock().stream_stopped();
    if previous.as_ref() != Some(&status) {
        ctx.metrics.sync(&name).record_sync(
            SyncTrigger::SpecChange,
            SyncResult::InvalidSpec,
            Duration::ZERO,
        );
        let notice = Notice::warning(reason::INVALID_SPEC, "Validate", problem.to_owned());
        ctx.publish(css, &notice).await;
    }
    ctx.write_status(css, state, &status).await?;
    Ok(Action::await_change())
}

/// Most stream names read again in one run of pending work; the rest stays
/// pending and runs right after.
const NAMES_PER_RUN: usize = 256;

/// The work of one reconcile of a CredstashSync, and what it needs: a full
/// sync ([`Run::full_sync`]) or a run of pending work ([`Run::pending`]).
struct Run<'a> {
    css: &'a CredstashSync,
    ctx: &'a Context,
    name: &'a str,
    spec: &'a ValidSpec,
    state: &'a SharedState,
}

impl Run<'_> {
    /// Takes in what happened since the last reconcile: namespaces that
    /// appeared or entered or left the selection, and what the stream
    /// follower reported. Returns what the decision needs, and whether the
    /// periodic stream check is due.
    fn look_around(&self, key: &StreamKey) -> (Memory, bool) {
        let namespaces = self.ctx.active_namespaces();
        let unselected = NamespaceScope::new(self.spec, &namespaces)
            .unselected()
            .clone();
        let active: BTreeSet<String> = namespaces.into_keys().collect();
        let now = Instant::now();
        let mut state = self.state.lock();
        state.namespaces_appeared(&active);
        state.selection_changed(&unselected, &active);
        state.take_stream_news(key);
        let interval = self.ctx.settings.stream_check_interval;
        (state.memory(now), state.stream_check_due(now, interval))
    }

    /// Reads the whole table and applies it; starts the stream follower that
    /// was opened before the read. Returns the new status (not yet written).
    async fn full_sync(
        &self,
        trigger: SyncTrigger,
        read_not_before: Instant,
        previous: &CredstashSyncStatus,
        resync_requested: Option<&str>,
        opened: Option<Opened>,
    ) -> Result<CredstashSyncStatus, Error> {
        let (ctx, name, spec) = (self.ctx, self.name, self.spec);
        if trigger == SyncTrigger::StreamGap {
            self.report_stream_gap().await;
        }
        let started = std::time::Instant::now();
        let reader = ctx.reader(self.state, spec).await;
        let taken = self.state.lock().begin_full_sync();
        tracing::info!(credstashsync = %name, trigger = trigger.as_str(), table = %spec.table, "full sync");
        let cluster = ctx.cluster(self.css);
        let engine = Engine::new(&cluster, &ctx.metrics, name, spec);
        let result = tokio::time::timeout(
            spec.sync_timeout,
            engine.full_sync(&reader, read_not_before),
        )
        .await;
        self.start_stream(opened);
        if !ctx.still_exists(self.css) {
            self.state.lock().hand_back(taken);
            tracing::info!(credstashsync = %name, "full sync abandoned: the CredstashSync was deleted while it ran");
            return Ok(previous.clone());
        }
        let generation = self.css.meta().generation;
        let Ok((outcome, snapshot)) = result else {
            let retry_in = self.state.lock().full_sync_failed(taken, Instant::now());
            let elapsed = started.elapsed();
            return Err(self.timed_out(trigger, previous, elapsed, retry_in).await);
        };
        let now = Utc::now();
        let outcome = SyncOutcome {
            trigger: Some(trigger),
            finished_at: Some(now),
            duration: started.elapsed(),
            ..outcome
        };
        record_sync_metrics(ctx, name, &outcome, now);
        ctx.rollouts
            .secrets_changed(name, spec.rollout, data_changed(&outcome));
        let failed = match snapshot {
            Some(snapshot) if outcome.cluster_error.is_none() => {
                let retry = snapshot.names_to_retry(engine.scope());
                let mut state = self.state.lock();
                let manual = trigger == SyncTrigger::Manual;
                state.full_sync_done(&outcome, snapshot, now, manual);
                state.retry_names(retry, Instant::now());
                None
            }
            _ => Some(self.state.lock().full_sync_failed(taken, Instant::now())),
        };
        crate::allocator::release_freed_memory();
        let status =
            report::status_after_sync(previous, &outcome, generation, resync_requested, now);
        for notice in report::sync_notices(&outcome) {
            ctx.publish(self.css, &notice).await;
        }
        tracing::info!(credstashsync = %name, result = outcome.result().as_str(), summary = %outcome.summary(), "full sync finished");
        let Some(retry_in) = failed else {
            return Ok(status);
        };
        // Keep what the failed sync learned in status, then retry with backoff.
        ctx.write_status(self.css, self.state, &status).await?;
        let reason = outcome.table_error.or(outcome.cluster_error);
        Err(Error::SyncFailed {
            name: name.to_owned(),
            reason: reason.unwrap_or_default(),
            retry_in,
        })
    }

    /// Tells why the stream made a full sync necessary.
    async fn report_stream_gap(&self) {
        let why = self.state.lock().stream_gap().map(str::to_owned);
        let notice = match why {
            Some(why) => Notice::warning(
                reason::STREAM_GAP,
                "Sync",
                format!("{why}: running a full sync so that no change is missed"),
            ),
            None => Notice::normal(
                reason::STREAMING,
                "Sync",
                "a DynamoDB stream is now available: a full sync runs before following it".into(),
            ),
        };
        tracing::info!(credstashsync = %self.name, note = %notice.note, "full sync for the stream");
        self.ctx.publish(self.css, &notice).await;
    }

    fn start_stream(&self, opened: Option<Opened>) {
        let Some(opened) = opened else { return };
        let (link, health) = match opened {
            Opened::Follower(follower) => {
                let wake = self.ctx.wake.clone();
                let key = StreamKey::of(self.spec);
                let link = StreamLink::spawn(key, *follower, self.spec.wait_time, move || {
                    let _ = wake.unbounded_send(());
                });
                let health = link.health();
                (Some(link), health)
            }
            Opened::Disabled => (None, StreamHealth::Disabled),
            Opened::Failed(reason) => (None, StreamHealth::Failed(reason)),
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
        self.state.lock().stream_started(link, health);
    }

    async fn timed_out(
        &self,
        trigger: SyncTrigger,
        previous: &CredstashSyncStatus,
        elapsed: Duration,
        retry_in: Duration,
    ) -> Error {
        let (ctx, name, spec) = (self.ctx, self.name, self.spec);
        ctx.metrics
            .sync(name)
            .record_sync(trigger, SyncResult::Timeout, elapsed);
        let status = report::status_timed_out(
            previous,
            spec.sync_timeout,
            self.css.meta().generation,
            Utc::now(),
        );
        if let Err(err) = ctx.write_status(self.css, self.state, &status).await {
            return err;
        }
        let note = format!(
            "sync did not finish within {}s and was cancelled",
            spec.sync_timeout.as_secs()
        );
        let notice = Notice::warning(reason::SYNC_TIMEOUT, "Sync", note.clone());
        ctx.publish(self.css, &notice).await;
        Error::SyncFailed {
            name: name.to_owned(),
            reason: note,
            retry_in,
        }
    }

    /// Applies what is pending from the snapshot: names the stream touched
    /// are read again, then every pending Secret is planned whole. Anything
    /// that could not be applied stays pending (retried with backoff).
    /// Returns when stream changes were applied
    /// (`status.stream.lastAppliedTime`; repairs alone do not move it).
    async fn pending(&self) -> Option<DateTime<Utc>> {
        let (ctx, name, spec) = (self.ctx, self.name, self.spec);
        let (mut work, mut snapshot) = self.state.lock().take_pending()?;
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
            self.state.lock().defer_names(deferred.clone());
        }
        let reader = if names.is_empty() {
            None
        } else {
            Some(ctx.reader(self.state, spec).await)
        };
        let cluster = ctx.cluster(self.css);
        let engine = Engine::new(&cluster, &ctx.metrics, name, spec);
        let run = async {
            let mut unread = PendingWork::default();
            // Names whose re-read is still to come: their Secrets are not
            // pruned from the older snapshot.
            let mut waiting = deferred.clone();
            if let Some(reader) = &reader {
                match engine.refresh_names(reader, &mut snapshot, &names).await {
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
            let outcome = engine.apply_secrets(&snapshot, &targets, &waiting).await;
            (unread, outcome)
        };
        let result = tokio::time::timeout(spec.sync_timeout, run).await;
        if !ctx.still_exists(self.css) {
            tracing::info!(credstashsync = %name, "pending changes abandoned: the CredstashSync was deleted while they were applied");
            return None;
        }
        let now = Instant::now();
        let Ok((unread, outcome)) = result else {
            tracing::warn!(credstashsync = %name, "applying pending changes timed out; they stay pending");
            let mut back = work;
            back.names = names;
            back.changes = changes;
            self.state.lock().pending_applied(snapshot, back, None, now);
            if reader.is_some() {
                ctx.metrics
                    .sync(name)
                    .record_stream_apply(SyncResult::Timeout);
            }
            return None;
        };
        let failing = snapshot.failed_names(engine.scope());
        let repaired = repaired_secrets(&work, &outcome);
        let not_repaired =
            data_changed(&outcome).filter(|s| work.secrets.get(*s) != Some(&Cause::Drift));
        ctx.rollouts
            .secrets_changed(name, spec.rollout, not_repaired);
        let read_ok = unread.is_empty();
        // Names that failed for a reason that may pass are read again, with
        // the backoff of a failed run.
        let mut unread = unread;
        unread.names.extend(snapshot.names_to_retry(engine.scope()));
        self.state
            .lock()
            .pending_applied(snapshot, unread, Some(&outcome), now);
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
        self.report_pending(&outcome, &repaired).await;
        let streamed = reader.is_some() && read_ok;
        (streamed && !outcome.changed_keys.is_empty()).then(Utc::now)
    }

    async fn report_pending(&self, outcome: &SyncOutcome, repaired: &[(SecretRef, Vec<String>)]) {
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

/// The Secrets whose data the sync changed: a write of metadata only (a
/// `secretMetadata` edit) starts no rollout, even when the digest differs
/// from the pod template's because the Secret was re-created since (its uid
/// is in the digest).
fn data_changed(outcome: &SyncOutcome) -> impl Iterator<Item = &SecretRef> {
    outcome
        .changed_keys
        .iter()
        .filter(|(_, keys)| !keys.is_empty())
        .map(|(secret, _)| secret)
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
    state: &SharedState,
    status: &mut CredstashSyncStatus,
    generation: Option<i64>,
) {
    let Some(health) = state.lock().stream_health().cloned() else {
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
