//! Following a stream without gaps: open LATEST iterators first
//! ([`StreamFollower::open`]), let the controller read the table, then
//! consume ([`StreamFollower::run`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::discovery::{discover, Discovered, StreamTarget};
use super::events::{Changes, StreamEvent, StreamPhase, StreamState};
use super::source::{
    describe_all, IteratorPosition, RecordsPage, ShardInfo, StreamError, StreamListing,
    StreamSource,
};
use crate::backoff::exponential;

/// Pacing and housekeeping intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerOptions {
    /// Least time between two `GetRecords` on one shard (AWS allows 5/s).
    pub min_poll_interval: Duration,
    /// Longest time between polls of an idle shard (back-off ceiling).
    pub idle_poll_max: Duration,
    /// Back-off ceiling after failed calls.
    pub error_backoff_max: Duration,
    /// How often the stream is re-discovered (`DescribeTable`, or
    /// `DescribeStream` for a pinned ARN) and its shards listed again.
    pub refresh_interval: Duration,
    /// Longest wait for one `GetShardIterator` or `GetRecords`; a call that
    /// takes longer fails its shard (retried with back-off). Each shard's
    /// calls run on their own, so a hung call delays no other shard.
    pub call_timeout: Duration,
}

impl Default for FollowerOptions {
    fn default() -> Self {
        Self {
            min_poll_interval: Duration::from_millis(200),
            idle_poll_max: Duration::from_secs(1),
            error_backoff_max: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(60),
            // Past the AWS clients' own operation timeout (30 s), which
            // normally answers first; this bounds any source.
            call_timeout: Duration::from_secs(40),
        }
    }
}

/// Why [`StreamFollower::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEnd {
    /// The stream was replaced ([`StreamEvent::Replaced`] was sent).
    Replaced {
        /// The new stream's ARN.
        new_arn: String,
    },
    /// The stream is disabled or gone ([`StreamEvent::Disabled`] was sent).
    Disabled,
    /// The event receiver was dropped.
    ReceiverClosed,
}

/// Follows one stream: all its shards, in lineage order.
pub struct StreamFollower {
    source: Arc<dyn StreamSource>,
    target: StreamTarget,
    arn: String,
    options: FollowerOptions,
    shards: BTreeMap<String, Shard>,
    state: StreamState,
    state_tx: watch::Sender<StreamState>,
    next_refresh: Instant,
    next_describe: Option<Instant>,
    describe_failures: u32,
    child_lookups: u32,
    pending_gap: Option<String>,
    failures: u32,
    /// The shard calls under way, each on its own.
    in_flight: FuturesUnordered<BoxFuture<'static, (String, Outcome)>>,
}

