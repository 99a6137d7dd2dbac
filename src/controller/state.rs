//! What the operator keeps of one CredstashSync between reconciles, and the
//! steps of its life: a full sync, the changes pending since (stream
//! records, namespaces that appeared, drift, failed writes), their
//! application, the retries of both, the stream it follows and the status
//! it last wrote. Pure bookkeeping: no I/O here; the reconcile does the I/O
//! and tells the state what happened, and the watches mark work pending.
//!
//! Each CredstashSync has one [`SharedState`]: its reconcile (one at a time)
//! and the watches lock it briefly, never across an await.
//!
//! Nothing pending is ever dropped: work taken for a sync is either done
//! or handed back, and a failed write keeps its Secret pending, retried
//! with backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::streaming::{StreamHealth, StreamKey, StreamLink};
use super::triggers::{Backoff, FULL_SYNC_BACKOFF, PENDING_BACKOFF};
use crate::crd::CredstashSyncStatus;
use crate::credstash::{TableLocation, TableReader};
use crate::mapping::SecretRef;
use crate::secrets::ledger::is_older;
use crate::stream::Changes;
use crate::sync::{SyncOutcome, TableSnapshot};

/// The state of one CredstashSync, shared by its reconcile and the watches.
pub type SharedState = Arc<Mutex<SyncState>>;

/// Why a Secret must be planned again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// The stream changed names that map into it.
    Stream,
    /// Its namespace appeared.
    Namespace,
    /// Somebody else changed or deleted it: drift, to repair.
    Drift,
    /// Its last write failed.
    Retry,
    /// A CredstashSync that owned keys in it was deleted: its keys may pass
    /// to this one (a conflict it reported may be over).
    OwnerGone,
}

/// Work waiting to be applied from the snapshot.
#[derive(Debug, Default)]
pub struct PendingWork {
    /// Credstash names the stream touched, to read again.
    pub names: BTreeSet<String>,
    /// Secrets to plan again, with the most telling cause.
    pub secrets: BTreeMap<SecretRef, Cause>,
    /// The stream batches behind `names` (record counts and lag).
    pub changes: Option<Changes>,
}

impl PendingWork {
    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.secrets.is_empty()
    }

    /// Adds a stream batch.
    pub fn add_changes(&mut self, changes: Changes) {
        self.names.extend(changes.names.iter().cloned());
        Changes::merge_into(&mut self.changes, changes);
    }

    /// Marks `secret` to plan again. A Secret that is also pending for a
    /// table change is not reported as repaired: the other causes outrank
    /// drift.
    pub fn mark(&mut self, secret: SecretRef, cause: Cause) {
        let entry = self.secrets.entry(secret).or_insert(cause);
        if *entry == Cause::Drift {
            *entry = cause;
        }
    }

    /// Folds `other` (older work handed back) into this one.
    pub fn merge(&mut self, other: PendingWork) {
        self.names.extend(other.names);
        for (secret, cause) in other.secrets {
            self.mark(secret, cause);
        }
        if let Some(changes) = other.changes {
            Changes::merge_into(&mut self.changes, changes);
        }
    }
}

/// Consecutive failures and when the next attempt may run.
#[derive(Debug, Default, Clone, Copy)]
struct Retry {
    failures: u32,
    not_before: Option<Instant>,
}

impl Retry {
    /// Records a failure; returns how long to wait.
    fn failed(&mut self, now: Instant, backoff: Backoff) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = backoff.after(self.failures);
        self.not_before = Some(now + wait);
        wait
    }

    /// Whether the last attempt failed.
    fn failing(&self) -> bool {
        self.failures > 0
    }

    /// Whether a failed attempt is still waiting out its backoff.
    fn backing_off(&self, now: Instant) -> bool {
        self.failing() && self.not_before.is_some_and(|at| at > now)
    }

    /// When the next attempt is due, if one failed.
    fn due_at(&self) -> Option<Instant> {
        self.not_before.filter(|_| self.failing())
    }
}

/// The stream of a CredstashSync as the reconciler sees it.
#[derive(Default)]
struct StreamSlot {
    link: Option<StreamLink>,
    health: Option<StreamHealth>,
    checked_at: Option<Instant>,
    /// Why the stream needs a full sync (data lost, stream replaced).
    gap: Option<String>,
}

