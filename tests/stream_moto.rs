//! The stream follower against moto's DynamoDB Streams, with the table
//! written by the real credstash CLI. (Shard rollover, expiry, trimming and
//! stream replacement are beyond moto: see the in-memory tests in
//! `src/stream/tests.rs`.)

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kubestash::stream::{
    discover, AwsStreamSource, Changes, Discovered, FollowEnd, FollowerOptions, StreamEvent,
    StreamFollower, StreamPhase, StreamSource, StreamState, StreamTarget,
};
use support::{run_ok, Moto};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Real time to wait for a record before failing.
const PATIENCE: Duration = Duration::from_secs(30);

fn shared_moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

async fn source(moto: &Moto) -> Arc<dyn StreamSource> {
    Arc::new(AwsStreamSource::new(&moto.sdk_config().await))
}

/// `fixture.py init`, one at a time (it creates the shared KMS key once).
fn init_table(moto: &Moto, table: &str) {
    static INIT: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INIT.lock().unwrap_or_else(|e| e.into_inner());
    moto.fixture(&["init", table]);
}

/// A credstash table (each test its own) with a stream of `view_type`.
fn table_with_stream(moto: &Moto, table: &str, view_type: &str) {
    init_table(moto, table);
    moto.fixture(&["enable-stream", table, view_type]);
}

fn credstash(moto: &Moto, table: &str, args: &[&str]) {
    let mut full = vec!["-t", table];
    full.extend_from_slice(args);
    run_ok(&mut moto.credstash(&full));
}

async fn open(moto: &Moto, table: &str) -> StreamFollower {
    let source = source(moto).await;
    let target = StreamTarget::table(table);
    let status = discover(&*source, &target).await.expect("discover");
    let Discovered::Enabled { arn } = status else {
        panic!("no stream on {table}: {status:?}");
    };
    StreamFollower::open(source, target, arn, FollowerOptions::default())
        .await
        .expect("open")
}

struct Running {
    events: mpsc::Receiver<StreamEvent>,
    state: watch::Receiver<StreamState>,
    task: JoinHandle<FollowEnd>,
}

fn run(follower: StreamFollower) -> Running {
    let (tx, events) = mpsc::channel(64);
    let state = follower.state();
    let task = tokio::spawn(follower.run(tx));
    Running {
        events,
        state,
        task,
    }
}

