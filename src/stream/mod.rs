//! Following the credstash table's DynamoDB stream without gaps.
//!
//! How the controller wires it (one CredstashSync):
//! 1. [`discover`] the stream (`spec.streamArn`, or the table's
//!    `LatestStreamArn`). [`Discovered::Disabled`] -> condition
//!    `Streaming=False` reason `StreamDisabled`; full syncs only; discover
//!    again periodically.
//! 2. [`StreamFollower::open`]: opens LATEST iterators (returns quickly).
//! 3. Full sync: read the whole table and apply.
//! 4. Spawn [`StreamFollower::run`] with an `mpsc` sender; read its events
//!    through [`DebouncedEvents`] (`spec.waitTime`). [`StreamEvent::Changes`]:
//!    re-read those names (one consistent Query each) and apply.
//!    [`StreamEvent::Gap`]: full sync (the follower has already re-opened at
//!    LATEST). [`StreamEvent::Replaced`]: open a follower on the new ARN, full
//!    sync, run it. [`StreamEvent::Disabled`]: as in 1, plus a full sync.
//! 5. Status and metrics read [`StreamFollower::state`] (a `watch` of
//!    [`StreamState`]) and the counts in [`Changes`].
//!
//! Nothing is checkpointed: correctness comes from opening iterators before
//! each full read.

pub mod aws;
pub mod debounce;
pub mod discovery;
pub mod events;
pub mod follower;
#[cfg(test)]
pub mod memory;
pub mod source;

pub use aws::AwsStreamSource;
pub use debounce::{default_max_delay, DebouncedEvents, Debouncer};
pub use discovery::{discover, Discovered, StreamTarget};
pub use events::{Changes, EventCounts, StreamEvent, StreamPhase, StreamState};
pub use follower::{FollowEnd, FollowerOptions, StreamFollower};
#[cfg(test)]
pub use memory::MemoryStreamSource;
pub use source::{
    describe_all, EventKind, IteratorPosition, RecordsPage, ShardInfo, StreamError, StreamListing,
    StreamPage, StreamRecord, StreamSource, StreamStatusKind, TableStream,
};

#[cfg(test)]
mod tests;
