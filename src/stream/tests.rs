//! The follower, discovery and debounce against the in-memory source, on
//! tokio's paused clock (virtual time: no real waiting, deterministic).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::memory::{Call, Operation};
use super::*;

const TABLE: &str = "credential-store";
/// Virtual time a test waits for an event before failing.
const PATIENCE: Duration = Duration::from_secs(300);

struct Running {
    source: Arc<MemoryStreamSource>,
    arn: String,
    events: mpsc::Receiver<StreamEvent>,
    state: watch::Receiver<StreamState>,
    task: JoinHandle<FollowEnd>,
}

fn source_with_stream(shards: usize) -> (Arc<MemoryStreamSource>, String) {
    let source = Arc::new(MemoryStreamSource::new());
    let arn = source.enable_stream(TABLE, shards);
    (source, arn)
}

async fn open(source: &Arc<MemoryStreamSource>, target: StreamTarget) -> StreamFollower {
    let status = discover(&**source, &target).await.expect("discover");
    let Discovered::Enabled { arn } = status else {
        panic!("no stream: {status:?}");
    };
    let dynamic: Arc<dyn StreamSource> = source.clone();
    StreamFollower::open(dynamic, target, arn, FollowerOptions::default())
        .await
        .expect("open")
}

fn spawn(source: Arc<MemoryStreamSource>, follower: StreamFollower) -> Running {
    let (tx, events) = mpsc::channel(16);
    let state = follower.state();
    let arn = follower.arn().to_owned();
    let task = tokio::spawn(follower.run(tx));
    Running {
        source,
        arn,
        events,
        state,
        task,
    }
}

async fn start(shards: usize) -> Running {
    let (source, _) = source_with_stream(shards);
    let follower = open(&source, StreamTarget::table(TABLE)).await;
    spawn(source, follower)
}

impl Running {
    async fn next(&mut self) -> StreamEvent {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("no stream event in time")
            .expect("follower ended")
    }

    /// Receives `Changes` until every name in `expected` was seen; fails on
    /// any other event.
    async fn changes_until(&mut self, expected: &[&str]) -> Vec<Changes> {
        let mut missing: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        let mut batches = Vec::new();
        while !missing.is_empty() {
            match self.next().await {
                StreamEvent::Changes(changes) => {
                    for name in &changes.names {
                        missing.remove(name);
                    }
                    batches.push(changes);
                }
                other => panic!("unexpected {other:?} while waiting for {missing:?}"),
            }
        }
        batches
    }

    fn put(&self, name: &str) -> String {
        self.source.put(TABLE, name).expect("stream enabled")
    }

    async fn end(self) -> FollowEnd {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("follower did not end")
            .expect("follower panicked")
    }
}

fn merged(batches: &[Changes]) -> Changes {
    let mut all = Changes::default();
    for batch in batches {
        all.merge(batch.clone());
    }
    all
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Index in the call log of the first call matching `f`.
fn first(calls: &[Call], f: impl Fn(&Call) -> bool) -> Option<usize> {
    calls.iter().position(f)
}

fn last(calls: &[Call], f: impl Fn(&Call) -> bool) -> Option<usize> {
    calls.iter().rposition(f)
}

fn on_shard<'a>(shard: &'a str) -> impl Fn(&Call) -> bool + 'a {
    move |c| c.shard_id.as_deref() == Some(shard)
}

// ---------------------------------------------------------------- discovery

#[tokio::test]
async fn discovery_follows_the_tables_latest_stream() {
    let source = MemoryStreamSource::new();
    source.create_table(TABLE);
    let target = StreamTarget::table(TABLE);
    assert_eq!(discover(&source, &target).await, Ok(Discovered::Disabled));
    let arn = source.enable_stream(TABLE, 1);
    assert_eq!(
        discover(&source, &target).await,
        Ok(Discovered::Enabled { arn: arn.clone() })
    );
    // AWS keeps LatestStreamArn after disabling: StreamEnabled decides.
    source.disable_stream(TABLE);
    assert_eq!(source.stream_arn(TABLE), Some(arn));
    assert_eq!(discover(&source, &target).await, Ok(Discovered::Disabled));
}

