//! Why a CredstashSync is synced now, or when it next will be: a pure
//! decision over its spec/status and what this process remembers of it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::crd::CronSchedule;

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
    fn a_failed_sync_is_retried() {
        let schedule = every_3h();
        let inputs = TriggerInputs {
            retry_due: true,
            ..steady(&schedule)
        };
        assert_eq!(decide(&inputs).action, Action::FullSync(SyncTrigger::Retry));
    }
}
