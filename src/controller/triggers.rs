//! Why a CredstashSync is synced now, and when it is looked at again: pure
//! decisions over its spec/status and what this process remembers of it.
//! Every sync and requeue decision of the reconciler is made here:
//!
//! - [`decide`]: the action (a full sync and its trigger, pending work, or
//!   nothing), the next scheduled look, a deferred manual resync;
//! - [`Decision::opens_stream`] and [`Decision::stream_opened`]: a stream is
//!   opened before a full sync or when its periodic check is due, and a
//!   stream newly opened makes a full sync (`StreamGap`) before it is
//!   followed;
//! - [`next_look`]: the requeue after a reconcile (pending work left, the
//!   stream check, failed work's backoff);
//! - [`after_error`]: the requeue after a reconcile that failed;
//! - [`Backoff`]: the waits of failed full syncs, pending work and status
//!   writes.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::state::Memory;
use super::Error;
use crate::crd::CronSchedule;

/// Waits that double after each consecutive failure: `min`, `2 min`, ...,
/// at most `max` (no jitter: one operator, a few CredstashSyncs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// The wait after `failures` consecutive failures (at least one).
    pub fn after(&self, failures: u32) -> Duration {
        let steps = failures.saturating_sub(1).min(32) as usize;
        ExponentialBuilder::new()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .nth(steps)
            .unwrap_or(self.max)
    }
}

/// Failed full syncs (and status writes): 5 s, 10 s, 20 s ... at most 5 minutes.
pub const FULL_SYNC_BACKOFF: Backoff = Backoff {
    min: Duration::from_secs(5),
    max: Duration::from_secs(300),
};

/// Failed pending applies: 1 s, 2 s, 4 s ... at most 1 minute (they need no
/// table read, so they are cheap to retry).
pub const PENDING_BACKOFF: Backoff = Backoff {
    min: Duration::from_secs(1),
    max: Duration::from_secs(60),
};

/// How soon a reconcile that raced a change of its object runs again.
const STALE_OBJECT_RETRY: Duration = Duration::from_secs(1);
/// How soon pending work that did not fit in one run continues.
const MORE_PENDING: Duration = Duration::from_millis(10);
/// The earliest look at a retry that is due.
const RETRY_FLOOR: Duration = Duration::from_millis(100);

/// What the reconciler knows when it decides.
#[derive(Debug, Clone)]
pub struct TriggerInputs<'a> {
    pub now: DateTime<Utc>,
    /// `metadata.generation` and `status.observedGeneration`.
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    /// The resync annotation's value, and the last value a sync handled.
    pub resync_requested: Option<&'a str>,
    pub last_resync_handled: Option<&'a str>,
    /// When this process last ran a full sync of this CredstashSync (`None`:
    /// not yet, so start-up).
    pub last_full_sync: Option<DateTime<Utc>>,
    /// When this process last ran a manual resync.
    pub last_manual_resync: Option<DateTime<Utc>>,
    pub schedule: &'a CronSchedule,
    pub min_resync_interval: Duration,
    /// The previous sync failed or timed out and is due for a retry.
    pub retry_due: bool,
    /// The previous sync failed and its retry backoff has not run out: only
    /// a spec change or a manual resync may sync before then.
    pub backing_off: bool,
    /// The stream reported a gap (trimmed data, replaced stream).
    pub stream_gap: bool,
    /// Work is pending and due: stream changes, Secrets of a namespace that
    /// appeared, drift to repair, failed writes to retry.
    pub pending_due: bool,
}

/// Why a full sync runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncTrigger {
    /// First sync after the operator started.
    Startup,
    /// The CredstashSync was created or its spec changed.
    SpecChange,
    /// Stream data was trimmed or lost; a full sync closes the gap
    /// (ordinary stream records are counted by
    /// [`SyncMetrics::record_stream_apply`](crate::metrics::SyncMetrics::record_stream_apply),
    /// not as syncs).
    StreamGap,
    /// The cron schedule fired.
    Schedule,
    /// The resync annotation changed.
    Manual,
    /// A failed or timed-out sync is retried.
    Retry,
}

