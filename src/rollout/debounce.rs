//! Per-workload debounce: a burst of changes causes one restart, and no
//! workload is restarted twice within its debounce window.
//!
//! Steps, in order: [`RestartDebouncer::changed`] when the operator changed
//! a Secret the workload references; [`RestartDebouncer::take_due`] once
//! the wait is over; [`RestartDebouncer::restarted`] when the restart was
//! written (nothing when the digest was already right). The restart is due one window after the
//! first change of a burst (later changes of the burst do not push it back,
//! so a steady trickle cannot postpone it forever), and never less than one
//! window after the previous restart.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// A change of a Secret that a workload references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The CredstashSync whose write changed it.
    pub source: String,
    /// Its `spec.rollout.debounce`.
    pub window: Duration,
    /// When the workload was last restarted, as far as it says
    /// (`kubestash.io/restarted-at`, e.g. by an earlier leader).
    pub restarted_at: Option<Instant>,
}

/// A workload whose wait is over: check its digest now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due<K> {
    pub workload: K,
    /// The CredstashSync whose write started the wait.
    pub source: String,
    pub window: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    /// When the restart is due, and which CredstashSync asked for it.
    due: Option<(Instant, String)>,
    window: Duration,
    last_restart: Option<Instant>,
}

impl Entry {
    fn idle(&self, now: Instant) -> bool {
        self.due.is_none() && self.last_restart.is_none_or(|at| at + self.window <= now)
    }
}

/// The debounce state of every workload with a change pending or a
/// restart within its window.
#[derive(Debug)]
pub struct RestartDebouncer<K> {
    entries: BTreeMap<K, Entry>,
}

impl<K> Default for RestartDebouncer<K> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> RestartDebouncer<K> {
    /// Step 1: a Secret `workload` references was changed at `now`.
    pub fn changed(&mut self, workload: K, change: Change, now: Instant) {
        let entry = self.entries.entry(workload).or_insert(Entry {
            due: None,
            window: change.window,
            last_restart: None,
        });
        entry.last_restart = entry.last_restart.max(change.restarted_at);
        if entry.due.is_some() {
            return;
        }
        entry.window = change.window;
        let after_last = entry.last_restart.map(|at| at + change.window);
        let due = (now + change.window).max(after_last.unwrap_or(now));
        entry.due = Some((due, change.source));
    }

    /// Step 2: the workloads whose wait is over at `now` (each once).
    pub fn take_due(&mut self, now: Instant) -> Vec<Due<K>> {
        let mut due = Vec::new();
        for (workload, entry) in &mut self.entries {
            if entry.due.as_ref().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, source)) = entry.due.take() {
                    due.push(Due {
                        workload: workload.clone(),
                        source,
                        window: entry.window,
                    });
                }
            }
        }
        self.entries.retain(|_, entry| !entry.idle(now));
        due
    }

    /// Step 3: `workload` was restarted at `now`; its next restart waits a
    /// window.
    pub fn restarted(&mut self, workload: K, window: Duration, now: Instant) {
        let entry = self.entries.entry(workload).or_insert(Entry {
            due: None,
            window,
            last_restart: None,
        });
        entry.window = window;
        entry.last_restart = Some(now);
    }

    /// When the next restart is due, if any is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| e.due.as_ref().map(|(at, _)| *at))
            .min()
    }

    /// Workloads with a change pending.
    pub fn pending(&self) -> usize {
        self.entries.values().filter(|e| e.due.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(30);

    fn change(window: Duration) -> Change {
        Change {
            source: "prod".into(),
            window,
            restarted_at: None,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_burst_is_due_once_one_window_after_its_first_change() {
        let t0 = Instant::now();
        let mut d = RestartDebouncer::default();
        for i in 0..50 {
            d.changed("web", change(W), t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(d.next_due(), Some(t0 + W));
        assert!(d.take_due(t0 + secs(29)).is_empty());
        let due = d.take_due(t0 + W);
        assert_eq!(
            due,
            vec![Due {
                workload: "web",
                source: "prod".into(),
                window: W
            }]
        );
        assert!(d.take_due(t0 + secs(31)).is_empty(), "due once");
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_zero_window_is_due_at_once() {
        let t0 = Instant::now();
        let mut d = RestartDebouncer::default();
        d.changed("web", change(Duration::ZERO), t0);
        assert_eq!(d.take_due(t0).len(), 1);
    }

    #[test]
    fn no_second_restart_within_a_window_of_the_first() {
        let t0 = Instant::now();
        let mut d = RestartDebouncer::default();
        d.changed("web", change(secs(10)), t0);
        assert_eq!(d.take_due(t0 + secs(10)).len(), 1);
        d.restarted("web", secs(10), t0 + secs(10));
        // Changes right after the restart wait until the window has passed.
        d.changed("web", change(secs(10)), t0 + secs(11));
        assert_eq!(d.next_due(), Some(t0 + secs(21)));
        d.changed("web", change(secs(10)), t0 + secs(15));
        assert_eq!(d.next_due(), Some(t0 + secs(21)));
    }

    #[test]
    fn with_a_zero_window_a_change_after_a_restart_is_due_at_once() {
        let t0 = Instant::now();
        let mut d = RestartDebouncer::default();
        d.restarted("web", Duration::ZERO, t0);
        d.changed("web", change(Duration::ZERO), t0 + secs(1));
        assert_eq!(d.take_due(t0 + secs(1)).len(), 1);
    }

    #[test]
    fn a_restart_the_workload_reports_counts_as_the_last_one() {
        let t0 = Instant::now() + secs(100);
        let mut d = RestartDebouncer::default();
        let earlier = Change {
            restarted_at: Some(t0 - secs(5)),
            ..change(W)
        };
        d.changed("web", earlier, t0);
        assert_eq!(d.next_due(), Some(t0 + W), "a fresh burst waits its window");
        let mut d = RestartDebouncer::default();
        let recent = Change {
            restarted_at: Some(t0 - secs(5)),
            ..change(secs(20))
        };
        d.changed("web", recent, t0 - secs(4));
        assert_eq!(d.next_due(), Some(t0 + secs(16)));
    }

    #[test]
    fn workloads_wait_independently_and_idle_ones_are_forgotten() {
        let t0 = Instant::now();
        let mut d = RestartDebouncer::default();
        d.changed("a", change(secs(5)), t0);
        d.changed("b", change(secs(10)), t0 + secs(1));
        assert_eq!(d.next_due(), Some(t0 + secs(5)));
        assert_eq!(d.take_due(t0 + secs(5)).len(), 1);
        assert_eq!(d.next_due(), Some(t0 + secs(11)));
        assert_eq!(d.take_due(t0 + secs(11))[0].workload, "b");
        assert!(
            d.entries.is_empty(),
            "nothing restarted: nothing to remember"
        );
        d.restarted("a", secs(5), t0 + secs(12));
        d.take_due(t0 + secs(16));
        assert!(d.entries.contains_key("a"));
        d.take_due(t0 + secs(17));
        assert!(d.entries.is_empty(), "the window passed");
    }
}