#[tokio::test]
async fn discovery_of_a_pinned_arn_checks_the_stream() {
    let source = MemoryStreamSource::new();
    let arn = source.enable_stream(TABLE, 1);
    let pinned = StreamTarget::pinned(TABLE, arn.clone());
    assert_eq!(
        discover(&source, &pinned).await,
        Ok(Discovered::Enabled { arn: arn.clone() })
    );
    let unknown = StreamTarget::pinned(TABLE, format!("{arn}-gone"));
    assert_eq!(discover(&source, &unknown).await, Ok(Discovered::Disabled));
    source.replace_stream(TABLE);
    assert_eq!(discover(&source, &pinned).await, Ok(Discovered::Disabled));
}

#[tokio::test]
async fn discovery_reports_other_errors() {
    let source = MemoryStreamSource::new();
    source.enable_stream(TABLE, 1);
    source.fail_next(
        Operation::DescribeTable,
        StreamError::Throttled("slow".into()),
    );
    assert_eq!(
        discover(&source, &StreamTarget::table(TABLE)).await,
        Err(StreamError::Throttled("slow".into()))
    );
    assert_eq!(
        discover(&source, &StreamTarget::table("no-such-table")).await,
        Err(StreamError::ResourceNotFound("table no-such-table".into()))
    );
}

// ------------------------------------------------------------- gap-free open

#[tokio::test(start_paused = true)]
async fn records_between_open_and_run_are_delivered_and_older_ones_are_not() {
    let (source, _) = source_with_stream(1);
    source.put(TABLE, "before/open/KEY");
    let follower = open(&source, StreamTarget::table(TABLE)).await;
    // The full sync would run here; these writes fall after it started.
    source.put(TABLE, "during/sync/A");
    source.remove(TABLE, "during/sync/B");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut running = spawn(source, follower);
    running.put("after/run/C");
    let all = merged(
        &running
            .changes_until(&["during/sync/A", "during/sync/B", "after/run/C"])
            .await,
    );
    assert_eq!(
        all.names,
        names(&["during/sync/A", "during/sync/B", "after/run/C"])
    );
    assert_eq!(all.counts.inserts, 2);
    assert_eq!(all.counts.removes, 1);
    assert!(all.newest_record.is_some() && all.oldest_record.is_some());
    let state = running.state.borrow().clone();
    assert_eq!(state.phase, StreamPhase::Following);
    assert_eq!(state.records.total(), 3);
    assert_eq!(state.shards, 1);
    assert!(state.last_record_time.is_some());
}

#[tokio::test(start_paused = true)]
async fn every_open_shard_gets_a_latest_iterator_at_open() {
    let (source, _) = source_with_stream(3);
    let follower = open(&source, StreamTarget::table(TABLE)).await;
    let latest: BTreeSet<String> = source
        .calls()
        .into_iter()
        .filter(|c| c.position == Some(IteratorPosition::Latest))
        .filter_map(|c| c.shard_id)
        .collect();
    assert_eq!(latest, source.open_shards(TABLE).into_iter().collect());
    assert_eq!(follower.state().borrow().shards, 3);
    assert_eq!(source.count(Operation::GetRecords), 0, "open reads nothing");
}

// ------------------------------------------------------------------ lineage

