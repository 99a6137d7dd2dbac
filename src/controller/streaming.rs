//! The controller's side of a DynamoDB stream: open a follower before a full
//! sync, run it after, and hand its debounced batches to the reconciler.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::crd::ValidSpec;
use crate::stream::{
    discover, AwsStreamSource, Changes, DebouncedEvents, Debouncer, Discovered, FollowerOptions,
    StreamEvent, StreamFollower, StreamPhase, StreamSource, StreamState, StreamTarget,
};

/// Identifies what a follower follows; a spec change that alters it means a
/// new follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKey {
    pub table: String,
    pub region: Option<String>,
    pub explicit_arn: Option<String>,
}

impl StreamKey {
    /// The stream a spec asks for.
    pub fn of(spec: &ValidSpec) -> Self {
        Self {
            table: spec.table.clone(),
            region: spec.region.clone(),
            explicit_arn: spec.stream_arn.clone(),
        }
    }

    fn target(&self) -> StreamTarget {
        StreamTarget {
            table: self.table.clone(),
            explicit_arn: self.explicit_arn.clone(),
        }
    }
}

/// What the follower reported since the reconciler last looked.
#[derive(Debug, Default)]
pub struct Pending {
    /// Names touched, debounced by `waitTime`.
    pub changes: Option<Changes>,
    /// Data was lost (trimmed...), or the stream was replaced or disabled:
    /// a full sync is due. The reason.
    pub gap: Option<String>,
}

/// Where the stream of a CredstashSync stands, for the `Streaming` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamHealth {
    /// Following (state snapshot).
    Following(StreamState),
    /// The table has no (enabled) stream.
    Disabled,
    /// Discovery or opening failed.
    Failed(String),
}

/// The outcome of opening a stream before a full sync.
pub enum Opened {
    /// Iterators are open at LATEST; run it after the full sync.
    Follower(Box<StreamFollower>),
    Disabled,
    Failed(String),
}

/// Discovers the stream of `key` and opens LATEST iterators on it; the
/// follower re-discovers the stream every `check_interval`.
pub async fn open(key: &StreamKey, check_interval: Duration) -> Opened {
    let config = crate::credstash::aws_sdk_config(key.region.as_deref()).await;
    let source: Arc<dyn StreamSource> = Arc::new(AwsStreamSource::new(&config));
    let options = FollowerOptions {
        refresh_interval: check_interval,
        ..FollowerOptions::default()
    };
    open_on(source, key, options).await
}

/// [`open`] over any stream source (tests use the in-memory one).
pub async fn open_on(
    source: Arc<dyn StreamSource>,
    key: &StreamKey,
    options: FollowerOptions,
) -> Opened {
    let arn = match discover(&*source, &key.target()).await {
        Ok(Discovered::Enabled { arn }) => arn,
        Ok(Discovered::Disabled) => return Opened::Disabled,
        Err(err) => {
            return Opened::Failed(format!(
                "discovering the stream of table {}: {err}",
                key.table
            ))
        }
    };
    match StreamFollower::open(source, key.target(), arn.clone(), options).await {
        Ok(follower) => Opened::Follower(Box::new(follower)),
        Err(err) => Opened::Failed(format!("opening stream {arn}: {err}")),
    }
}

/// A running follower and the batches it left for the reconciler. Dropping
/// it stops the follower.
pub struct StreamLink {
    pub key: StreamKey,
    state: watch::Receiver<StreamState>,
    pending: Arc<Mutex<Pending>>,
    task: JoinHandle<()>,
}

impl StreamLink {
    /// Runs `follower`, debouncing its batches by `wait_time`; calls `wake`
    /// whenever something is pending.
    pub fn spawn(
        key: StreamKey,
        follower: StreamFollower,
        wait_time: Duration,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let state = follower.state();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let shared = pending.clone();
        let task = tokio::spawn(async move {
            let (sender, receiver) = mpsc::channel(64);
            let mut events = DebouncedEvents::new(receiver, Debouncer::new(wait_time));
            let consume = async {
                while let Some(event) = events.next().await {
                    record(&shared, event);
                    wake();
                }
            };
            tokio::join!(follower.run(sender), consume);
        });
        Self {
            key,
            state,
            pending,
            task,
        }
    }

    /// Takes what is pending.
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock())
    }

    /// Whether the follower still runs (not replaced, disabled or crashed).
    pub fn is_live(&self) -> bool {
        !self.task.is_finished()
    }

    /// The follower's latest state.
    pub fn state(&self) -> StreamState {
        self.state.borrow().clone()
    }

    /// The stream's health for status.
    pub fn health(&self) -> StreamHealth {
        let state = self.state();
        match &state.phase {
            StreamPhase::Error(reason) => StreamHealth::Failed(reason.clone()),
            StreamPhase::Disabled => StreamHealth::Disabled,
            _ => StreamHealth::Following(state),
        }
    }
}

impl Drop for StreamLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(pending: &Mutex<Pending>, event: StreamEvent) {
    let mut pending = pending.lock();
    match event {
        StreamEvent::Changes(changes) => Changes::merge_into(&mut pending.changes, changes),
        StreamEvent::Gap { reason } => pending.gap = Some(reason),
        StreamEvent::Replaced { new_arn } => {
            pending.gap = Some(format!("the stream was replaced by {new_arn}"))
        }
        StreamEvent::Disabled => pending.gap = Some("the stream was disabled".into()),
    }
}