impl std::fmt::Debug for StreamFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFollower")
            .field("arn", &self.arn)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Shard {
    parent: Option<String>,
    phase: ShardPhase,
    /// Sequence number of the last record handed on.
    last_sequence: Option<String>,
    /// Earliest time of the next call on this shard.
    next_poll: Instant,
    idle_polls: u32,
    failures: u32,
    /// Drained while followed: its children are still to be listed.
    awaiting_children: bool,
    /// A call on it is under way.
    in_flight: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ShardPhase {
    /// The parent is not drained yet.
    Waiting,
    /// Needs `GetShardIterator` at this position.
    Opening(IteratorPosition),
    /// Has an iterator for `GetRecords`.
    Reading(String),
    /// Fully read (or closed before we started: covered by the full sync).
    Drained,
}

/// One call to make on a shard.
enum Action {
    Open(IteratorPosition),
    Fetch(String),
}

/// Its outcome.
enum Outcome {
    Opened(Result<String, StreamError>),
    Fetched(Result<RecordsPage, StreamError>),
}

impl Shard {
    fn new(parent: Option<String>, phase: ShardPhase, now: Instant) -> Self {
        Self {
            parent,
            phase,
            last_sequence: None,
            next_poll: now,
            idle_polls: 0,
            failures: 0,
            awaiting_children: false,
            in_flight: false,
        }
    }

    fn is_drained(&self) -> bool {
        self.phase == ShardPhase::Drained
    }

    /// Where to resume after the iterator expired: right after the last
    /// record handed on; with none, from the oldest record kept (a superset
    /// of what a LATEST iterator would have returned: duplicates, no gap).
    fn resume_position(&self) -> IteratorPosition {
        match &self.last_sequence {
            Some(seq) => IteratorPosition::AfterSequenceNumber(seq.clone()),
            None => IteratorPosition::TrimHorizon,
        }
    }
}

impl StreamFollower {
    /// Lists `arn`'s shards and opens a LATEST iterator on each open one.
    ///
    /// Call this BEFORE the full sync reads the table, then [`Self::run`]:
    /// every change after the read is then in the stream after an iterator.
    /// Closed shards are not read (their records predate the read); open
    /// shards whose parent is still open wait for it and are read from
    /// TRIM_HORIZON.
    pub async fn open(
        source: Arc<dyn StreamSource>,
        target: StreamTarget,
        arn: String,
        options: FollowerOptions,
    ) -> Result<Self, StreamError> {
        let shards = open_at_latest(&*source, &arn).await?;
        let state = StreamState::opened(&arn, count_active(&shards));
        let (state_tx, _) = watch::channel(state.clone());
        let next_refresh = Instant::now() + options.refresh_interval;
        Ok(Self {
            source,
            target,
            arn,
            options,
            shards,
            state,
            state_tx,
            next_refresh,
            next_describe: None,
            describe_failures: 0,
            child_lookups: 0,
            pending_gap: None,
            failures: 0,
            in_flight: FuturesUnordered::new(),
        })
    }

    /// The stream followed.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// A receiver of the follower's state (updated until `run` returns).
    pub fn state(&self) -> watch::Receiver<StreamState> {
        self.state_tx.subscribe()
    }

    /// Reads records until the stream is replaced or disabled, or `events`
    /// is closed. Sends [`StreamEvent::Changes`] per polling round that
    /// returned records, [`StreamEvent::Gap`] after re-opening at LATEST on
    /// lost data, and [`StreamEvent::Replaced`] / [`StreamEvent::Disabled`]
    /// just before returning. Retries failing calls with back-off (state
    /// [`StreamPhase::Error`]) for ever.
    pub async fn run(mut self, events: mpsc::Sender<StreamEvent>) -> FollowEnd {
        self.set_phase(StreamPhase::Following);
        loop {
            if let Err(end) = self.step(&events).await {
                let phase = match &end {
                    FollowEnd::Replaced { new_arn } => StreamPhase::Replaced {
                        new_arn: new_arn.clone(),
                    },
                    FollowEnd::Disabled => StreamPhase::Disabled,
                    FollowEnd::ReceiverClosed => StreamPhase::Stopped,
                };
                self.set_phase(phase);
                return end;
            }
        }
    }

    /// One round: housekeeping, a call started on every due shard that has
    /// none under way, then the calls that finish first (or the next wake).
    async fn step(&mut self, events: &mpsc::Sender<StreamEvent>) -> Result<(), FollowEnd> {
        if let Some(reason) = self.pending_gap.clone() {
            return self.reset(reason, events).await;
        }
        let now = Instant::now();
        if now >= self.next_refresh {
            self.refresh(events).await?;
        } else if self.next_describe.is_some_and(|at| now >= at) {
            self.describe(events).await?;
        }
        self.start_due_calls(Instant::now());
        let wake = self.next_wake();
        let first = tokio::select! {
            Some(first) = self.in_flight.next() => first,
            _ = tokio::time::sleep_until(wake) => return Ok(()),
            _ = events.closed() => return Err(FollowEnd::ReceiverClosed),
        };
        let outcomes = self.with_finished(first);
        let changes = self.apply(outcomes);
        self.publish();
        if !changes.is_empty() {
            send(events, StreamEvent::Changes(changes)).await?;
        }
        Ok(())
    }

    /// Re-discovers the stream (replaced? disabled?) and lists its shards.
    async fn refresh(&mut self, events: &mpsc::Sender<StreamEvent>) -> Result<(), FollowEnd> {
        self.next_refresh = Instant::now() + self.options.refresh_interval;
        match discover(&*self.source, &self.target).await {
            Ok(Discovered::Enabled { arn }) if arn == self.arn => {}
            Ok(Discovered::Enabled { arn }) => {
                return finish(events, FollowEnd::Replaced { new_arn: arn }).await
            }
            Ok(Discovered::Disabled) => return finish(events, FollowEnd::Disabled).await,
            Err(e) => {
                self.report_error(format!("stream discovery: {e}"));
                let retry = self.options.refresh_interval.min(Duration::from_secs(10));
                self.next_refresh = Instant::now() + retry;
            }
        }
        self.describe(events).await
    }

    /// Lists the shards: new ones (children of drained shards) are queued.
    async fn describe(&mut self, events: &mpsc::Sender<StreamEvent>) -> Result<(), FollowEnd> {
        self.next_describe = None;
        match describe_all(&*self.source, &self.arn).await {
            Ok(listing) if listing.status.is_live() => {
                self.describe_failures = 0;
                self.merge_listing(&listing.shards);
                self.schedule_child_lookup();
                Ok(())
            }
            Ok(_) | Err(StreamError::ResourceNotFound(_)) => self.conclude(events).await,
            Err(e) => {
                self.report_error(format!("DescribeStream: {e}"));
                self.describe_failures += 1;
                let delay = self.backoff(self.describe_failures);
                self.next_describe = Some(Instant::now() + delay);
                Ok(())
            }
        }
    }

    /// The stream is no longer live: replaced (table mode) or disabled.
    async fn conclude(&mut self, events: &mpsc::Sender<StreamEvent>) -> Result<(), FollowEnd> {
        match discover(&*self.source, &self.target).await {
            Ok(Discovered::Enabled { arn }) if arn != self.arn => {
                finish(events, FollowEnd::Replaced { new_arn: arn }).await
            }
            Ok(_) => finish(events, FollowEnd::Disabled).await,
            Err(e) => {
                self.report_error(format!("stream discovery: {e}"));
                self.failures += 1;
                let wake = Instant::now() + self.backoff(self.failures);
                pause_until(wake, events).await
            }
        }
    }

    /// Lost data: re-open every open shard at LATEST, THEN send `Gap` so the
    /// full sync the controller runs covers everything before.
    async fn reset(
        &mut self,
        reason: String,
        events: &mpsc::Sender<StreamEvent>,
    ) -> Result<(), FollowEnd> {
        match open_at_latest(&*self.source, &self.arn).await {
            Ok(shards) => {
                tracing::warn!(arn = %self.arn, %reason, "stream gap: iterators re-opened at LATEST");
                self.shards = shards;
                self.in_flight = FuturesUnordered::new();
                self.pending_gap = None;
                self.failures = 0;
                self.state.gaps += 1;
                self.state.phase = StreamPhase::Following;
                self.publish();
                send(events, StreamEvent::Gap { reason }).await
            }
            Err(OpenError::NotLive) | Err(OpenError::Call(StreamError::ResourceNotFound(_))) => {
                self.conclude(events).await
            }
            Err(OpenError::Call(e)) => {
                self.report_error(format!("re-opening after a gap: {e}"));
                self.failures += 1;
                let wake = Instant::now() + self.backoff(self.failures);
                pause_until(wake, events).await
            }
        }
    }

    /// Adds shards not seen before and drops drained ones no longer listed.
    fn merge_listing(&mut self, listed: &[ShardInfo]) {
        let now = Instant::now();
        for info in listed {
            if !self.shards.contains_key(&info.shard_id) {
                let phase = match info.parent_shard_id {
                    Some(_) => ShardPhase::Waiting,
                    None => ShardPhase::Opening(IteratorPosition::TrimHorizon),
                };
                let shard = Shard::new(info.parent_shard_id.clone(), phase, now);
                self.shards.insert(info.shard_id.clone(), shard);
            }
        }
        let listed_ids: std::collections::HashSet<&str> =
            listed.iter().map(|s| s.shard_id.as_str()).collect();
        self.shards
            .retain(|id, shard| !shard.is_drained() || listed_ids.contains(id.as_str()));
        let parents: std::collections::HashSet<String> = self
            .shards
            .values()
            .filter_map(|s| s.parent.clone())
            .collect();
        for (id, shard) in &mut self.shards {
            if parents.contains(id) {
                shard.awaiting_children = false;
            }
        }
        self.promote_waiting(now);
    }

    /// Shards whose parent is drained (or gone) become readable from
    /// TRIM_HORIZON.
    fn promote_waiting(&mut self, now: Instant) {
        let ready: Vec<String> = self
            .shards
            .iter()
            .filter(|(_, s)| s.phase == ShardPhase::Waiting)
            .filter(|(_, s)| {
                s.parent
                    .as_ref()
                    .and_then(|p| self.shards.get(p))
                    .is_none_or(Shard::is_drained)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ready {
            if let Some(shard) = self.shards.get_mut(&id) {
                shard.phase = ShardPhase::Opening(IteratorPosition::TrimHorizon);
                shard.next_poll = now;
            }
        }
    }

    /// While a drained shard has no listed child, list again with back-off
    /// (1 s, 2 s, 4 s ... up to the refresh interval).
    fn schedule_child_lookup(&mut self) {
        if !self.shards.values().any(|s| s.awaiting_children) {
            self.child_lookups = 0;
            return;
        }
        self.child_lookups = self.child_lookups.saturating_add(1);
        let delay = self
            .backoff(self.child_lookups)
            .min(self.options.refresh_interval);
        self.next_describe = Some(Instant::now() + delay);
    }

    fn due_actions(&self, now: Instant) -> Vec<(String, Action)> {
        self.shards
            .iter()
            .filter(|(_, s)| s.next_poll <= now && !s.in_flight)
            .filter_map(|(id, s)| match &s.phase {
                ShardPhase::Opening(position) => Some((id.clone(), Action::Open(position.clone()))),
                ShardPhase::Reading(iterator) => {
                    Some((id.clone(), Action::Fetch(iterator.clone())))
                }
                ShardPhase::Waiting | ShardPhase::Drained => None,
            })
            .collect()
    }

    fn next_wake(&self) -> Instant {
        let polls = self
            .shards
            .values()
            .filter(|s| matches!(s.phase, ShardPhase::Opening(_) | ShardPhase::Reading(_)))
            .filter(|s| !s.in_flight)
            .map(|s| s.next_poll);
        polls
            .chain(self.next_describe)
            .chain(std::iter::once(self.next_refresh))
            .min()
            .unwrap_or(self.next_refresh)
    }

    /// Starts a call on every due shard that has none under way.
    fn start_due_calls(&mut self, now: Instant) {
        for (id, action) in self.due_actions(now) {
            if let Some(shard) = self.shards.get_mut(&id) {
                shard.in_flight = true;
            }
            let call = shard_call(
                self.source.clone(),
                self.arn.clone(),
                id,
                action,
                self.options.call_timeout,
            );
            self.in_flight.push(call);
        }
    }

    /// `first` and the other calls that have finished by now.
    fn with_finished(&mut self, first: (String, Outcome)) -> Vec<(String, Outcome)> {
        let mut outcomes = vec![first];
        while let Some(Some(next)) = self.in_flight.next().now_or_never() {
            outcomes.push(next);
        }
        outcomes
    }

    /// Applies the outcomes; returns the records' names.
    fn apply(&mut self, outcomes: Vec<(String, Outcome)>) -> Changes {
        let now = Instant::now();
        let mut changes = Changes::default();
        let mut drained = false;
        let mut errors = Vec::new();
        for (id, outcome) in outcomes {
            let result = match outcome {
                Outcome::Opened(result) => self.apply_opened(&id, result, now),
                Outcome::Fetched(result) => self.apply_fetched(&id, result, now, &mut changes),
            };
            match result {
                Ok(Applied::Drained) => drained = true,
                Ok(Applied::Continue) => {}
                Err(e) => errors.push(e),
            }
        }
        if drained {
            self.promote_waiting(now);
            self.next_describe = Some(now);
            self.child_lookups = 0;
        }
        self.note_round(&changes, errors);
        changes
    }

    fn apply_opened(
        &mut self,
        id: &str,
        result: Result<String, StreamError>,
        now: Instant,
    ) -> Result<Applied, String> {
        let Some(shard) = self.shards.get_mut(id) else {
            return Ok(Applied::Continue);
        };
        shard.in_flight = false;
        match result {
            Ok(iterator) => {
                shard.phase = ShardPhase::Reading(iterator);
                shard.failures = 0;
                shard.next_poll = shard.next_poll.max(now);
                Ok(Applied::Continue)
            }
            Err(e) => self.shard_failed(id, e, now),
        }
    }

    fn apply_fetched(
        &mut self,
        id: &str,
        result: Result<RecordsPage, StreamError>,
        now: Instant,
        changes: &mut Changes,
    ) -> Result<Applied, String> {
        let options = self.options.clone();
        let Some(shard) = self.shards.get_mut(id) else {
            return Ok(Applied::Continue);
        };
        shard.in_flight = false;
        let page = match result {
            Ok(page) => page,
            Err(StreamError::ExpiredIterator(_)) => {
                tracing::debug!(shard = id, "shard iterator expired; re-opening");
                shard.phase = ShardPhase::Opening(shard.resume_position());
                shard.next_poll = now + options.min_poll_interval;
                return Ok(Applied::Continue);
            }
            Err(e) => return self.shard_failed(id, e, now),
        };
        shard.failures = 0;
        for record in &page.records {
            changes.add_record(record);
        }
        if let Some(last) = page.records.last() {
            shard.last_sequence = Some(last.sequence_number.clone());
        }
        shard.idle_polls = if page.records.is_empty() {
            shard.idle_polls.saturating_add(1)
        } else {
            0
        };
        match page.next_iterator {
            Some(next) => {
                shard.phase = ShardPhase::Reading(next);
                shard.next_poll = now + poll_delay(&options, shard.idle_polls);
                Ok(Applied::Continue)
            }
            None => {
                tracing::debug!(shard = id, "shard drained");
                shard.phase = ShardPhase::Drained;
                shard.awaiting_children = true;
                Ok(Applied::Drained)
            }
        }
    }

    /// A failed call on a shard: lost data becomes a gap; the rest backs off.
    fn shard_failed(
        &mut self,
        id: &str,
        error: StreamError,
        now: Instant,
    ) -> Result<Applied, String> {
        match error {
            StreamError::TrimmedData(_) | StreamError::ResourceNotFound(_) => {
                let reason = format!("shard {id}: {error}");
                self.pending_gap.get_or_insert(reason);
                Ok(Applied::Continue)
            }
            other => {
                let backoff_max = self.options.error_backoff_max;
                if let Some(shard) = self.shards.get_mut(id) {
                    shard.failures = shard.failures.saturating_add(1);
                    shard.next_poll =
                        now + exponential(Duration::from_secs(1), shard.failures, backoff_max);
                }
                Err(format!("shard {id}: {other}"))
            }
        }
    }

    /// Updates the published state after a round.
    fn note_round(&mut self, changes: &Changes, errors: Vec<String>) {
        self.state.records.merge(&changes.counts);
        self.state.last_record_time = self.state.last_record_time.max(changes.newest_record);
        self.state.shards = count_active(&self.shards);
        match errors.into_iter().next() {
            Some(error) => self.report_error(error),
            None if self.shards.values().any(|s| s.failures > 0) => {}
            None => {
                self.failures = 0;
                self.state.phase = StreamPhase::Following;
            }
        }
    }

    fn report_error(&mut self, error: String) {
        tracing::warn!(arn = %self.arn, %error, "stream follower");
        self.state.phase = StreamPhase::Error(error);
        self.publish();
    }

    fn set_phase(&mut self, phase: StreamPhase) {
        self.state.phase = phase;
        self.publish();
    }

    fn publish(&mut self) {
        self.state.shards = count_active(&self.shards);
        let state = self.state.clone();
        self.state_tx.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    fn backoff(&self, failures: u32) -> Duration {
        exponential(
            Duration::from_secs(1),
            failures,
            self.options.error_backoff_max,
        )
    }
}

enum Applied {
    Continue,
    Drained,
}

enum OpenError {
    NotLive,
    Call(StreamError),
}

impl From<StreamError> for OpenError {
    fn from(e: StreamError) -> Self {
        OpenError::Call(e)
    }
}

impl From<OpenError> for StreamError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::NotLive => StreamError::Other("the stream is not enabled".into()),
            OpenError::Call(e) => e,
        }
    }
}

/// One call on shard `id`, owning what it needs so that it runs on its own;
/// a call that takes longer than `limit` fails.
fn shard_call(
    source: Arc<dyn StreamSource>,
    arn: String,
    id: String,
    action: Action,
    limit: Duration,
) -> BoxFuture<'static, (String, Outcome)> {
    Box::pin(async move {
        let outcome = match action {
            Action::Open(position) => {
                let call = source.get_shard_iterator(&arn, &id, &position);
                Outcome::Opened(bounded(limit, "GetShardIterator", call).await)
            }
            Action::Fetch(iterator) => {
                let call = source.get_records(&iterator);
                Outcome::Fetched(bounded(limit, "GetRecords", call).await)
            }
        };
        (id, outcome)
    })
}