#[tokio::test(start_paused = true)]
async fn a_child_is_read_only_after_its_parent_is_drained() {
    let mut running = start(1).await;
    running.source.set_records_per_call(1);
    let parent = running.source.open_shards(TABLE)[0].clone();
    for name in ["p/s/A", "p/s/B", "p/s/C"] {
        running.put(name);
    }
    let children = running.source.rollover(TABLE, 1);
    running.put("c/s/D");
    let batches = running
        .changes_until(&["p/s/A", "p/s/B", "p/s/C", "c/s/D"])
        .await;
    let order: Vec<String> = batches.iter().flat_map(|b| b.names.clone()).collect();
    assert_eq!(order, ["p/s/A", "p/s/B", "p/s/C", "c/s/D"]);

    let calls = running.source.calls();
    let parent_done = last(&calls, on_shard(&parent)).expect("parent read");
    let child_first = first(&calls, on_shard(&children[0])).expect("child read");
    assert!(
        parent_done < child_first,
        "child {child_first} touched before the parent's last read {parent_done}"
    );
    let child_open = &calls[child_first];
    assert_eq!(child_open.position, Some(IteratorPosition::TrimHorizon));
}

#[tokio::test(start_paused = true)]
async fn a_listed_child_waits_while_its_parent_still_has_records() {
    let mut running = start(2).await;
    running.source.set_records_per_call(1);
    let shards = running.source.open_shards(TABLE);
    let (quick, slow) = (&shards[0], &shards[1]);
    let on = |shard: &str, name: &str| {
        running
            .source
            .write_to_shard(TABLE, shard, EventKind::Insert, name)
            .expect("open shard")
    };
    on(quick, "quick/s/A");
    let slow_names: Vec<String> = (0..6).map(|i| format!("slow/s/K{i}")).collect();
    for name in &slow_names {
        on(slow, name);
    }
    // Both close; the quick one drains first, and the listing that finds its
    // child also lists the slow one's child.
    let children = running.source.rollover(TABLE, 1);
    let (quick_child, slow_child) = (&children[0], &children[1]);
    on(quick_child, "quick/child/B");
    on(slow_child, "slow/child/C");
    let mut expected: Vec<&str> = vec!["quick/s/A", "quick/child/B", "slow/child/C"];
    expected.extend(slow_names.iter().map(String::as_str));
    let batches = running.changes_until(&expected).await;
    let order: Vec<String> = batches.iter().flat_map(|b| b.names.clone()).collect();
    let position = |name: &str| order.iter().position(|n| n == name).expect("received");
    assert!(
        position("quick/child/B") < position("slow/s/K5"),
        "{order:?}"
    );
    assert!(
        position("slow/child/C") > position("slow/s/K5"),
        "{order:?}"
    );

    let calls = running.source.calls();
    let slow_done = last(&calls, on_shard(slow)).expect("slow read");
    let slow_child_first = first(&calls, on_shard(slow_child)).expect("child read");
    assert!(
        slow_done < slow_child_first,
        "child read before its parent was drained"
    );
}

#[tokio::test(start_paused = true)]
async fn children_are_found_through_a_paginated_describe_stream() {
    let mut running = start(3).await;
    running.source.set_describe_page_size(1);
    let children = running.source.rollover(TABLE, 2);
    assert_eq!(children.len(), 6);
    let written: Vec<String> = (0..30).map(|i| format!("ns/s{i}/KEY")).collect();
    for name in &written {
        running.put(name);
    }
    // Every child got some names (the hash spreads them).
    let refs: Vec<&str> = written.iter().map(String::as_str).collect();
    let all = merged(&running.changes_until(&refs).await);
    assert_eq!(all.names.len(), 30);
    assert!(running.source.count(Operation::DescribeStream) >= 9);
    let read: BTreeSet<String> = running
        .source
        .calls()
        .into_iter()
        .filter(|c| c.operation == Operation::GetRecords)
        .filter_map(|c| c.shard_id)
        .collect();
    for child in &children {
        assert!(read.contains(child), "child {child} never read");
    }
    assert_eq!(running.state.borrow().shards, 6);
}

