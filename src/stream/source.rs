//! The four DynamoDB (Streams) calls the follower needs, behind a trait so
//! the follower's logic is tested without AWS (`memory.rs`) and runs
//! against AWS ([`super::aws`]).

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

/// Why a stream call failed, in the terms the follower acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The shard iterator is older than 15 minutes (or otherwise expired).
    #[error("shard iterator expired: {0}")]
    ExpiredIterator(String),
    /// The position asked for lies before the stream's trim horizon: records
    /// were lost to the 24 h retention.
    #[error("stream data trimmed: {0}")]
    TrimmedData(String),
    /// The table, stream or shard does not exist (any more).
    #[error("not found: {0}")]
    ResourceNotFound(String),
    /// AWS asked us to slow down.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Anything else (network, internal errors, malformed responses).
    #[error("{0}")]
    Other(String),
}

/// The stream state of a table, as `DescribeTable` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableStream {
    /// `StreamSpecification.StreamEnabled`.
    pub enabled: bool,
    /// `LatestStreamArn` (AWS keeps it after the stream is disabled).
    pub latest_arn: Option<String>,
}

/// `StreamDescription.StreamStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatusKind {
    /// Being created.
    Enabling,
    /// Records are written to it.
    Enabled,
    /// Being disabled.
    Disabling,
    /// No new records; its data stays readable for 24 h.
    Disabled,
}

impl StreamStatusKind {
    /// Whether new records still arrive on this stream.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Enabling | Self::Enabled)
    }
}

/// One shard as `DescribeStream` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// `ShardId`.
    pub shard_id: String,
    /// `ParentShardId`: read only after the parent is drained.
    pub parent_shard_id: Option<String>,
    /// `SequenceNumberRange.EndingSequenceNumber`: set once the shard is closed.
    pub ending_sequence_number: Option<String>,
}

impl ShardInfo {
    /// Whether the shard is closed (no new records will be written to it).
    pub fn is_closed(&self) -> bool {
        self.ending_sequence_number.is_some()
    }
}

/// One page of `DescribeStream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPage {
    /// The stream's status.
    pub status: StreamStatusKind,
    /// The shards on this page.
    pub shards: Vec<ShardInfo>,
    /// `LastEvaluatedShardId`: pass it as `exclusive_start_shard_id` for the
    /// next page; `None` on the last page.
    pub last_evaluated_shard_id: Option<String>,
}

/// Where a new shard iterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IteratorPosition {
    /// After the newest record: only records written from now on.
    Latest,
    /// The oldest record still kept.
    TrimHorizon,
    /// Right after the record with this sequence number.
    AfterSequenceNumber(String),
    /// At the record with this sequence number.
    AtSequenceNumber(String),
}

/// A stream record's event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// A new item (a new version of a credstash name).
    Insert,
    /// An existing item was overwritten.
    Modify,
    /// An item was deleted (`credstash delete`: one per version).
    Remove,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 3] = [Self::Insert, Self::Modify, Self::Remove];

    /// DynamoDB's `eventName`, as label `event` of the metrics shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Modify => "MODIFY",
            Self::Remove => "REMOVE",
        }
    }
}

/// One stream record, reduced to what kubestash uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// `dynamodb.SequenceNumber`.
    pub sequence_number: String,
    /// `eventName`.
    pub event: EventKind,
    /// `dynamodb.Keys.name` (S): the credstash name; `None` when absent or
    /// not a string (such records are counted and skipped).
    pub name: Option<String>,
    /// `dynamodb.ApproximateCreationDateTime`.
    pub created: Option<DateTime<Utc>>,
}

/// One `GetRecords` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordsPage {
    /// The records, oldest first.
    pub records: Vec<StreamRecord>,
    /// `NextShardIterator`; `None` once a closed shard is fully read.
    pub next_iterator: Option<String>,
}

/// The DynamoDB and DynamoDB Streams calls the follower makes.
///
/// Object safe: the follower holds an `Arc<dyn StreamSource>`.
pub trait StreamSource: Send + Sync {
    /// `DescribeTable(table)`: whether a stream is enabled, and its ARN.
    fn table_stream<'a>(
        &'a self,
        table: &'a str,
    ) -> BoxFuture<'a, Result<TableStream, StreamError>>;

    /// `DescribeStream(arn, ExclusiveStartShardId)`: one page of shards.
    fn describe_stream<'a>(
        &'a self,
        arn: &'a str,
        exclusive_start_shard_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<StreamPage, StreamError>>;

    /// `GetShardIterator(arn, shard, position)`.
    fn get_shard_iterator<'a>(
        &'a self,
        arn: &'a str,
        shard_id: &'a str,
        position: &'a IteratorPosition,
    ) -> BoxFuture<'a, Result<String, StreamError>>;

    /// `GetRecords(iterator)`.
    fn get_records<'a>(
        &'a self,
        iterator: &'a str,
    ) -> BoxFuture<'a, Result<RecordsPage, StreamError>>;
}

/// A whole `DescribeStream` listing (all pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamListing {
    /// The stream's status (from the first page).
    pub status: StreamStatusKind,
    /// Every shard, in listing order.
    pub shards: Vec<ShardInfo>,
}

/// Upper bound on `DescribeStream` pages read for one listing; a stream has
/// at most a few hundred shards (24 h of 4-hourly rollovers).
const MAX_DESCRIBE_PAGES: usize = 1000;

/// Reads every page of `DescribeStream(arn)`, following
/// `LastEvaluatedShardId`.
pub async fn describe_all(
    source: &dyn StreamSource,
    arn: &str,
) -> Result<StreamListing, StreamError> {
    let first = source.describe_stream(arn, None).await?;
    let status = first.status;
    let mut shards = first.shards;
    let mut next = first.last_evaluated_shard_id;
    let mut pages = 1;
    while let Some(start) = next {
        if pages >= MAX_DESCRIBE_PAGES {
            return Err(StreamError::Other(format!(
                "DescribeStream {arn}: more than {MAX_DESCRIBE_PAGES} pages"
            )));
        }
        let page = source.describe_stream(arn, Some(&start)).await?;
        if page.last_evaluated_shard_id.as_deref() == Some(start.as_str()) {
            return Err(StreamError::Other(format!(
                "DescribeStream {arn}: LastEvaluatedShardId {start} repeats"
            )));
        }
        shards.extend(page.shards);
        next = page.last_evaluated_shard_id;
        pages += 1;
    }
    Ok(StreamListing { status, shards })
}