impl SyncTrigger {
    /// The name, as label `trigger` of `kubestash_sync_total` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::SpecChange => "spec_change",
            Self::StreamGap => "stream_gap",
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Retry => "retry",
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read the whole table and apply everything.
    FullSync(SyncTrigger),
    /// Apply the pending work from the table snapshot (re-reading only the
    /// names the stream touched).
    ApplyPending,
    /// Nothing to do now.
    Idle,
}

/// The decision: an action, when to look again, and a manual resync that
/// had to wait for `minResyncInterval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// Requeue after this long at the latest (next schedule or deferred resync).
    pub requeue_after: Duration,
    /// A manual resync request deferred until this time (reported, not dropped).
    pub deferred_resync_until: Option<DateTime<Utc>>,
}

impl Decision {
    /// Whether a reconcile that follows no stream opens one now: before a
    /// full sync (its iterators must be open before the table is read, so
    /// that no change falls between the two), or when the periodic check
    /// is due.
    pub fn opens_stream(&self, check_due: bool) -> bool {
        matches!(self.action, Action::FullSync(_)) || check_due
    }

    /// A stream was opened: a full sync runs before it is followed (the
    /// table may have changed while none was), unless one runs anyway.
    pub fn stream_opened(&mut self) {
        if !matches!(self.action, Action::FullSync(_)) {
            self.action = Action::FullSync(SyncTrigger::StreamGap);
        }
    }
}

/// How soon to reconcile again after a reconcile that decided `decided`
/// and left `memory` at `now`: at once while pending work is due (a run
/// left some for the next); no later than the periodic stream check
/// (`check_interval`) while no stream is followed, or than a failed full
/// sync or pending run is due (a reconcile triggered meanwhile replaces the
/// controller's own retry schedule).
pub fn next_look(
    decided: Duration,
    memory: &Memory,
    check_interval: Duration,
    now: Instant,
) -> Duration {
    if memory.pending_due {
        return MORE_PENDING;
    }
    let mut next = decided;
    if !memory.stream_live {
        next = next.min(check_interval);
    }
    for at in memory.retries_due.into_iter().flatten() {
        next = next.min(at.saturating_duration_since(now).max(RETRY_FLOOR));
    }
    next
}

/// How soon to reconcile again after a reconcile failed with `error`: a
/// race with a change of the object at once (the watch event on its way
/// reconciles too), a failed sync or status write when its backoff says,
/// anything else after the first step of a full sync's backoff.
pub fn after_error(error: &Error) -> Duration {
    match error {
        _ if error.is_stale_object() => STALE_OBJECT_RETRY,
        Error::SyncFailed { retry_in, .. } | Error::Status { retry_in, .. } => *retry_in,
        Error::Finalizer { .. } | Error::Unnamed => FULL_SYNC_BACKOFF.after(1),
    }
}

/// Decides what a reconcile does.
pub fn decide(inputs: &TriggerInputs<'_>) -> Decision {
    let manual = manual_resync(inputs);
    let next_scheduled = inputs
        .last_full_sync
        .and_then(|at| inputs.schedule.next_after(at));
    let action = choose_action(inputs, &manual, next_scheduled);
    let deferred_resync_until = match manual {
        ManualResync::DeferredUntil(until) if !matches!(action, Action::FullSync(_)) => Some(until),
        _ => None,
    };
    let wake_at = [next_after_action(inputs, &action), deferred_resync_until]
        .into_iter()
        .flatten()
        .min();
    let requeue_after = wake_at
        .and_then(|at| (at - inputs.now).to_std().ok())
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_secs(1));
    Decision {
        action,
        requeue_after,
        deferred_resync_until,
    }
}