/// The status this process last decided for its CredstashSync, until the
/// cache has it.
enum OwnStatus {
    /// Written; the resourceVersion the API server answered with.
    Written(Option<String>, CredstashSyncStatus),
    /// The write failed: decisions build on it, and it is written again.
    Unwritten(CredstashSyncStatus),
}

/// What this process remembers of a CredstashSync at one instant, as the
/// decisions of [`super::triggers`] need it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// When this process last ran a full sync (`None`: not yet).
    pub last_full_sync: Option<DateTime<Utc>>,
    /// When this process last ran a manual resync.
    pub last_manual_resync: Option<DateTime<Utc>>,
    /// The last full sync failed and its backoff has run out.
    pub retry_due: bool,
    /// The last full sync failed and its backoff has not run out.
    pub backing_off: bool,
    /// The stream reported a gap.
    pub stream_gap: bool,
    /// Pending work may run now.
    pub pending_due: bool,
    /// A stream follower runs.
    pub stream_live: bool,
    /// When a failed full sync and failed pending work are due again.
    pub retries_due: [Option<Instant>; 2],
}

/// What this process remembers of one CredstashSync.
#[derive(Default)]
pub struct SyncState {
    /// The table reader, kept for its KMS cache while the location holds.
    reader: Option<(TableLocation, Arc<TableReader>)>,
    /// Every name's latest entry, from the last full sync plus stream reads.
    snapshot: Option<TableSnapshot>,
    pending: PendingWork,
    /// Namespaces that keys wait for.
    waiting_namespaces: BTreeSet<String>,
    /// Existing namespaces the namespace selector did not select at the
    /// last look.
    unselected_namespaces: BTreeSet<String>,
    last_full_sync: Option<DateTime<Utc>>,
    last_manual_resync: Option<DateTime<Utc>>,
    /// Full syncs that could not read the table or the cluster.
    full_sync_retry: Retry,
    /// Pending applies that failed.
    pending_retry: Retry,
    /// Status writes that failed.
    status_retry: Retry,
    /// The resync request whose deferral was last reported.
    deferred_notice_for: Option<String>,
    stream: StreamSlot,
    own_status: Option<OwnStatus>,
}

impl SyncState {
    /// Whether a full sync has given this state a snapshot of the table.
    pub fn has_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Whether a credstash name maps into `secret` in the snapshot.
    pub fn maps_into(&self, secret: &SecretRef) -> bool {
        self.snapshot
            .as_ref()
            .is_some_and(|s| s.has_entries_of(secret))
    }

    /// How many Secrets wait to be planned again (for status and metrics).
    pub fn pending_secrets(&self) -> usize {
        self.pending.secrets.len()
    }

    /// Whether pending work may run now.
    pub fn pending_due(&self, now: Instant) -> bool {
        !self.pending.is_empty() && self.has_snapshot() && !self.pending_retry.backing_off(now)
    }

    /// When pending work is next due, if it is waiting out a backoff.
    fn pending_due_at(&self) -> Option<Instant> {
        (!self.pending.is_empty())
            .then(|| self.pending_retry.due_at())
            .flatten()
    }

    /// What the decisions of a reconcile at `now` need to know.
    pub fn memory(&self, now: Instant) -> Memory {
        let backing_off = self.full_sync_retry.backing_off(now);
        Memory {
            last_full_sync: self.last_full_sync,
            last_manual_resync: self.last_manual_resync,
            retry_due: self.full_sync_retry.failing() && !backing_off,
            backing_off,
            stream_gap: self.stream.gap.is_some(),
            pending_due: self.pending_due(now),
            stream_live: self.stream.link.as_ref().is_some_and(StreamLink::is_live),
            retries_due: [self.full_sync_retry.due_at(), self.pending_due_at()],
        }
    }

    /// The reader of `location`, if this state has it.
    pub fn reader_for(&self, location: &TableLocation) -> Option<Arc<TableReader>> {
        let (known, reader) = self.reader.as_ref()?;
        (known == location).then(|| reader.clone())
    }

    /// The table's location changed (or was never read): what was read is
    /// stale, `reader` reads from now on.
    pub fn reader_opened(&mut self, location: TableLocation, reader: Arc<TableReader>) {
        self.snapshot = None;
        self.reader = Some((location, reader));
    }