#[tokio::test(start_paused = true)]
async fn rollovers_in_a_row_lose_nothing() {
    let mut running = start(1).await;
    let mut expected = Vec::new();
    for generation in 0..4 {
        for i in 0..3 {
            let name = format!("gen{generation}/s/K{i}");
            running.put(&name);
            expected.push(name);
        }
        running.source.rollover(TABLE, 1);
    }
    running.put("last/s/KEY");
    expected.push("last/s/KEY".into());
    let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
    let all = merged(&running.changes_until(&refs).await);
    assert_eq!(all.counts.inserts, 13, "each record exactly once");
    assert_eq!(running.state.borrow().shards, 1);
}

#[tokio::test(start_paused = true)]
async fn a_child_listed_late_is_found_by_listing_again_with_back_off() {
    let mut running = start(1).await;
    let parent = running.source.open_shards(TABLE)[0].clone();
    running.put("parent/s/KEY");
    running.source.close_shard(TABLE, &parent);
    running.changes_until(&["parent/s/KEY"]).await;
    let drained_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let describes: Vec<Instant> = running
        .source
        .calls()
        .into_iter()
        .filter(|c| c.operation == Operation::DescribeStream && c.at >= drained_at)
        .map(|c| c.at)
        .collect();
    let gaps: Vec<Duration> = describes.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(
        (3..=7).contains(&describes.len()),
        "{} listings in 20 s: {gaps:?}",
        describes.len()
    );
    assert!(gaps.windows(2).all(|g| g[0] <= g[1]), "back-off: {gaps:?}");

    let child = running.source.add_child(TABLE, &parent).expect("child");
    running
        .source
        .write_to_shard(TABLE, &child, EventKind::Insert, "child/s/KEY");
    let found_from = Instant::now();
    running.changes_until(&["child/s/KEY"]).await;
    assert!(found_from.elapsed() <= Duration::from_secs(17));
}

// -------------------------------------------------------- iterator expiry

#[tokio::test(start_paused = true)]
async fn an_expired_iterator_resumes_after_the_last_record() {
    let mut running = start(1).await;
    running.source.set_records_per_call(2);
    let mut sequences = Vec::new();
    let written: Vec<String> = (1..=6).map(|i| format!("ns/s/K{i}")).collect();
    for name in &written {
        sequences.push(running.put(name));
    }
    let first_batch = running.changes_until(&["ns/s/K1", "ns/s/K2"]).await;
    assert_eq!(merged(&first_batch).names, names(&["ns/s/K1", "ns/s/K2"]));
    running.source.expire_iterators();
    let rest = running
        .changes_until(&["ns/s/K3", "ns/s/K4", "ns/s/K5", "ns/s/K6"])
        .await;
    let rest = merged(&rest);
    assert_eq!(rest.counts.inserts, 4, "no record lost or repeated");
    assert!(!rest.names.contains("ns/s/K1") && !rest.names.contains("ns/s/K2"));
    let reopened =
        running.source.calls().into_iter().any(|c| {
            c.position == Some(IteratorPosition::AfterSequenceNumber(sequences[1].clone()))
        });
    assert!(
        reopened,
        "re-opened AFTER_SEQUENCE_NUMBER of the last record"
    );
}

#[tokio::test(start_paused = true)]
async fn an_iterator_expired_before_any_record_reopens_at_trim_horizon() {
    let (source, _) = source_with_stream(1);
    let follower = open(&source, StreamTarget::table(TABLE)).await;
    source.put(TABLE, "during/sync/KEY");
    source.expire_iterators(); // a full sync longer than 15 minutes
    let mut running = spawn(source, follower);
    let all = merged(&running.changes_until(&["during/sync/KEY"]).await);
    assert_eq!(all.counts.inserts, 1);
    let positions: Vec<_> = running
        .source
        .calls()
        .into_iter()
        .filter_map(|c| c.position)
        .collect();
    assert_eq!(
        positions,
        [IteratorPosition::Latest, IteratorPosition::TrimHorizon]
    );
}

// --------------------------------------------------------------------- gaps