/// The first reason that applies, most urgent first.
fn choose_action(
    inputs: &TriggerInputs<'_>,
    manual: &ManualResync,
    next_scheduled: Option<DateTime<Utc>>,
) -> Action {
    let spec_changed = inputs.generation != inputs.observed_generation;
    let full = Action::FullSync;
    if spec_changed && inputs.last_full_sync.is_some() {
        full(SyncTrigger::SpecChange)
    } else if *manual == ManualResync::Now && inputs.backing_off {
        full(SyncTrigger::Manual)
    } else if inputs.backing_off && inputs.pending_due && inputs.last_full_sync.is_some() {
        Action::ApplyPending
    } else if inputs.backing_off {
        Action::Idle
    } else if inputs.last_full_sync.is_none() {
        full(SyncTrigger::Startup)
    } else if inputs.stream_gap {
        full(SyncTrigger::StreamGap)
    } else if *manual == ManualResync::Now {
        full(SyncTrigger::Manual)
    } else if inputs.retry_due {
        full(SyncTrigger::Retry)
    } else if next_scheduled.is_some_and(|next| next <= inputs.now) {
        full(SyncTrigger::Schedule)
    } else if inputs.pending_due {
        Action::ApplyPending
    } else {
        Action::Idle
    }
}

/// The next scheduled full sync, counting the one about to run as "now".
fn next_after_action(inputs: &TriggerInputs<'_>, action: &Action) -> Option<DateTime<Utc>> {
    let base = match action {
        Action::FullSync(_) => inputs.now,
        _ => inputs.last_full_sync.unwrap_or(inputs.now),
    };
    inputs.schedule.next_after(base)
}

#[derive(Debug, PartialEq, Eq)]
enum ManualResync {
    None,
    Now,
    DeferredUntil(DateTime<Utc>),
}