    /// Takes in what the stream follower reported; drops a follower whose
    /// stream the spec no longer asks for, or that has ended.
    pub fn take_stream_news(&mut self, key: &StreamKey) {
        if self
            .stream
            .link
            .as_ref()
            .is_some_and(|link| link.key != *key)
        {
            self.stream.link = None;
        }
        let Some(link) = &self.stream.link else {
            return;
        };
        let news = link.take();
        if let Some(changes) = news.changes {
            self.pending.add_changes(changes);
        }
        if news.gap.is_some() {
            self.stream.gap = news.gap;
        }
        self.stream.health = Some(link.health());
        if !link.is_live() {
            self.stream.link = None;
        }
    }

    /// Whether the stream (or its absence) was last checked `interval` or
    /// more before `now`.
    pub fn stream_check_due(&self, now: Instant, interval: Duration) -> bool {
        self.stream
            .checked_at
            .is_none_or(|at| now.saturating_duration_since(at) >= interval)
    }

    /// The stream was checked (opened, or found disabled or failing).
    pub fn stream_checked(&mut self, now: Instant) {
        self.stream.checked_at = Some(now);
    }

    /// A stream follower was started (`link`), or none could be: `health`
    /// says why.
    pub fn stream_started(&mut self, link: Option<StreamLink>, health: StreamHealth) {
        if link.is_some() {
            self.stream.link = link;
        }
        self.stream.health = Some(health);
    }

    /// The spec no longer validates: the follower stops.
    pub fn stream_stopped(&mut self) {
        self.stream.link = None;
    }

    /// Why the stream made a full sync necessary, if it did.
    pub fn stream_gap(&self) -> Option<&str> {
        self.stream.gap.as_deref()
    }

    /// The stream's health, once a follower was started or failed to.
    pub fn stream_health(&self) -> Option<&StreamHealth> {
        self.stream.health.as_ref()
    }

    /// Namespaces that keys waited for and that now can receive Secrets:
    /// their names are read again before they are written (the snapshot may
    /// be older than a delete or a new version still on its way through the
    /// stream), and their Secrets become pending. Returns the namespaces.
    pub fn namespaces_appeared(&mut self, active: &BTreeSet<String>) -> BTreeSet<String> {
        let Some(snapshot) = &self.snapshot else {
            return BTreeSet::new();
        };
        let appeared: BTreeSet<String> = self
            .waiting_namespaces
            .intersection(active)
            .cloned()
            .collect();
        for namespace in &appeared {
            let (names, secrets) = snapshot.names_in(namespace);
            self.pending.names.extend(names);
            for secret in secrets {
                self.pending.mark(secret, Cause::Namespace);
            }
            self.waiting_namespaces.remove(namespace);
        }
        appeared
    }

    /// Namespaces that the namespace selector now selects and did not, or
    /// no longer selects (`unselected`, among the `active` ones), since the
    /// last look: their Secrets become pending, and the names of newly
    /// selected ones are read again (the snapshot may be older than a
    /// change). Returns those namespaces.
    pub fn selection_changed(
        &mut self,
        unselected: &BTreeSet<String>,
        active: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let Some(snapshot) = &self.snapshot else {
            return BTreeSet::new();
        };
        let changed: BTreeSet<String> = self
            .unselected_namespaces
            .symmetric_difference(unselected)
            .filter(|namespace| active.contains(*namespace))
            .cloned()
            .collect();
        for namespace in &changed {
            let (names, secrets) = snapshot.names_in(namespace);
            if !unselected.contains(namespace) {
                self.pending.names.extend(names);
            }
            for secret in secrets {
                self.pending.mark(secret, Cause::Namespace);
            }
        }
        self.unselected_namespaces = unselected.clone();
        changed
    }

    /// Names taken for a run that did not fit in it: pending again, due at
    /// once.
    pub fn defer_names(&mut self, names: BTreeSet<String>) {
        self.pending.names.extend(names);
    }

    /// Names that failed to open for a reason that may pass: read again
    /// after the backoff of a failed apply, until they open or fail for
    /// good (their Secrets keep the last good values, unpruned, meanwhile).
    pub fn retry_names(&mut self, names: BTreeSet<String>, now: Instant) {
        if names.is_empty() {
            return;
        }
        self.pending.names.extend(names);
        self.pending_retry.failed(now, PENDING_BACKOFF);
    }

    /// Somebody else changed or deleted `secret`.
    pub fn drifted(&mut self, secret: SecretRef) {
        self.pending.mark(secret, Cause::Drift);
    }