impl Running {
    /// Collects `Changes` until `done` holds for everything received.
    async fn changes_until(&mut self, done: impl Fn(&Changes) -> bool) -> Changes {
        let mut all = Changes::default();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done(&all) {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("stream records missing; got so far {all:?}"))
                .expect("follower ended");
            match event {
                StreamEvent::Changes(changes) => all.merge(changes),
                other => panic!("unexpected {other:?}"),
            }
        }
        all
    }

    async fn stop(self) {
        drop(self.events);
        let end = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("follower stops")
            .expect("no panic");
        assert_eq!(end, FollowEnd::ReceiverClosed);
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_sees_the_stream_credstash_tables_lack() {
    let moto = shared_moto();
    let table = "stream-discovery";
    init_table(moto, table);
    let source = source(moto).await;
    let target = StreamTarget::table(table);
    assert_eq!(
        discover(&*source, &target).await,
        Ok(Discovered::Disabled),
        "credstash setup enables no stream"
    );
    moto.fixture(&["enable-stream", table, "KEYS_ONLY"]);
    let status = discover(&*source, &target).await.expect("discover");
    let Discovered::Enabled { arn } = status else {
        panic!("{status:?}");
    };
    assert!(arn.contains(&format!("table/{table}/stream/")), "{arn}");
    assert_eq!(
        discover(&*source, &StreamTarget::pinned(table, arn.clone())).await,
        Ok(Discovered::Enabled { arn })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_new_versions_and_deletes_arrive_and_nothing_between_open_and_run_is_lost() {
    let moto = shared_moto();
    let table = "stream-puts";
    table_with_stream(moto, table, "NEW_IMAGE");
    credstash(moto, table, &["put", "before/open/KEY", "old value"]);
    let follower = open(moto, table).await;
    // What a full sync would overlap with: after open, before run.
    credstash(moto, table, &["put", "between/open-run/KEY", "value"]);
    let mut running = run(follower);
    tokio::time::timeout(
        PATIENCE,
        running
            .state
            .wait_for(|s| s.phase == StreamPhase::Following),
    )
    .await
    .expect("following in time")
    .expect("follower alive");

    credstash(moto, table, &["put", "app/db/PASSWORD", "first"]);
    let first = running
        .changes_until(|c| c.names.contains("app/db/PASSWORD"))
        .await;
    assert_eq!(
        first.names,
        names(&["between/open-run/KEY", "app/db/PASSWORD"]),
        "records from before open are not replayed; those after are all there"
    );
    assert_eq!(first.counts.inserts, 2);
    assert!(first.newest_record.is_some(), "ApproximateCreationDateTime");
    let lag = first.lag(chrono::Utc::now()).expect("lag");
    assert!(lag < Duration::from_secs(120), "{lag:?}");

    credstash(moto, table, &["put", "-a", "app/db/PASSWORD", "second"]);
    let second = running.changes_until(|c| c.counts.inserts >= 1).await;
    assert_eq!(second.names, names(&["app/db/PASSWORD"]));

    // Two versions: credstash delete removes both, one REMOVE record each.
    credstash(moto, table, &["delete", "app/db/PASSWORD"]);
    let removed = running.changes_until(|c| c.counts.removes >= 2).await;
    assert_eq!(removed.names, names(&["app/db/PASSWORD"]));
    assert_eq!((removed.counts.inserts, removed.counts.removes), (0, 2));

    let state = running.state.borrow().clone();
    assert_eq!(state.shards, 1);
    assert_eq!(state.records.total(), 5);
    assert!(state.last_record_time.is_some());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_only_streams_work_too() {
    let moto = shared_moto();
    let table = "stream-keys-only";
    table_with_stream(moto, table, "KEYS_ONLY");
    let mut running = run(open(moto, table).await);
    credstash(moto, table, &["put", "ns/keys-only/KEY", "value"]);
    let changes = running
        .changes_until(|c| c.names.contains("ns/keys-only/KEY"))
        .await;
    assert_eq!(changes.counts.inserts, 1);
    running.stop().await;
}

/// GetRecords per second per shard stays within AWS's 5, and an idle shard
/// is polled about once a second. moto counts every call it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_records_stays_within_the_rate_limits() {
    // Its own moto: the call counts must be this follower's alone.
    let own = Moto::start();
    let moto = &own;
    let table = "stream-pacing";
    table_with_stream(moto, table, "NEW_IMAGE");
    let mut running = run(open(moto, table).await);
    // Warm up: the follower has seen the (empty) shard.
    credstash(moto, table, &["put", "pacing/warm/KEY", "v"]);
    running
        .changes_until(|c| c.names.contains("pacing/warm/KEY"))
        .await;

    // Busy: a stream of puts (credstash takes a while per put).
    let busy_start = Instant::now();
    moto.api_counts(true);
    for i in 0..4 {
        let name = format!("pacing/busy/K{i}");
        credstash(moto, table, &["put", &name, "v"]);
        running.changes_until(|c| c.names.contains(&name)).await;
    }
    let busy = moto.api_counts(true);
    let busy_seconds = busy_start.elapsed().as_secs_f64();
    let busy_calls = busy.get("GetRecords").copied().unwrap_or(0) as f64;
    assert!(
        busy_calls <= 5.0 * busy_seconds + 1.0,
        "{busy_calls} GetRecords in {busy_seconds:.1} s"
    );

    // Idle: about one poll a second (measured over a short window, as a
    // rate, not as synchronisation).
    let idle_start = Instant::now();
    moto.api_counts(true);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle = moto.api_counts(true);
    let idle_seconds = idle_start.elapsed().as_secs_f64();
    let idle_calls = idle.get("GetRecords").copied().unwrap_or(0) as f64;
    assert!(
        idle_calls <= 1.5 * idle_seconds + 2.0,
        "{idle_calls} GetRecords in {idle_seconds:.1} idle s"
    );
    assert!(idle_calls >= 1.0, "the idle shard is still polled");
    running.stop().await;
}