async fn bounded<T>(
    limit: Duration,
    what: &str,
    call: BoxFuture<'_, Result<T, StreamError>>,
) -> Result<T, StreamError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(StreamError::Other(format!(
            "{what} did not answer within {}s",
            limit.as_secs()
        )))
    })
}

/// Lists the shards and opens LATEST on every open shard whose parent is not
/// open too; closed shards count as drained.
async fn open_shards_listing(
    source: &dyn StreamSource,
    arn: &str,
    listing: &StreamListing,
) -> Result<BTreeMap<String, Shard>, StreamError> {
    let now = Instant::now();
    let open: std::collections::HashSet<&str> = listing
        .shards
        .iter()
        .filter(|s| !s.is_closed())
        .map(|s| s.shard_id.as_str())
        .collect();
    let mut shards = BTreeMap::new();
    let mut to_open = Vec::new();
    for info in &listing.shards {
        let parent_open = info
            .parent_shard_id
            .as_deref()
            .is_some_and(|p| open.contains(p));
        let phase = if info.is_closed() {
            ShardPhase::Drained
        } else if parent_open {
            ShardPhase::Waiting
        } else {
            to_open.push(info.shard_id.as_str());
            ShardPhase::Opening(IteratorPosition::Latest)
        };
        shards.insert(
            info.shard_id.clone(),
            Shard::new(info.parent_shard_id.clone(), phase, now),
        );
    }
    let latest = IteratorPosition::Latest;
    let iterators = join_all(
        to_open
            .iter()
            .map(|id| source.get_shard_iterator(arn, id, &latest)),
    )
    .await;
    for (id, iterator) in to_open.iter().zip(iterators) {
        if let Some(shard) = shards.get_mut(*id) {
            shard.phase = ShardPhase::Reading(iterator?);
        }
    }
    Ok(shards)
}