    /// A deleted CredstashSync owned keys in `secret`: plan it again, so
    /// that its keys pass to this one if it maps into the Secret.
    pub fn owner_gone(&mut self, secret: &SecretRef) {
        if self.maps_into(secret) {
            self.pending.mark(secret.clone(), Cause::OwnerGone);
        }
    }

    /// The watch cache was listed again after a gap: every Secret of the
    /// snapshot is checked, since changes in the gap were not seen.
    pub fn recheck_all(&mut self) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        for secret in snapshot.all_secrets() {
            self.pending.mark(secret, Cause::Drift);
        }
    }

    /// A full sync starts: it covers all pending work, which is taken (and
    /// handed back by [`SyncState::full_sync_failed`] or
    /// [`SyncState::hand_back`] if the sync does not complete).
    pub fn begin_full_sync(&mut self) -> PendingWork {
        self.stream.gap = None;
        std::mem::take(&mut self.pending)
    }

    /// A full sync read the table and planned (at `now`, `manual` or not):
    /// keep its snapshot, keep the Secrets whose writes failed pending.
    pub fn full_sync_done(
        &mut self,
        outcome: &SyncOutcome,
        snapshot: TableSnapshot,
        now: DateTime<Utc>,
        manual: bool,
    ) {
        self.snapshot = Some(snapshot);
        self.waiting_namespaces = outcome.waiting_namespaces.clone();
        self.unselected_namespaces = outcome.unselected_namespaces.clone();
        self.last_full_sync = Some(now);
        if manual {
            self.last_manual_resync = Some(now);
        }
        self.full_sync_retry = Retry::default();
        self.keep_failed_writes(outcome);
    }

    /// A full sync could not read the table or the cluster, or timed out:
    /// the work it took is pending again. Returns how long until it is
    /// retried.
    pub fn full_sync_failed(&mut self, taken: PendingWork, now: Instant) -> Duration {
        self.pending.merge(taken);
        self.full_sync_retry.failed(now, FULL_SYNC_BACKOFF)
    }

    /// A full sync was abandoned (its CredstashSync was deleted while it
    /// ran): the work it took is pending again, and nothing failed.
    pub fn hand_back(&mut self, taken: PendingWork) {
        self.pending.merge(taken);
    }

    /// Takes the pending work and the snapshot to apply it from; `None`
    /// without a snapshot (the next full sync covers the work).
    pub fn take_pending(&mut self) -> Option<(PendingWork, TableSnapshot)> {
        let snapshot = self.snapshot.take()?;
        Some((std::mem::take(&mut self.pending), snapshot))
    }

    /// Pending work was applied (`outcome`), or could not be (`unread`:
    /// names whose re-read failed, handed back with the snapshot).
    pub fn pending_applied(
        &mut self,
        snapshot: TableSnapshot,
        unread: PendingWork,
        outcome: Option<&SyncOutcome>,
        now: Instant,
    ) {
        self.snapshot = Some(snapshot);
        let failed = !unread.is_empty()
            || outcome.is_some_and(|o| !o.failed_secrets.is_empty() || o.cluster_error.is_some());
        self.pending.merge(unread);
        if let Some(outcome) = outcome {
            self.waiting_namespaces
                .extend(outcome.waiting_namespaces.iter().cloned());
            self.keep_failed_writes(outcome);
        }
        if failed {
            self.pending_retry.failed(now, PENDING_BACKOFF);
        } else {
            self.pending_retry = Retry::default();
        }
    }

    fn keep_failed_writes(&mut self, outcome: &SyncOutcome) {
        for secret in &outcome.failed_secrets {
            self.pending.mark(secret.clone(), Cause::Retry);
        }
    }

    /// Whether the deferral of resync request `requested` is to be
    /// reported: the first time only.
    pub fn first_deferral_of(&mut self, requested: &str) -> bool {
        let before = self.deferred_notice_for.replace(requested.to_owned());
        before.as_deref() != Some(requested)
    }

    /// Records the status a write stored (`resource_version`: of the object
    /// the API server returned).
    pub fn status_written(
        &mut self,
        resource_version: Option<String>,
        status: CredstashSyncStatus,
    ) {
        self.own_status = Some(OwnStatus::Written(resource_version, status));
        self.status_retry = Retry::default();
    }

    /// Writing `status` failed: decisions build on it meanwhile, and it is
    /// written again. Returns how long until the next attempt.
    pub fn status_unwritten(&mut self, status: CredstashSyncStatus, now: Instant) -> Duration {
        self.own_status = Some(OwnStatus::Unwritten(status));
        self.status_retry.failed(now, FULL_SYNC_BACKOFF)
    }

    /// Whether `status` still has to be written: it differs from `current`
    /// (see [`SyncState::current_status`]), or its last write failed.
    pub fn needs_write(
        &self,
        status: &CredstashSyncStatus,
        current: Option<&CredstashSyncStatus>,
    ) -> bool {
        current != Some(status) || matches!(self.own_status, Some(OwnStatus::Unwritten(_)))
    }

    /// The status to decide and build on: the cached object's, unless this
    /// process wrote a newer one the cache has not delivered yet, or failed
    /// to write one (a decision on the older status would, for one, take the
    /// sync just made for a spec change and run it again).
    pub fn current_status(
        &mut self,
        cached_version: Option<&str>,
        cached: Option<&CredstashSyncStatus>,
    ) -> Option<CredstashSyncStatus> {
        match &self.own_status {
            Some(OwnStatus::Unwritten(status)) => Some(status.clone()),
            Some(OwnStatus::Written(version, status))
                if is_older(cached_version, version.as_deref()) =>
            {
                Some(status.clone())
            }
            _ => {
                self.own_status = None;
                cached.cloned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credstash::Entry;

    fn snapshot(names: &[&str]) -> TableSnapshot {
        let read = crate::credstash::TableRead::of_entries(names.iter().map(|n| Entry::opened(n)));
        TableSnapshot::new(Arc::new(read))
    }

    fn outcome(waiting: &[&str], failed: &[SecretRef]) -> SyncOutcome {
        SyncOutcome {
            waiting_namespaces: waiting.iter().map(|n| n.to_string()).collect(),
            failed_secrets: failed.iter().cloned().collect(),
            ..Default::default()
        }
    }

    fn synced(names: &[&str], waiting: &[&str]) -> SyncState {
        let mut state = SyncState::default();
        let _ = state.begin_full_sync();
        state.full_sync_done(&outcome(waiting, &[]), snapshot(names), Utc::now(), false);
        state
    }

    fn app() -> SecretRef {
        SecretRef::new("ns", "app")
    }

    fn status_of_generation(generation: i64) -> CredstashSyncStatus {
        CredstashSyncStatus {
            observed_generation: Some(generation),
            ..Default::default()
        }
    }

    #[test]
    fn a_status_write_the_cache_has_not_seen_is_built_on() {
        let mut state = SyncState::default();
        let cached = CredstashSyncStatus::default();
        state.status_written(Some("12".into()), status_of_generation(1));
        let current = state.current_status(Some("11"), Some(&cached));
        assert_eq!(current, Some(status_of_generation(1)));
        let current = state.current_status(Some("12"), Some(&status_of_generation(1)));
        assert_eq!(current, Some(status_of_generation(1)));
        assert!(
            state.own_status.is_none(),
            "forgotten once the cache has it"
        );
    }

    #[test]
    fn a_newer_cached_object_wins_over_an_older_write() {
        let mut state = SyncState::default();
        state.status_written(Some("12".into()), status_of_generation(1));
        let current = state.current_status(Some("15"), Some(&status_of_generation(2)));
        assert_eq!(current, Some(status_of_generation(2)));
        state.status_written(Some("not-a-number".into()), status_of_generation(3));
        let current = state.current_status(Some("16"), None);
        assert_eq!(
            current, None,
            "versions that do not compare: the cache wins"
        );
    }

    #[test]
    fn nothing_is_pending_after_a_clean_full_sync() {
        let state = synced(&["ns/app/A"], &[]);
        assert!(!state.pending_due(Instant::now()));
        assert_eq!(state.pending_secrets(), 0);
        assert!(state.maps_into(&app()));
        assert!(!state.maps_into(&SecretRef::new("ns", "other")));
    }

    #[test]
    fn a_failed_write_stays_pending_and_is_retried_with_backoff() {
        let mut state = SyncState::default();
        let _ = state.begin_full_sync();
        state.full_sync_done(
            &outcome(&[], &[app()]),
            snapshot(&["ns/app/A"]),
            Utc::now(),
            false,
        );
        let now = Instant::now();
        assert!(state.pending_due(now));
        let (work, snap) = state.take_pending().expect("a snapshot");
        assert_eq!(work.secrets.get(&app()), Some(&Cause::Retry));
        state.pending_applied(
            snap,
            PendingWork::default(),
            Some(&outcome(&[], &[app()])),
            now,
        );
        assert_eq!(state.pending_secrets(), 1, "still pending");
        assert!(!state.pending_due(now), "backing off");
        assert!(state.pending_due(now + Duration::from_secs(2)));
        let (_work, snap) = state.take_pending().expect("a snapshot");
        state.pending_applied(snap, PendingWork::default(), Some(&outcome(&[], &[])), now);
        assert_eq!(state.pending_secrets(), 0);
        assert!(!state.pending_retry.failing());
    }

    #[test]
    fn a_failed_status_write_is_built_on_and_written_again_and_no_failed_sync() {
        let mut state = synced(&["ns/app/A"], &[]);
        let now = Instant::now();
        let cached = status_of_generation(1);
        let wanted = status_of_generation(2);
        assert!(state.needs_write(&wanted, Some(&cached)));
        assert_eq!(state.status_unwritten(wanted.clone(), now).as_secs(), 5);
        let current = state.current_status(Some("40"), Some(&cached));
        assert_eq!(current.as_ref(), Some(&wanted), "decisions build on it");
        assert!(
            state.needs_write(&wanted, current.as_ref()),
            "written again though nothing changed"
        );
        let memory = state.memory(now);
        assert!(
            !memory.retry_due && !memory.backing_off,
            "no full sync to retry"
        );
        assert_eq!(state.status_unwritten(wanted.clone(), now).as_secs(), 10);
        state.status_written(Some("41".into()), wanted.clone());
        assert!(!state.needs_write(&wanted, Some(&wanted)));
        assert_eq!(
            state.status_unwritten(wanted, now).as_secs(),
            5,
            "backoff reset"
        );
    }

    #[test]
    fn a_failed_full_sync_backs_off_and_a_deferral_is_reported_once() {
        let mut state = SyncState::default();
        let now = Instant::now();
        let taken = state.begin_full_sync();
        assert_eq!(state.full_sync_failed(taken, now).as_secs(), 5);
        assert!(state.memory(now).backing_off);
        let later = now + Duration::from_secs(5);
        assert!(state.memory(later).retry_due);
        assert_eq!(state.memory(now).retries_due[0], Some(later));
        assert!(state.first_deferral_of("2"));
        assert!(!state.first_deferral_of("2"));
        assert!(state.first_deferral_of("3"));
    }

    #[test]
    fn a_namespace_that_appears_makes_its_secrets_pending() {
        let mut state = synced(&["late/app/A", "late/db/B", "ns/app/C"], &["late"]);
        let active = BTreeSet::from(["ns".to_owned()]);
        assert!(state.namespaces_appeared(&active).is_empty());
        let active = BTreeSet::from(["ns".to_owned(), "late".to_owned()]);
        let appeared = state.namespaces_appeared(&active);
        assert_eq!(appeared, BTreeSet::from(["late".to_owned()]));
        let (work, _) = state.take_pending().expect("a snapshot");
        assert_eq!(
            work.secrets.keys().cloned().collect::<Vec<_>>(),
            vec![SecretRef::new("late", "app"), SecretRef::new("late", "db")]
        );
        assert!(work.secrets.values().all(|c| *c == Cause::Namespace));
        assert_eq!(
            work.names,
            BTreeSet::from(["late/app/A".to_owned(), "late/db/B".to_owned()]),
            "waiting names are read again: the snapshot may predate a delete"
        );
    }

    #[test]
    fn namespaces_entering_or_leaving_the_selection_make_their_secrets_pending() {
        let mut state = SyncState::default();
        let _ = state.begin_full_sync();
        let seen = SyncOutcome {
            unselected_namespaces: BTreeSet::from(["off".to_owned(), "gone".to_owned()]),
            ..outcome(&[], &[])
        };
        let names = ["off/app/A", "off/db/B", "on/app/C", "gone/app/D"];
        state.full_sync_done(&seen, snapshot(&names), Utc::now(), false);
        let active = BTreeSet::from(["off".to_owned(), "on".to_owned()]);
        let same = BTreeSet::from(["off".to_owned()]);
        assert!(state.selection_changed(&same, &active).is_empty());
        assert_eq!(
            state.pending_secrets(),
            0,
            "a deleted namespace is not a change"
        );

        let labelled = state.selection_changed(&BTreeSet::new(), &active);
        assert_eq!(labelled, BTreeSet::from(["off".to_owned()]));
        let (work, snap) = state.take_pending().expect("a snapshot");
        assert_eq!(
            work.secrets.keys().cloned().collect::<Vec<_>>(),
            vec![SecretRef::new("off", "app"), SecretRef::new("off", "db")]
        );
        assert!(work.secrets.values().all(|c| *c == Cause::Namespace));
        assert_eq!(
            work.names,
            BTreeSet::from(["off/app/A".to_owned(), "off/db/B".to_owned()]),
            "names of a newly selected namespace are read again"
        );
        state.pending_applied(snap, PendingWork::default(), None, Instant::now());

        let unlabelled = state.selection_changed(&BTreeSet::from(["on".to_owned()]), &active);
        assert_eq!(unlabelled, BTreeSet::from(["on".to_owned()]));
        let (work, _) = state.take_pending().expect("a snapshot");
        assert_eq!(
            work.secrets.keys().cloned().collect::<Vec<_>>(),
            vec![SecretRef::new("on", "app")]
        );
        assert!(work.names.is_empty(), "nothing to read to keep or prune");
    }

    #[test]
    fn stream_applies_remember_namespaces_their_keys_wait_for() {
        let mut state = synced(&["ns/app/A"], &[]);
        let (work, mut snap) = state.take_pending().expect("a snapshot");
        snap.set("new/app/A".into(), Some(Entry::opened("new/app/A")));
        state.pending_applied(snap, work, Some(&outcome(&["new"], &[])), Instant::now());
        let appeared = state.namespaces_appeared(&BTreeSet::from(["new".to_owned()]));
        assert_eq!(appeared.len(), 1);
        assert_eq!(state.pending_secrets(), 1);
    }

    #[test]
    fn work_taken_by_a_failed_full_sync_is_handed_back() {
        let mut state = synced(&["ns/app/A"], &[]);
        state.drifted(app());
        let taken = state.begin_full_sync();
        assert_eq!(state.pending_secrets(), 0);
        state.full_sync_failed(taken, Instant::now());
        assert_eq!(state.pending_secrets(), 1);
        let taken = state.begin_full_sync();
        state.hand_back(taken);
        assert_eq!(state.pending_secrets(), 1);
    }

    #[test]
    fn unread_names_stay_pending() {
        let mut state = synced(&["ns/app/A"], &[]);
        let (_, snap) = state.take_pending().expect("a snapshot");
        let unread = PendingWork {
            names: BTreeSet::from(["ns/app/B".to_owned()]),
            ..Default::default()
        };
        let now = Instant::now();
        state.pending_applied(snap, unread, None, now);
        assert!(!state.pending_due(now));
        assert!(state.pending_due(now + Duration::from_secs(1)));
    }

    #[test]
    fn names_to_retry_wait_out_a_backoff_that_grows_while_they_fail() {
        let mut state = synced(&["ns/app/A"], &[]);
        let now = Instant::now();
        state.retry_names(BTreeSet::new(), now);
        assert!(!state.pending_due(now), "nothing to retry");
        state.retry_names(BTreeSet::from(["ns/app/A".to_owned()]), now);
        assert!(!state.pending_due(now), "backing off");
        assert!(state.pending_due(now + Duration::from_secs(1)));
        let (work, snap) = state.take_pending().expect("a snapshot");
        assert_eq!(work.names, BTreeSet::from(["ns/app/A".to_owned()]));
        // Still failing: handed back as unread, the wait doubles.
        let later = now + Duration::from_secs(1);
        state.pending_applied(snap, work, None, later);
        assert!(!state.pending_due(later + Duration::from_secs(1)));
        assert!(state.pending_due(later + Duration::from_secs(2)));
    }

    #[test]
    fn table_changes_outrank_drift_and_a_relist_rechecks_everything() {
        let mut work = PendingWork::default();
        work.mark(app(), Cause::Drift);
        work.mark(app(), Cause::Stream);
        work.mark(app(), Cause::Drift);
        assert_eq!(work.secrets[&app()], Cause::Stream);

        let mut state = synced(&["ns/app/A", "ns/db/B"], &[]);
        state.recheck_all();
        assert_eq!(state.pending_secrets(), 2);
    }

    #[test]
    fn no_pending_work_runs_without_a_snapshot() {
        let mut state = SyncState::default();
        state.drifted(app());
        assert!(!state.pending_due(Instant::now()));
        assert!(state.take_pending().is_none());
    }
}
