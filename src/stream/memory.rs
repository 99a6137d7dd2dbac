//! An in-memory [`StreamSource`]: tables with streams, several shards with
//! parent/child lineage, rollover, iterator expiry, trimming and stream
//! replacement on demand, and a log of the calls made. Compiled for the
//! crate's unit tests only; it never talks to AWS.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::Utc;
use futures::future::{self, BoxFuture};
use parking_lot::{Mutex, MutexGuard};
use tokio::time::Instant;

use super::source::{
    EventKind, IteratorPosition, RecordsPage, ShardInfo, StreamError, StreamPage, StreamRecord,
    StreamSource, StreamStatusKind, TableStream,
};

/// One of the four calls, for [`MemoryStreamSource::fail_next`] and the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `DescribeTable`.
    DescribeTable,
    /// `DescribeStream`.
    DescribeStream,
    /// `GetShardIterator`.
    GetShardIterator,
    /// `GetRecords`.
    GetRecords,
}

/// A call made to the source, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Which call.
    pub operation: Operation,
    /// The shard it concerned (`GetShardIterator`, `GetRecords`).
    pub shard_id: Option<String>,
    /// `GetShardIterator`'s position.
    pub position: Option<IteratorPosition>,
    /// When (tokio's clock, so paused-time tests see virtual time).
    pub at: Instant,
}

/// In-memory DynamoDB Streams. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct MemoryStreamSource {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    tables: BTreeMap<String, MemTable>,
    streams: BTreeMap<String, MemStream>,
    iterators: HashMap<String, MemIterator>,
    next_id: u64,
    describe_page_size: usize,
    records_per_call: usize,
    failures: VecDeque<(Operation, StreamError)>,
    hung_shards: HashSet<String>,
    calls: Vec<Call>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            tables: BTreeMap::new(),
            streams: BTreeMap::new(),
            iterators: HashMap::new(),
            next_id: 1,
            describe_page_size: 100,
            records_per_call: 1000,
            failures: VecDeque::new(),
            hung_shards: HashSet::new(),
            calls: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct MemTable {
    enabled: bool,
    latest_arn: Option<String>,
}

#[derive(Debug)]
struct MemStream {
    status: StreamStatusKind,
    shards: Vec<MemShard>,
}

#[derive(Debug)]
struct MemShard {
    id: String,
    parent: Option<String>,
    records: Vec<StreamRecord>,
    /// Records before this index are trimmed.
    trimmed: usize,
    ending_sequence_number: Option<String>,
}

#[derive(Debug, Clone)]
struct MemIterator {
    arn: String,
    shard_id: String,
    position: usize,
    expired: bool,
}

impl MemoryStreamSource {
    /// An empty source with no tables.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Creates `table` without a stream.
    pub fn create_table(&self, table: &str) {
        self.lock().tables.entry(table.to_owned()).or_default();
    }

    /// Enables a stream on `table` (creating the table if needed) with
    /// `shards` open shards, and returns its (new) ARN.
    pub fn enable_stream(&self, table: &str, shards: usize) -> String {
        let mut inner = self.lock();
        let label = inner.next_id();
        let arn =
            format!("arn:aws:dynamodb:us-east-1:000000000000:table/{table}/stream/{label:06}");
        let shards = (0..shards.max(1))
            .map(|_| MemShard::new(inner.next_shard_id(), None))
            .collect();
        inner.streams.insert(
            arn.clone(),
            MemStream {
                status: StreamStatusKind::Enabled,
                shards,
            },
        );
        let entry = inner.tables.entry(table.to_owned()).or_default();
        entry.enabled = true;
        entry.latest_arn = Some(arn.clone());
        arn
    }