fn manual_resync(inputs: &TriggerInputs<'_>) -> ManualResync {
    let Some(requested) = inputs.resync_requested else {
        return ManualResync::None;
    };
    if inputs.last_resync_handled == Some(requested) {
        return ManualResync::None;
    }
    let interval =
        chrono::Duration::from_std(inputs.min_resync_interval).unwrap_or(chrono::Duration::MAX);
    match inputs
        .last_manual_resync
        .and_then(|last| last.checked_add_signed(interval))
    {
        Some(allowed) if allowed > inputs.now => ManualResync::DeferredUntil(allowed),
        _ => ManualResync::Now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, h, m, 0).unwrap()
    }

    fn every_3h() -> CronSchedule {
        CronSchedule::parse("0 */3 * * *").unwrap()
    }

    fn steady<'a>(schedule: &'a CronSchedule) -> TriggerInputs<'a> {
        TriggerInputs {
            now: at(10, 0),
            generation: Some(2),
            observed_generation: Some(2),
            resync_requested: None,
            last_resync_handled: None,
            last_full_sync: Some(at(9, 0)),
            last_manual_resync: None,
            schedule,
            min_resync_interval: Duration::from_secs(600),
            retry_due: false,
            backing_off: false,
            stream_gap: false,
            pending_due: false,
        }
    }

    #[test]
    fn steady_state_is_idle_until_the_next_scheduled_sync() {
        let schedule = every_3h();
        let decision = decide(&steady(&schedule));
        assert_eq!(decision.action, Action::Idle);
        assert_eq!(decision.requeue_after, Duration::from_secs(2 * 3600));
    }

    #[test]
    fn first_reconcile_in_a_process_is_a_startup_sync() {
        let schedule = every_3h();
        let inputs = TriggerInputs {
            last_full_sync: None,
            observed_generation: None,
            ..steady(&schedule)
        };
        assert_eq!(
            decide(&inputs).action,
            Action::FullSync(SyncTrigger::Startup)
        );
    }

    #[test]
    fn a_spec_change_wins_over_everything_else() {
        let schedule = every_3h();
        let inputs = TriggerInputs {
            generation: Some(3),
            pending_due: true,
            stream_gap: true,
            ..steady(&schedule)
        };
        assert_eq!(
            decide(&inputs).action,
            Action::FullSync(SyncTrigger::SpecChange)
        );
    }

    #[test]
    fn the_schedule_fires_once_its_time_has_come() {
        let schedule = every_3h();
        let inputs = TriggerInputs {
            now: at(12, 0),
            ..steady(&schedule)
        };
        let decision = decide(&inputs);
        assert_eq!(decision.action, Action::FullSync(SyncTrigger::Schedule));
        assert_eq!(
            decision.requeue_after,
            Duration::from_secs(3 * 3600),
            "next run after this one"
        );
    }

    #[test]
    fn a_new_resync_annotation_value_syncs_now() {
        let schedule = every_3h();
        let inputs = TriggerInputs {
            resync_requested: Some("1700000000"),
            last_resync_handled: Some("1600000000"),
            ..steady(&schedule)
        };
        assert_eq!(
            decide(&inputs).action,
            Action::FullSync(SyncTrigger::Manual)
        );
    }

    #[test]
    fn a_handled_resync_annotation_does_nothing() {
        let schedule = every_3h();
        let inputs = TriggerInputs {
            resync_requested: Some("1"),
            last_resync_handled: Some("1"),
            ..steady(&schedule)
        };
        assert_eq!(decide(&inputs).action, Action::Idle);
    }

    #[test]
    fn a_resync_sooner_than_the_minimum_interval_is_deferred_not_dropped() {
        let schedule = every_3h();
        let inputs = TriggerInputs {
            resync_requested: Some("2"),
            last_resync_handled: Some("1"),
            last_manual_resync: Some(at(9, 55)),
            ..steady(&schedule)
        };
        let decision = decide(&inputs);
        assert_eq!(decision.action, Action::Idle);
        assert_eq!(decision.deferred_resync_until, Some(at(10, 5)));
        assert_eq!(decision.requeue_after, Duration::from_secs(300));
        let later = TriggerInputs {
            now: at(10, 5),
            ..inputs
        };
        assert_eq!(decide(&later).action, Action::FullSync(SyncTrigger::Manual));
    }

    #[test]
    fn pending_work_applies_incrementally_and_gaps_force_a_full_sync() {
        let schedule = every_3h();
        let pending = TriggerInputs {
            pending_due: true,
            ..steady(&schedule)
        };
        assert_eq!(decide(&pending).action, Action::ApplyPending);
        let gap = TriggerInputs {
            stream_gap: true,
            ..pending
        };
        assert_eq!(
            decide(&gap).action,
            Action::FullSync(SyncTrigger::StreamGap)
        );
    }

    #[test]
    fn pending_work_is_applied_while_a_failed_full_sync_backs_off() {
        let schedule = every_3h();
        let inputs = TriggerInputs {
            backing_off: true,
            pending_due: true,
            ..steady(&schedule)
        };
        assert_eq!(decide(&inputs).action, Action::ApplyPending);
        let before_any_sync = TriggerInputs {
            last_full_sync: None,
            ..inputs
        };
        assert_eq!(decide(&before_any_sync).action, Action::Idle);
    }

    #[test]
    fn a_failed_sync_waits_for_its_backoff_even_before_the_first_success() {
        let schedule = every_3h();
        let first = TriggerInputs {
            last_full_sync: None,
            backing_off: true,
            stream_gap: true,
            ..steady(&schedule)
        };
        assert_eq!(decide(&first).action, Action::Idle);
        let manual = TriggerInputs {
            resync_requested: Some("2"),
            last_resync_handled: Some("1"),
            ..first.clone()
        };
        assert_eq!(
            decide(&manual).action,
            Action::FullSync(SyncTrigger::Manual)
        );
        let spec = TriggerInputs {
            generation: Some(3),
            last_full_sync: Some(at(9, 0)),
            ..first
        };
        assert_eq!(
            decide(&spec).action,
            Action::FullSync(SyncTrigger::SpecChange)
        );
    }

    #[test]
    fn a_stream_opens_before_a_full_sync_or_when_its_check_is_due() {
        let schedule = every_3h();
        let idle = decide(&steady(&schedule));
        assert!(!idle.opens_stream(false));
        assert!(idle.opens_stream(true));
        let startup = decide(&TriggerInputs {
            last_full_sync: None,
            ..steady(&schedule)
        });
        assert!(startup.opens_stream(false));
    }

    #[test]
    fn a_stream_newly_opened_makes_a_full_sync_first() {
        let schedule = every_3h();
        for pending_due in [false, true] {
            let mut decision = decide(&TriggerInputs {
                pending_due,
                ..steady(&schedule)
            });
            decision.stream_opened();
            assert_eq!(decision.action, Action::FullSync(SyncTrigger::StreamGap));
        }
        let mut manual = decide(&TriggerInputs {
            resync_requested: Some("2"),
            last_resync_handled: Some("1"),
            ..steady(&schedule)
        });
        manual.stream_opened();
        assert_eq!(
            manual.action,
            Action::FullSync(SyncTrigger::Manual),
            "a full sync coming anyway keeps its trigger"
        );
    }

    #[test]
    fn the_next_look_is_the_soonest_of_the_decision_the_stream_check_and_the_retries() {
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        let minute = Duration::from_secs(60);
        let quiet = Memory {
            stream_live: true,
            ..Memory::default()
        };
        assert_eq!(next_look(hour, &quiet, minute, now), hour);
        let unfollowed = Memory {
            stream_live: false,
            ..quiet
        };
        assert_eq!(next_look(hour, &unfollowed, minute, now), minute);
        let retrying = Memory {
            retries_due: [Some(now + Duration::from_secs(5)), Some(now)],
            ..quiet
        };
        assert_eq!(next_look(hour, &retrying, minute, now), RETRY_FLOOR);
        let more = Memory {
            pending_due: true,
            ..retrying
        };
        assert_eq!(next_look(hour, &more, minute, now), MORE_PENDING);
    }

    #[test]
    fn errors_map_to_requeues_and_a_failed_status_write_to_its_own_backoff() {
        let wait = Duration::from_secs(20);
        let status = Error::Status {
            name: "x".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("down", "InternalError")
                    .with_code(500)
                    .boxed(),
            ),
            retry_in: wait,
        };
        assert_eq!(after_error(&status), wait);
        let sync = Error::SyncFailed {
            name: "x".into(),
            reason: "timeout".into(),
            retry_in: Duration::from_secs(40),
        };
        assert_eq!(after_error(&sync), Duration::from_secs(40));
        let conflict = Error::Finalizer {
            name: "x".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("changed", "Conflict")
                    .with_code(409)
                    .boxed(),
            ),
        };
        assert_eq!(after_error(&conflict), STALE_OBJECT_RETRY);
        assert_eq!(after_error(&Error::Unnamed), Duration::from_secs(5));
    }

    #[test]
    fn backoffs_double_up_to_their_ceiling() {
        let waits = |backoff: Backoff| -> Vec<u64> {
            (1..=9).map(|n| backoff.after(n).as_secs()).collect()
        };
        assert_eq!(
            waits(FULL_SYNC_BACKOFF),
            vec![5, 10, 20, 40, 80, 160, 300, 300, 300]
        );
        assert_eq!(waits(PENDING_BACKOFF), vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(FULL_SYNC_BACKOFF.after(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn a_failed_sync_is_retried() {
        let schedule = every_3h();
        let inputs = TriggerInputs {
            retry_due: true,
            ..steady(&schedule)
        };
        assert_eq!(decide(&inputs).action, Action::FullSync(SyncTrigger::Retry));
    }
}