async fn open_at_latest(
    source: &dyn StreamSource,
    arn: &str,
) -> Result<BTreeMap<String, Shard>, OpenError> {
    let listing = describe_all(source, arn).await?;
    if !listing.status.is_live() {
        return Err(OpenError::NotLive);
    }
    Ok(open_shards_listing(source, arn, &listing).await?)
}

fn count_active(shards: &BTreeMap<String, Shard>) -> usize {
    shards.values().filter(|s| !s.is_drained()).count()
}

/// Delay before the next poll of a shard after `idle_polls` empty answers
/// in a row: the minimum interval, doubling while idle, up to the ceiling.
fn poll_delay(options: &FollowerOptions, idle_polls: u32) -> Duration {
    if idle_polls == 0 {
        return options.min_poll_interval;
    }
    exponential(options.min_poll_interval, idle_polls, options.idle_poll_max)
        .max(options.min_poll_interval)
}

/// Sleeps until `wake`, or returns early if the receiver goes away.
async fn pause_until(wake: Instant, events: &mpsc::Sender<StreamEvent>) -> Result<(), FollowEnd> {
    tokio::select! {
        _ = tokio::time::sleep_until(wake) => Ok(()),
        _ = events.closed() => Err(FollowEnd::ReceiverClosed),
    }
}

async fn send(events: &mpsc::Sender<StreamEvent>, event: StreamEvent) -> Result<(), FollowEnd> {
    events
        .send(event)
        .await
        .map_err(|_| FollowEnd::ReceiverClosed)
}

/// Sends the final event and ends the run.
async fn finish(events: &mpsc::Sender<StreamEvent>, end: FollowEnd) -> Result<(), FollowEnd> {
    let event = match &end {
        FollowEnd::Replaced { new_arn } => StreamEvent::Replaced {
            new_arn: new_arn.clone(),
        },
        FollowEnd::Disabled => StreamEvent::Disabled,
        FollowEnd::ReceiverClosed => return Err(end),
    };
    send(events, event).await?;
    Err(end)
}