    /// Disables `table`'s stream: its shards close, it turns `DISABLED`, the
    /// table keeps it as `LatestStreamArn` with `StreamEnabled` false.
    pub fn disable_stream(&self, table: &str) {
        let mut inner = self.lock();
        let Some(arn) = inner.live_arn(table) else {
            return;
        };
        let ids: Vec<String> = inner.open_shard_ids(&arn);
        for id in ids {
            inner.close_shard(&arn, &id);
        }
        if let Some(stream) = inner.streams.get_mut(&arn) {
            stream.status = StreamStatusKind::Disabled;
        }
        if let Some(entry) = inner.tables.get_mut(table) {
            entry.enabled = false;
        }
    }

    /// Disables and re-enables `table`'s stream: a new ARN, as AWS does.
    pub fn replace_stream(&self, table: &str) -> String {
        self.disable_stream(table);
        self.enable_stream(table, 1)
    }

    /// Sets a stream's status directly (e.g. `Disabled` for a pinned ARN).
    pub fn set_stream_status(&self, arn: &str, status: StreamStatusKind) {
        if let Some(stream) = self.lock().streams.get_mut(arn) {
            stream.status = status;
        }
    }

    /// Writes a record for `name` to the open shard of `table`'s stream the
    /// name hashes to; returns its sequence number, or `None` when the table
    /// has no live stream (the write is not recorded, as with AWS).
    pub fn write(&self, table: &str, event: EventKind, name: &str) -> Option<String> {
        let mut inner = self.lock();
        let arn = inner.live_arn(table)?;
        let sequence_number = format!("{:021}", inner.next_id());
        let stream = inner.streams.get_mut(&arn)?;
        let mut open: Vec<&mut MemShard> = stream
            .shards
            .iter_mut()
            .filter(|s| s.ending_sequence_number.is_none())
            .collect();
        if open.is_empty() {
            return None;
        }
        let index = name_hash(name) % open.len();
        open[index].records.push(StreamRecord {
            sequence_number: sequence_number.clone(),
            event,
            name: Some(name.to_owned()),
            created: Some(Utc::now()),
        });
        Some(sequence_number)
    }

    /// Writes a record for `name` to the open shard `shard_id` of `table`'s
    /// stream; `None` when there is no such open shard.
    pub fn write_to_shard(
        &self,
        table: &str,
        shard_id: &str,
        event: EventKind,
        name: &str,
    ) -> Option<String> {
        let mut inner = self.lock();
        let arn = inner.live_arn(table)?;
        let sequence_number = format!("{:021}", inner.next_id());
        let shard = inner.shard_mut(&arn, shard_id)?;
        if shard.ending_sequence_number.is_some() {
            return None;
        }
        shard.records.push(StreamRecord {
            sequence_number: sequence_number.clone(),
            event,
            name: Some(name.to_owned()),
            created: Some(Utc::now()),
        });
        Some(sequence_number)
    }

    /// An `INSERT` record for `name` (a `credstash put`).
    pub fn put(&self, table: &str, name: &str) -> Option<String> {
        self.write(table, EventKind::Insert, name)
    }

    /// A `REMOVE` record for `name` (one version deleted).
    pub fn remove(&self, table: &str, name: &str) -> Option<String> {
        self.write(table, EventKind::Remove, name)
    }

    /// Closes every open shard of `table`'s stream and opens `children`
    /// children for each; returns the new shard ids.
    pub fn rollover(&self, table: &str, children: usize) -> Vec<String> {
        let mut inner = self.lock();
        let Some(arn) = inner.live_arn(table) else {
            return Vec::new();
        };
        let mut created = Vec::new();
        for parent in inner.open_shard_ids(&arn) {
            inner.close_shard(&arn, &parent);
            for _ in 0..children.max(1) {
                let id = inner.next_shard_id();
                if let Some(stream) = inner.streams.get_mut(&arn) {
                    stream
                        .shards
                        .push(MemShard::new(id.clone(), Some(parent.clone())));
                }
                created.push(id);
            }
        }
        created
    }

    /// Closes one shard of `table`'s stream without opening a child (as if
    /// the child were not listed yet); see [`Self::add_child`].
    pub fn close_shard(&self, table: &str, shard_id: &str) {
        let mut inner = self.lock();
        if let Some(arn) = inner.live_arn(table) {
            inner.close_shard(&arn, shard_id);
        }
    }

