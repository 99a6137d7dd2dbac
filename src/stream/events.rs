//! What the follower tells the controller: events on a channel, state on a
//! `watch`.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::source::{EventKind, StreamRecord};

/// Records counted by event type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// `INSERT` records.
    pub inserts: u64,
    /// `MODIFY` records.
    pub modifies: u64,
    /// `REMOVE` records.
    pub removes: u64,
}

impl EventCounts {
    /// Counts one record of `kind`.
    pub fn add(&mut self, kind: EventKind) {
        match kind {
            EventKind::Insert => self.inserts += 1,
            EventKind::Modify => self.modifies += 1,
            EventKind::Remove => self.removes += 1,
        }
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &EventCounts) {
        self.inserts += other.inserts;
        self.modifies += other.modifies;
        self.removes += other.removes;
    }

    /// All records.
    pub fn total(&self) -> u64 {
        self.inserts + self.modifies + self.removes
    }

    /// The count for `kind`.
    pub fn get(&self, kind: EventKind) -> u64 {
        match kind {
            EventKind::Insert => self.inserts,
            EventKind::Modify => self.modifies,
            EventKind::Remove => self.removes,
        }
    }
}

/// Names touched by a batch of stream records: re-read each (one consistent
/// Query) and apply only those keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The credstash names the records touched (unfiltered: invalid names
    /// and excluded namespaces are the caller's business).
    pub names: BTreeSet<String>,
    /// Creation time of the newest record.
    pub newest_record: Option<DateTime<Utc>>,
    /// Creation time of the oldest record (what lag is measured from).
    pub oldest_record: Option<DateTime<Utc>>,
    /// Records by event type.
    pub counts: EventCounts,
    /// Records without a `name` key of type S (counted, otherwise ignored).
    pub unnamed: u64,
}

impl Changes {
    /// Adds one record.
    pub fn add_record(&mut self, record: &StreamRecord) {
        self.counts.add(record.event);
        match &record.name {
            Some(name) => {
                self.names.insert(name.clone());
            }
            None => self.unnamed += 1,
        }
        if let Some(created) = record.created {
            self.newest_record = self.newest_record.max(Some(created));
            self.oldest_record = Some(self.oldest_record.map_or(created, |o| o.min(created)));
        }
    }

    /// Folds `other` (a later batch) into this one.
    pub fn merge(&mut self, other: Changes) {
        self.names.extend(other.names);
        self.newest_record = self.newest_record.max(other.newest_record);
        self.oldest_record = match (self.oldest_record, other.oldest_record) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.counts.merge(&other.counts);
        self.unnamed += other.unnamed;
    }

    /// Folds `more` into what `slot` holds, or puts it there: the one
    /// merge-or-insert of batches waiting to be applied.
    pub fn merge_into(slot: &mut Option<Changes>, more: Changes) {
        match slot {
            Some(existing) => existing.merge(more),
            None => *slot = Some(more),
        }
    }

    /// Whether no record is in the batch.
    pub fn is_empty(&self) -> bool {
        self.counts.total() == 0
    }

    /// Stream lag at `now`: time since the oldest record of the batch was
    /// created (zero when clocks disagree); `None` without creation times.
    pub fn lag(&self, now: DateTime<Utc>) -> Option<Duration> {
        let oldest = self.oldest_record?;
        Some((now - oldest).to_std().unwrap_or(Duration::ZERO))
    }
}

/// What the follower sends the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Records touched these names.
    Changes(Changes),
    /// Stream data was lost (trimmed, or a shard vanished). The follower has
    /// ALREADY re-opened its iterators at LATEST when this arrives, and goes
    /// on following: the controller runs a full sync now, which covers
    /// everything the gap could have hidden.
    Gap {
        /// Why, for logs and events.
        reason: String,
    },
    /// The table's stream was replaced (disabled and re-enabled: a new ARN).
    /// The follower has stopped. The controller opens a follower on
    /// `new_arn`, runs a full sync, then runs the new follower.
    Replaced {
        /// The stream to follow now.
        new_arn: String,
    },
    /// The stream is disabled or gone (pinned ARN). The follower has
    /// stopped. Condition `Streaming=False` reason `StreamDisabled`; run a
    /// full sync (it covers the stream's last records) and re-run
    /// [`super::discover`] periodically to pick up a new stream.
    Disabled,
}

/// What the follower is doing, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPhase {
    /// Iterators opened, [`super::StreamFollower::run`] not started yet.
    Opened,
    /// Reading records.
    Following,
    /// The stream is disabled; the follower stopped.
    Disabled,
    /// The stream was replaced by `new_arn`; the follower stopped.
    Replaced {
        /// The new stream.
        new_arn: String,
    },
    /// Calls are failing; the follower retries with back-off.
    Error(String),
    /// The event receiver was dropped; the follower stopped.
    Stopped,
}

/// A snapshot of the follower, published on a `tokio::sync::watch` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The stream followed.
    pub arn: String,
    /// What it is doing.
    pub phase: StreamPhase,
    /// Shards being read or waiting for their parent (not yet drained).
    pub shards: usize,
    /// Creation time of the newest record received.
    pub last_record_time: Option<DateTime<Utc>>,
    /// Records received since open, by event type.
    pub records: EventCounts,
    /// Gaps detected since open.
    pub gaps: u64,
}

impl StreamState {
    /// The state right after open.
    pub fn opened(arn: &str, shards: usize) -> Self {
        Self {
            arn: arn.to_owned(),
            phase: StreamPhase::Opened,
            shards,
            last_record_time: None,
            records: EventCounts::default(),
            gaps: 0,
        }
    }
}