#[tokio::test(start_paused = true)]
async fn trimmed_data_reopens_at_latest_then_reports_a_gap() {
    let mut running = start(1).await;
    running.put("ns/s/KEPT");
    running.changes_until(&["ns/s/KEPT"]).await;
    running.put("ns/s/LOST");
    running.source.trim(TABLE);
    // The first re-open attempt fails: the gap must still wait for LATEST.
    running.source.fail_next(
        Operation::DescribeStream,
        StreamError::Other("internal error".into()),
    );
    let latest_before = latest_iterators(&running.source);
    match running.next().await {
        StreamEvent::Gap { reason } => assert!(reason.contains("trimmed"), "{reason}"),
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(
        latest_iterators(&running.source),
        latest_before + 1,
        "LATEST re-opened before the gap was reported"
    );
    assert_eq!(running.state.borrow().gaps, 1);
    running.put("ns/s/AFTER");
    let all = merged(&running.changes_until(&["ns/s/AFTER"]).await);
    assert_eq!(all.names, names(&["ns/s/AFTER"]));
}

#[tokio::test(start_paused = true)]
async fn a_trimmed_resume_position_is_a_gap() {
    let mut running = start(1).await;
    running.source.set_records_per_call(1);
    running.put("ns/s/A");
    running.put("ns/s/B");
    running.changes_until(&["ns/s/A"]).await;
    running.source.expire_iterators();
    running.source.trim(TABLE);
    assert!(matches!(running.next().await, StreamEvent::Gap { .. }));
}

fn latest_iterators(source: &MemoryStreamSource) -> usize {
    source
        .calls()
        .iter()
        .filter(|c| c.position == Some(IteratorPosition::Latest))
        .count()
}

// -------------------------------------------------- replaced and disabled

#[tokio::test(start_paused = true)]
async fn a_replaced_stream_is_reported_and_ends_the_run() {
    let mut running = start(1).await;
    running.put("old/s/KEY");
    running.changes_until(&["old/s/KEY"]).await;
    let new_arn = running.source.replace_stream(TABLE);
    assert_ne!(new_arn, running.arn);
    let event = running.next().await;
    assert_eq!(
        event,
        StreamEvent::Replaced {
            new_arn: new_arn.clone()
        }
    );
    let state = running.state.clone();
    assert_eq!(
        running.end().await,
        FollowEnd::Replaced {
            new_arn: new_arn.clone()
        }
    );
    assert_eq!(state.borrow().phase, StreamPhase::Replaced { new_arn });
}

#[tokio::test(start_paused = true)]
async fn periodic_rediscovery_notices_a_new_arn() {
    let (source, _) = source_with_stream(1);
    let old = open(&source, StreamTarget::table(TABLE)).await;
    // The table now names another stream, the old one still looks alive.
    let new_arn = source.enable_stream(TABLE, 1);
    let started = Instant::now();
    let mut running = spawn(source, old);
    assert_eq!(
        running.next().await,
        StreamEvent::Replaced {
            new_arn: new_arn.clone()
        }
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited <= Duration::from_secs(61),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_disabled_stream_is_reported_and_ends_the_run() {
    let mut running = start(2).await;
    running.source.disable_stream(TABLE);
    assert_eq!(running.next().await, StreamEvent::Disabled);
    let state = running.state.clone();
    assert_eq!(running.end().await, FollowEnd::Disabled);
    assert_eq!(state.borrow().phase, StreamPhase::Disabled);
}

#[tokio::test(start_paused = true)]
async fn a_pinned_stream_that_is_disabled_is_reported() {
    let (source, arn) = source_with_stream(1);
    let follower = open(&source, StreamTarget::pinned(TABLE, arn)).await;
    let mut running = spawn(source, follower);
    running.source.replace_stream(TABLE);
    // Pinned: the new ARN is not followed; the pinned one is disabled.
    assert_eq!(running.next().await, StreamEvent::Disabled);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_receiver_stops_the_follower() {
    let running = start(1).await;
    let Running {
        events,
        task,
        state,
        ..
    } = running;
    drop(events);
    let end = tokio::time::timeout(PATIENCE, task)
        .await
        .expect("ended")
        .expect("no panic");
    assert_eq!(end, FollowEnd::ReceiverClosed);
    assert_eq!(state.borrow().phase, StreamPhase::Stopped);
}

// ------------------------------------------------------------------- pacing

#[tokio::test(start_paused = true)]
async fn a_busy_shard_is_polled_at_most_five_times_a_second() {
    let mut running = start(1).await;
    running.source.set_records_per_call(1);
    let shard = running.source.open_shards(TABLE)[0].clone();
    let written: Vec<String> = (0..40).map(|i| format!("ns/s/K{i}")).collect();
    for name in &written {
        running.put(name);
    }
    let refs: Vec<&str> = written.iter().map(String::as_str).collect();
    running.changes_until(&refs).await;
    let times = running.source.get_records_times(&shard);
    assert!(times.len() >= 40);
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(200), "{pair:?}");
    }
    for (i, start) in times.iter().enumerate() {
        let in_a_second = times[i..]
            .iter()
            .take_while(|t| **t - *start < Duration::from_secs(1))
            .count();
        assert!(in_a_second <= 5, "{in_a_second} GetRecords within 1 s");
    }
    // ... and no slower than needed: 40 records at 5/s take about 8 s.
    let span = *times.last().expect("calls") - times[0];
    assert!(span <= Duration::from_secs(9), "{span:?}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_shard_backs_off_to_about_one_second() {
    let mut running = start(1).await;
    let shard = running.source.open_shards(TABLE)[0].clone();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let times = running.source.get_records_times(&shard);
    let gaps: Vec<Duration> = times.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(gaps.windows(2).all(|g| g[0] <= g[1]), "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_secs(1)),
        "{gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(200)),
        "{gaps:?}"
    );
    assert!(
        (18..=25).contains(&times.len()),
        "{} GetRecords in 20 idle seconds",
        times.len()
    );
    // A record written while idle arrives within about a second.
    let written = Instant::now();
    running.put("late/s/KEY");
    running.changes_until(&["late/s/KEY"]).await;
    assert!(written.elapsed() <= Duration::from_millis(1100));
}

#[tokio::test(start_paused = true)]
async fn throttling_backs_off_and_reports_an_error_state() {
    let mut running = start(1).await;
    let shard = running.source.open_shards(TABLE)[0].clone();
    for _ in 0..3 {
        running.source.fail_next(
            Operation::GetRecords,
            StreamError::Throttled("slow down".into()),
        );
    }
    running.put("ns/s/KEY");
    let mut state = running.state.clone();
    tokio::time::timeout(
        PATIENCE,
        state.wait_for(|s| matches!(s.phase, StreamPhase::Error(_))),
    )
    .await
    .expect("error state in time")
    .expect("follower alive");
    running.changes_until(&["ns/s/KEY"]).await;
    assert_eq!(running.state.borrow().phase, StreamPhase::Following);
    let times = running.source.get_records_times(&shard);
    let gaps: Vec<Duration> = times.windows(2).map(|p| p[1] - p[0]).take(3).collect();
    assert_eq!(
        gaps,
        [1, 2, 4].map(Duration::from_secs),
        "exponential back-off after throttling"
    );
}

impl Running {
    /// Waits (virtual time) until `GetRecords` has been called on `shard`
    /// more than `calls` times.
    async fn get_records_called(&self, shard: &str, calls: usize) {
        tokio::time::timeout(PATIENCE, async {
            while self.source.get_records_times(shard).len() <= calls {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("GetRecords called in time");
    }

    async fn phase_until(&mut self, done: impl Fn(&StreamPhase) -> bool) {
        tokio::time::timeout(PATIENCE, self.state.wait_for(|s| done(&s.phase)))
            .await
            .expect("phase reached in time")
            .expect("follower alive");
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_get_records_does_not_delay_the_other_shards() {
    let mut running = start(2).await;
    let shards = running.source.open_shards(TABLE);
    let (hung, healthy) = (shards[0].as_str(), shards[1].as_str());
    running.source.hang_get_records(hung, true);
    let before = running.source.get_records_times(hung).len();
    running.get_records_called(hung, before).await;
    for round in 0..5 {
        let name = format!("app/s/KEY_{round}");
        let written = Instant::now();
        running
            .source
            .write_to_shard(TABLE, healthy, EventKind::Insert, &name)
            .expect("open shard");
        running.changes_until(&[name.as_str()]).await;
        assert!(
            written.elapsed() <= Duration::from_millis(1100),
            "round {round}: {:?} while shard {hung} hangs",
            written.elapsed()
        );
    }
    assert_eq!(running.state.borrow().phase, StreamPhase::Following);
}

#[tokio::test(start_paused = true)]
async fn a_hung_get_records_is_cut_reported_and_retried() {
    let mut running = start(2).await;
    let hung = running.source.open_shards(TABLE)[0].clone();
    running.source.hang_get_records(&hung, true);
    let started = Instant::now();
    running
        .phase_until(|p| matches!(p, StreamPhase::Error(e) if e.contains("GetRecords did not answer within 40s")))
        .await;
    let call_timeout = FollowerOptions::default().call_timeout;
    assert!(started.elapsed() >= call_timeout, "{:?}", started.elapsed());
    running.source.hang_get_records(&hung, false);
    running
        .source
        .write_to_shard(TABLE, &hung, EventKind::Insert, "app/s/LATE")
        .expect("open shard");
    running.changes_until(&["app/s/LATE"]).await;
    running.phase_until(|p| *p == StreamPhase::Following).await;
}

// ----------------------------------------------------------------- debounce

fn changes(names: &[String]) -> Changes {
    let mut changes = Changes::default();
    for (i, name) in names.iter().enumerate() {
        changes.add_record(&StreamRecord {
            sequence_number: format!("{i}"),
            event: EventKind::Insert,
            name: Some(name.clone()),
            created: Some(chrono::Utc::now()),
        });
    }
    changes
}

#[test]
fn the_default_max_delay_is_ten_wait_times_capped_at_thirty_seconds() {
    let s = Duration::from_secs;
    assert_eq!(default_max_delay(s(0)), s(0));
    assert_eq!(default_max_delay(s(1)), s(10));
    assert_eq!(default_max_delay(s(10)), s(30));
    assert_eq!(default_max_delay(s(60)), s(60));
}

#[tokio::test(start_paused = true)]
async fn the_debouncer_waits_for_quiet_and_caps_the_delay() {
    let s = Duration::from_secs;
    let t0 = Instant::now();
    let mut debouncer = Debouncer::with_max_delay(s(2), s(5));
    assert_eq!(debouncer.deadline(), None);
    debouncer.push(changes(&["a/b/C".into()]), t0);
    assert_eq!(debouncer.deadline(), Some(t0 + s(2)));
    assert_eq!(debouncer.take_due(t0 + s(1)), None);
    debouncer.push(changes(&["a/b/D".into()]), t0 + s(1));
    assert_eq!(debouncer.deadline(), Some(t0 + s(3)));
    debouncer.push(changes(&["a/b/E".into()]), t0 + s(4));
    assert_eq!(debouncer.deadline(), Some(t0 + s(5)), "capped");
    let batch = debouncer.take_due(t0 + s(5)).expect("due");
    assert_eq!(batch.names.len(), 3);
    assert!(debouncer.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_burst_within_wait_time_becomes_one_batch() {
    let (tx, rx) = mpsc::channel(1000);
    let mut debounced = DebouncedEvents::new(rx, Debouncer::new(Duration::from_secs(2)));
    let producer = tokio::spawn(async move {
        for i in 0..100 {
            let batch = changes(&[format!("ns/s{i}/KEY")]);
            tx.send(StreamEvent::Changes(batch)).await.expect("send");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut batches = Vec::new();
    while let Some(event) = debounced.next().await {
        match event {
            StreamEvent::Changes(c) => batches.push(c),
            other => panic!("{other:?}"),
        }
    }
    producer.await.expect("producer");
    assert!(
        (1..=3).contains(&batches.len()),
        "{} batches",
        batches.len()
    );
    let all = merged(&batches);
    assert_eq!(all.names.len(), 100);
    assert_eq!(all.counts.inserts, 100);
}

#[tokio::test(start_paused = true)]
async fn wait_time_zero_applies_at_once() {
    let (tx, rx) = mpsc::channel(10);
    let mut debounced = DebouncedEvents::new(rx, Debouncer::new(Duration::ZERO));
    let t0 = Instant::now();
    tx.send(StreamEvent::Changes(changes(&["a/b/C".into()])))
        .await
        .expect("send");
    let event = debounced.next().await;
    assert!(matches!(event, Some(StreamEvent::Changes(c)) if c.names.contains("a/b/C")));
    assert_eq!(Instant::now(), t0, "no waiting");
}

#[tokio::test(start_paused = true)]
async fn a_steady_trickle_is_flushed_within_the_max_delay() {
    let wait = Duration::from_secs(1);
    let (tx, rx) = mpsc::channel(1000);
    let mut debounced = DebouncedEvents::new(rx, Debouncer::new(wait));
    let max_delay = default_max_delay(wait);
    let producer = tokio::spawn(async move {
        let mut sent = BTreeMap::new();
        for i in 0..120 {
            let name = format!("ns/s/K{i}");
            sent.insert(name.clone(), Instant::now());
            tx.send(StreamEvent::Changes(changes(&[name])))
                .await
                .expect("send");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        sent
    });
    let mut received = BTreeMap::new();
    let mut batches = 0;
    while let Some(event) = debounced.next().await {
        let StreamEvent::Changes(c) = event else {
            panic!("{event:?}");
        };
        batches += 1;
        for name in c.names {
            received.insert(name, Instant::now());
        }
    }
    let sent = producer.await.expect("producer");
    assert_eq!(received.len(), 120);
    for (name, at) in &sent {
        let delay = received[name] - *at;
        assert!(delay <= max_delay, "{name} waited {delay:?}");
    }
    assert!((5..=10).contains(&batches), "{batches} batches in 60 s");
}

#[tokio::test(start_paused = true)]
async fn control_events_come_after_pending_names() {
    let (tx, rx) = mpsc::channel(10);
    let mut debounced = DebouncedEvents::new(rx, Debouncer::new(Duration::from_secs(10)));
    tx.send(StreamEvent::Changes(changes(&["a/b/C".into()])))
        .await
        .expect("send");
    tx.send(StreamEvent::Gap {
        reason: "trimmed".into(),
    })
    .await
    .expect("send");
    let t0 = Instant::now();
    assert!(matches!(
        debounced.next().await,
        Some(StreamEvent::Changes(_))
    ));
    assert!(matches!(
        debounced.next().await,
        Some(StreamEvent::Gap { .. })
    ));
    assert_eq!(Instant::now(), t0, "a control event does not wait");
    drop(tx);
    assert_eq!(debounced.next().await, None);
}

#[tokio::test(start_paused = true)]
async fn pending_names_can_be_taken_when_a_full_sync_starts() {
    let (tx, rx) = mpsc::channel(10);
    let mut debounced = DebouncedEvents::new(rx, Debouncer::new(Duration::from_secs(10)));
    tx.send(StreamEvent::Changes(changes(&["a/b/C".into()])))
        .await
        .expect("send");
    let pending = debounced.take_pending().expect("pending");
    assert_eq!(pending.names, names(&["a/b/C"]));
    assert_eq!(debounced.take_pending(), None);
}