    /// Opens a child of `parent` on `table`'s stream; returns its id.
    pub fn add_child(&self, table: &str, parent: &str) -> Option<String> {
        let mut inner = self.lock();
        let arn = inner.live_arn(table)?;
        let id = inner.next_shard_id();
        let stream = inner.streams.get_mut(&arn)?;
        stream
            .shards
            .push(MemShard::new(id.clone(), Some(parent.to_owned())));
        Some(id)
    }

    /// Expires every shard iterator handed out so far.
    pub fn expire_iterators(&self) {
        for iterator in self.lock().iterators.values_mut() {
            iterator.expired = true;
        }
    }

    /// Trims every record currently held by `table`'s stream: iterators
    /// positioned before them fail with `TrimmedData`.
    pub fn trim(&self, table: &str) {
        let mut inner = self.lock();
        let Some(arn) = inner.tables.get(table).and_then(|t| t.latest_arn.clone()) else {
            return;
        };
        if let Some(stream) = inner.streams.get_mut(&arn) {
            for shard in &mut stream.shards {
                shard.trimmed = shard.records.len();
            }
        }
    }

    /// Makes the next call of `operation` fail with `error` (queued in order).
    pub fn fail_next(&self, operation: Operation, error: StreamError) {
        self.lock().failures.push_back((operation, error));
    }

    /// While `hang` is true, `GetRecords` on `shard_id` never answers (the
    /// call is logged), as over a connection that went silent.
    pub fn hang_get_records(&self, shard_id: &str, hang: bool) {
        let mut inner = self.lock();
        if hang {
            inner.hung_shards.insert(shard_id.to_owned());
        } else {
            inner.hung_shards.remove(shard_id);
        }
    }

    /// `DescribeStream` page size (default 100), to exercise pagination.
    pub fn set_describe_page_size(&self, size: usize) {
        self.lock().describe_page_size = size.max(1);
    }

    /// Records returned by one `GetRecords` at most (default 1000).
    pub fn set_records_per_call(&self, limit: usize) {
        self.lock().records_per_call = limit.max(1);
    }

    /// The table's `LatestStreamArn`.
    pub fn stream_arn(&self, table: &str) -> Option<String> {
        self.lock()
            .tables
            .get(table)
            .and_then(|t| t.latest_arn.clone())
    }

    /// Ids of the open shards of `table`'s latest stream.
    pub fn open_shards(&self, table: &str) -> Vec<String> {
        let inner = self.lock();
        match inner.tables.get(table).and_then(|t| t.latest_arn.clone()) {
            Some(arn) => inner.open_shard_ids(&arn),
            None => Vec::new(),
        }
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many calls of `operation` were made.
    pub fn count(&self, operation: Operation) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }

    /// When `GetRecords` was called on `shard_id`.
    pub fn get_records_times(&self, shard_id: &str) -> Vec<Instant> {
        self.lock()
            .calls
            .iter()
            .filter(|c| {
                c.operation == Operation::GetRecords && c.shard_id.as_deref() == Some(shard_id)
            })
            .map(|c| c.at)
            .collect()
    }
}

impl Inner {
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn next_shard_id(&mut self) -> String {
        format!("shardId-{:08}", self.next_id())
    }

    fn live_arn(&self, table: &str) -> Option<String> {
        let entry = self.tables.get(table)?;
        let arn = entry.latest_arn.clone()?;
        let live = self.streams.get(&arn)?.status.is_live();
        (entry.enabled && live).then_some(arn)
    }

    fn open_shard_ids(&self, arn: &str) -> Vec<String> {
        self.streams
            .get(arn)
            .map(|s| {
                s.shards
                    .iter()
                    .filter(|s| s.ending_sequence_number.is_none())
                    .map(|s| s.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn close_shard(&mut self, arn: &str, shard_id: &str) {
        let fallback = format!("{:021}", self.next_id());
        if let Some(shard) = self.shard_mut(arn, shard_id) {
            let last = shard.records.last().map(|r| r.sequence_number.clone());
            shard.ending_sequence_number = Some(last.unwrap_or(fallback));
        }
    }

    fn shard_mut(&mut self, arn: &str, shard_id: &str) -> Option<&mut MemShard> {
        self.streams
            .get_mut(arn)?
            .shards
            .iter_mut()
            .find(|s| s.id == shard_id)
    }

    fn shard(&self, arn: &str, shard_id: &str) -> Result<&MemShard, StreamError> {
        self.streams
            .get(arn)
            .ok_or_else(|| StreamError::ResourceNotFound(format!("stream {arn}")))?
            .shards
            .iter()
            .find(|s| s.id == shard_id)
            .ok_or_else(|| StreamError::ResourceNotFound(format!("shard {shard_id}")))
    }

    fn log(
        &mut self,
        operation: Operation,
        shard_id: Option<&str>,
        position: Option<&IteratorPosition>,
    ) {
        self.calls.push(Call {
            operation,
            shard_id: shard_id.map(str::to_owned),
            position: position.cloned(),
            at: Instant::now(),
        });
    }

    /// The injected failure for `operation`, if one is queued first for it.
    fn injected(&mut self, operation: Operation) -> Result<(), StreamError> {
        match self.failures.iter().position(|(op, _)| *op == operation) {
            Some(index) => match self.failures.remove(index) {
                Some((_, error)) => Err(error),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    fn table_stream(&mut self, table: &str) -> Result<TableStream, StreamError> {
        self.log(Operation::DescribeTable, None, None);
        self.injected(Operation::DescribeTable)?;
        let entry = self
            .tables
            .get(table)
            .ok_or_else(|| StreamError::ResourceNotFound(format!("table {table}")))?;
        Ok(TableStream {
            enabled: entry.enabled,
            latest_arn: entry.latest_arn.clone(),
        })
    }

    fn describe_stream(
        &mut self,
        arn: &str,
        start: Option<&str>,
    ) -> Result<StreamPage, StreamError> {
        self.log(Operation::DescribeStream, None, None);
        self.injected(Operation::DescribeStream)?;
        let page_size = self.describe_page_size;
        let stream = self
            .streams
            .get(arn)
            .ok_or_else(|| StreamError::ResourceNotFound(format!("stream {arn}")))?;
        let from = match start {
            Some(start) => match stream.shards.iter().position(|s| s.id == start) {
                Some(index) => index + 1,
                None => return Err(StreamError::Other(format!("unknown shard {start}"))),
            },
            None => 0,
        };
        let end = (from + page_size).min(stream.shards.len());
        let shards: Vec<ShardInfo> = stream.shards[from..end]
            .iter()
            .map(MemShard::info)
            .collect();
        let last_evaluated_shard_id = if end < stream.shards.len() {
            shards.last().map(|s| s.shard_id.clone())
        } else {
            None
        };
        Ok(StreamPage {
            status: stream.status,
            shards,
            last_evaluated_shard_id,
        })
    }

    fn get_shard_iterator(
        &mut self,
        arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<String, StreamError> {
        self.log(Operation::GetShardIterator, Some(shard_id), Some(position));
        self.injected(Operation::GetShardIterator)?;
        let shard = self.shard(arn, shard_id)?;
        let index = shard.position(position)?;
        let token = format!("iterator-{}", self.next_id());
        self.iterators.insert(
            token.clone(),
            MemIterator {
                arn: arn.to_owned(),
                shard_id: shard_id.to_owned(),
                position: index,
                expired: false,
            },
        );
        Ok(token)
    }

    /// Whether `GetRecords(token)` hangs ([`MemoryStreamSource::hang_get_records`]);
    /// logs the call when it does.
    fn hangs(&mut self, token: &str) -> bool {
        let Some(shard_id) = self.iterators.get(token).map(|i| i.shard_id.clone()) else {
            return false;
        };
        let hangs = self.hung_shards.contains(&shard_id);
        if hangs {
            self.log(Operation::GetRecords, Some(&shard_id), None);
        }
        hangs
    }

    fn get_records(&mut self, token: &str) -> Result<RecordsPage, StreamError> {
        let iterator = self
            .iterators
            .get(token)
            .cloned()
            .ok_or_else(|| StreamError::Other(format!("invalid shard iterator {token}")))?;
        self.log(Operation::GetRecords, Some(&iterator.shard_id), None);
        self.injected(Operation::GetRecords)?;
        if iterator.expired {
            return Err(StreamError::ExpiredIterator(token.to_owned()));
        }
        let limit = self.records_per_call;
        let shard = self.shard(&iterator.arn, &iterator.shard_id)?;
        if iterator.position < shard.trimmed {
            return Err(StreamError::TrimmedData(format!(
                "shard {} trimmed past the iterator",
                shard.id
            )));
        }
        let end = (iterator.position + limit).min(shard.records.len());
        let records = shard.records[iterator.position..end].to_vec();
        let finished = shard.ending_sequence_number.is_some() && end == shard.records.len();
        let next_iterator = if finished {
            None
        } else {
            let next = format!("iterator-{}", self.next_id());
            let mut state = iterator;
            state.position = end;
            self.iterators.insert(next.clone(), state);
            Some(next)
        };
        Ok(RecordsPage {
            records,
            next_iterator,
        })
    }
}

impl MemShard {
    fn new(id: String, parent: Option<String>) -> Self {
        Self {
            id,
            parent,
            records: Vec::new(),
            trimmed: 0,
            ending_sequence_number: None,
        }
    }

    fn info(&self) -> ShardInfo {
        ShardInfo {
            shard_id: self.id.clone(),
            parent_shard_id: self.parent.clone(),
            ending_sequence_number: self.ending_sequence_number.clone(),
        }
    }

    fn index_of(&self, sequence_number: &str) -> Result<usize, StreamError> {
        self.records
            .iter()
            .position(|r| r.sequence_number == sequence_number)
            .ok_or_else(|| {
                StreamError::Other(format!(
                    "sequence number {sequence_number} not in shard {}",
                    self.id
                ))
            })
    }

    fn position(&self, position: &IteratorPosition) -> Result<usize, StreamError> {
        let index = match position {
            IteratorPosition::Latest => return Ok(self.records.len()),
            IteratorPosition::TrimHorizon => return Ok(self.trimmed),
            IteratorPosition::AfterSequenceNumber(seq) => self.index_of(seq)? + 1,
            IteratorPosition::AtSequenceNumber(seq) => self.index_of(seq)?,
        };
        if index < self.trimmed {
            return Err(StreamError::TrimmedData(format!(
                "shard {}: position before the trim horizon",
                self.id
            )));
        }
        Ok(index)
    }
}

fn name_hash(name: &str) -> usize {
    name.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    })
}

impl StreamSource for MemoryStreamSource {
    fn table_stream<'a>(
        &'a self,
        table: &'a str,
    ) -> BoxFuture<'a, Result<TableStream, StreamError>> {
        Box::pin(future::ready(self.lock().table_stream(table)))
    }

    fn describe_stream<'a>(
        &'a self,
        arn: &'a str,
        exclusive_start_shard_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<StreamPage, StreamError>> {
        Box::pin(future::ready(
            self.lock().describe_stream(arn, exclusive_start_shard_id),
        ))
    }

    fn get_shard_iterator<'a>(
        &'a self,
        arn: &'a str,
        shard_id: &'a str,
        position: &'a IteratorPosition,
    ) -> BoxFuture<'a, Result<String, StreamError>> {
        Box::pin(future::ready(
            self.lock().get_shard_iterator(arn, shard_id, position),
        ))
    }

    fn get_records<'a>(
        &'a self,
        iterator: &'a str,
    ) -> BoxFuture<'a, Result<RecordsPage, StreamError>> {
        let mut inner = self.lock();
        if inner.hangs(iterator) {
            return Box::pin(future::pending());
        }
        Box::pin(future::ready(inner.get_records(iterator)))
    }
}
