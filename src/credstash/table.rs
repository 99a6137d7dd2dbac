//! Reading a credstash table: one paginated (optionally parallel) Scan for
//! everything, or one consistent Query for one name's latest version.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{self, StreamExt};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::crypto;
use super::crypto::CryptoError;
use super::error::{ItemError, KmsError, TableError};
use super::item::{attr, ItemId, SealFingerprint, SealedItem};
use super::kms::KeyService;
use crate::value::SecretValue;

type Attributes = HashMap<String, AttributeValue>;

/// How a [`TableReader`] reads.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Parallel Scan segments (1 = a plain paginated Scan).
    pub scan_segments: u32,
    /// KMS Decrypt calls in flight at once.
    pub decrypt_concurrency: usize,
    /// Longest one attempt of an AWS call may take (a Scan page, a Query, a
    /// KMS Decrypt) before it is cut and retried.
    pub attempt_timeout: Duration,
    /// Items per Scan page (DynamoDB's `Limit`); `None`: pages of 1 MB.
    pub scan_page_items: Option<u32>,
    /// Scan pages requested and decoded at once, across segments. A decoded
    /// page of 1 MB is a few MiB of attribute maps until its items are
    /// sealed compactly, so this, not the segment count, bounds a full
    /// read's memory; the segments still overlap one page's Decrypts with
    /// the next page's request.
    pub scan_pages_in_flight: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            scan_segments: 4,
            decrypt_concurrency: 32,
            attempt_timeout: super::ATTEMPT_TIMEOUT,
            scan_page_items: None,
            scan_pages_in_flight: 1,
        }
    }
}

/// The latest version of one credstash name and what opening it gave.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: ItemId,
    /// Boxed: failures are rare, and an entry stays small.
    pub value: Result<SecretValue, Box<ItemError>>,
    /// The fingerprint of the sealed item it was opened from (`None`: the
    /// item could not even be parsed): the reader recalls the value of an
    /// item read again unchanged instead of decrypting it again.
    pub seal: Option<SealFingerprint>,
}

impl Entry {
    /// What opening the sealed item `seal` gave, if this entry is that
    /// item's and the outcome is worth remembering: a value, or a failed
    /// integrity check (the same sealed item always fails the same way); a
    /// failed KMS call is not (it may succeed next time).
    fn opened_from(&self, seal: SealFingerprint) -> Option<Opened> {
        if self.seal != Some(seal) {
            return None;
        }
        match &self.value {
            Ok(value) => Some(Ok(value.clone())),
            Err(error) => match &**error {
                ItemError::Crypto(error) => Some(Err(error.clone())),
                _ => None,
            },
        }
    }
}

/// The result of a full read: every name's latest version, opened or failed.
#[derive(Debug, Default, Clone)]
pub struct TableRead {
    /// Sorted by credstash name, each name once (a sorted list, not a map:
    /// the name is stored once, in the entry, and nothing else per name).
    entries: Vec<Entry>,
    /// Items whose name or version could not even be read (outside `entries`).
    pub unnamed_failures: Vec<ItemError>,
    /// Whether every Scan page was read. When false, `error` says why and
    /// `entries` holds only what was read: never prune on an incomplete read.
    pub complete: bool,
    pub error: Option<TableError>,
}

#[cfg(test)]
impl Entry {
    /// Version 1 of `name`, opened to `v` (a unit-test fixture).
    pub(crate) fn opened(name: &str) -> Self {
        Entry {
            id: ItemId {
                name: name.to_owned(),
                version: "0000000000000000001".into(),
            },
            value: Ok(SecretValue::from(&b"v"[..])),
            seal: None,
        }
    }
}

impl TableRead {
    /// A complete read of `entries`, the latest version of each name kept (a
    /// unit-test fixture).
    #[cfg(test)]
    pub(crate) fn of_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut entries: Vec<Entry> = entries.into_iter().collect();
        keep_latest(&mut entries, |entry| &entry.id);
        Self {
            entries,
            complete: true,
            ..Default::default()
        }
    }

    /// The entry of `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|entry| entry.id.name.as_str().cmp(name))
            .ok()
            .map(|at| &self.entries[at])
    }

    /// Every entry, in name order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The entries from the first name not before `name` on, in name order.
    pub fn entries_from(&self, name: &str) -> &[Entry] {
        let start = self
            .entries
            .partition_point(|entry| entry.id.name.as_str() < name);
        &self.entries[start..]
    }

    /// Entries that opened, by name.
    pub fn values(&self) -> impl Iterator<Item = (&str, &SecretValue)> {
        self.entries
            .iter()
            .filter_map(|e| e.value.as_ref().ok().map(|v| (e.id.name.as_str(), v)))
    }

    /// Entries that failed, by name.
    pub fn failures(&self) -> impl Iterator<Item = (&Entry, &ItemError)> {
        self.entries
            .iter()
            .filter_map(|e| e.value.as_ref().err().map(|err| (e, &**err)))
    }
}

/// Counters of the DynamoDB and KMS work a reader has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub dynamodb_calls: u64,
    pub kms_decrypt_calls: u64,
    pub kms_cache_hits: u64,
}

/// Reads and opens the items of one credstash table.
///
/// The reader remembers what it opened, with the fingerprint of the sealed
/// item it came from: an item read again unchanged is not decrypted again
/// (no KMS call), and no data key is ever kept. What it remembers is its
/// last complete full read, the very [`TableRead`] the CredstashSyncs of the
/// table keep as their snapshot (shared, not copied), and what it opened
/// since; a complete read replaces both, so the values of items that are
/// gone are dropped.
pub struct TableReader {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    keys: KeyService,
    options: ReaderOptions,
    dynamodb_calls: AtomicU64,
    remembered: Mutex<Remembered>,
    in_flight: Mutex<Option<Flight>>,
    /// One per Scan page that may be requested and decoded at once.
    page_permits: Semaphore,
}

/// What opening one sealed item gave once KMS had unwrapped its data key.
type Opened = Result<SecretValue, CryptoError>;

/// What a reader opened before (see [`TableReader`]).
#[derive(Default)]
struct Remembered {
    /// The last complete full read.
    last_read: Arc<TableRead>,
    /// Items opened since it began (by Queries, or by reads under way).
    since: HashMap<String, (SealFingerprint, Opened)>,
}

/// A name's latest item during a full read.
enum Slot {
    /// What its entry holds: opened (now, or before when the reader knew
    /// this very sealed item, whose bytes are then dropped with the page),
    /// or failed, with the fingerprint of the sealed item.
    Open(Option<SealFingerprint>, Result<SecretValue, Box<ItemError>>),
    /// Waiting for KMS to unwrap its data key. Boxed: a few of these wait
    /// at once, the many open ones stay small.
    Sealed(SealFingerprint, Box<SealedItem>),
}

impl Slot {
    /// The entry of `id`. [`TableReader::read_all`] opens every slot first;
    /// one left sealed is reported as a failed Decrypt, retried next read.
    fn into_entry(self, id: ItemId) -> Entry {
        match self {
            Slot::Open(seal, value) => Entry { id, value, seal },
            Slot::Sealed(seal, _) => Entry {
                id,
                value: Err(Box::new(
                    KmsError::Other("its data key was not unwrapped".into()).into(),
                )),
                seal: Some(seal),
            },
        }
    }
}

/// A full read under way that other callers may join.
struct Flight {
    started: Instant,
    read: Shared<BoxFuture<'static, Arc<TableRead>>>,
}

impl TableReader {
    /// A reader of `table` whose data keys `keys` unwraps.
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        keys: KeyService,
        options: ReaderOptions,
    ) -> Self {
        Self {
            dynamodb,
            table: table.into(),
            keys,
            dynamodb_calls: AtomicU64::new(0),
            remembered: Mutex::new(Remembered::default()),
            in_flight: Mutex::new(None),
            page_permits: Semaphore::new(options.scan_pages_in_flight.max(1)),
            options,
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The KMS work done since the last call (see
    /// [`KeyService::take_unreported`]).
    pub fn take_unreported_kms(&self) -> super::KmsTally {
        self.keys.take_unreported()
    }

    /// Work done since the reader was made.
    pub fn stats(&self) -> ReadStats {
        let kms = self.keys.counters();
        ReadStats {
            dynamodb_calls: self.dynamodb_calls.load(Ordering::Relaxed),
            kms_decrypt_calls: kms.decrypt_calls.load(Ordering::Relaxed),
            kms_cache_hits: kms.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// Reads every name's latest version and opens it. One bad item never
    /// stops the others; a failed Scan page makes the read incomplete.
    ///
    /// Items are opened page by page, as each segment's Scan goes on, so that
    /// at most about a page of sealed items per segment is held at once, not
    /// the whole table's. The last name of a page waits for the next page,
    /// which may hold its newer versions (DynamoDB returns a name's versions
    /// together, in order); a store that does not only costs a Decrypt more.
    ///
    /// A complete read is what the reader remembers from then on.
    pub async fn read_all(&self) -> Arc<TableRead> {
        let segments = self.options.scan_segments.max(1) as usize;
        let concurrency = self.options.decrypt_concurrency.max(1);
        let per_segment = (concurrency / segments).max(1);
        let mut scan = self
            .scan(
                None,
                |id, attributes| self.scanned(id, &attributes),
                |result| self.open_slots(result, per_segment),
            )
            .await;
        self.open_in_place(&mut scan.latest, concurrency).await;
        // Collected in place: the Scan's list becomes the read's.
        let entries = scan
            .latest
            .into_iter()
            .map(|(id, slot)| slot.into_entry(id))
            .collect();
        let complete = scan.error.is_none();
        let read = Arc::new(TableRead {
            entries,
            unnamed_failures: scan.unnamed_failures,
            complete,
            error: scan.error,
        });
        if complete {
            let mut remembered = self.remembered.lock();
            remembered.last_read = read.clone();
            // A new map: a cold read filled this one with every name, and
            // a cleared map would keep that capacity.
            remembered.since = HashMap::new();
        }
        read
    }

    /// An item as the Scan found it: open already when the reader opened
    /// this very sealed item before, else sealed.
    fn scanned(&self, id: ItemId, attributes: &Attributes) -> Slot {
        let sealed = match SealedItem::from_attributes(id, attributes) {
            Ok(sealed) => sealed,
            Err(err) => return Slot::Open(None, Err(Box::new(err))),
        };
        let seal = sealed.fingerprint();
        match self.recall(&sealed.id.name, seal) {
            Some(opened) => Slot::Open(Some(seal), opened.map_err(|err| Box::new(err.into()))),
            None => Slot::Sealed(seal, Box::new(sealed)),
        }
    }

    /// Opens `slot` if it is sealed.
    async fn open_slot(&self, slot: &mut Slot) {
        if let Slot::Sealed(seal, sealed) = slot {
            let seal = *seal;
            let value = self.open_sealed(sealed, seal).await;
            *slot = Slot::Open(Some(seal), value.map_err(Box::new));
        }
    }

    /// Opens the sealed slots of `slots`, `concurrency` at a time.
    async fn open_in_place(&self, slots: &mut [(ItemId, Slot)], concurrency: usize) {
        stream::iter(slots.iter_mut())
            .for_each_concurrent(concurrency, |(_, slot)| self.open_slot(slot))
            .await;
    }

    /// Opens the slots `result` kept since the last page but the last one
    /// (its name's newer versions may come with the next page),
    /// `concurrency` at a time.
    async fn open_slots(
        &self,
        mut result: ScanResult<Slot>,
        concurrency: usize,
    ) -> ScanResult<Slot> {
        let unfinished = result.latest.len().saturating_sub(1);
        let new = result.settled.min(unfinished)..unfinished;
        self.open_in_place(&mut result.latest[new], concurrency)
            .await;
        result.settled = unfinished;
        result
    }

    /// Like [`TableReader::read_all`], but joins a full read already under
    /// way when it started at or after `not_before`: CredstashSyncs of one
    /// table that sync at the same time share one Scan. Whoever needs a read
    /// that began no earlier than an event (a resync request, stream
    /// iterators opened before the read) passes the time of that event.
    pub async fn read_all_joined(self: &Arc<Self>, not_before: Instant) -> Arc<TableRead> {
        let read = {
            let mut flight = self.in_flight.lock();
            match flight.as_ref() {
                Some(running) if running.started >= not_before => running.read.clone(),
                _ => {
                    let reader = self.clone();
                    let read = async move { reader.read_all().await }.boxed().shared();
                    *flight = Some(Flight {
                        started: Instant::now(),
                        read: read.clone(),
                    });
                    read
                }
            }
        };
        let result = read.clone().await;
        let mut flight = self.in_flight.lock();
        if flight.as_ref().is_some_and(|f| f.read.ptr_eq(&read)) {
            // Done: later callers start their own read, and the result is not
            // kept alive here.
            *flight = None;
        }
        result
    }

    /// Reads and opens the latest version of `name` with one consistent Query
    /// (as credstash does); `None` when no version exists.
    pub async fn read_latest(&self, name: &str) -> Result<Option<Entry>, TableError> {
        self.count_call();
        let output = self
            .dynamodb
            .query()
            .table_name(&self.table)
            .key_condition_expression("#n = :name")
            .expression_attribute_names("#n", attr::NAME)
            .expression_attribute_values(":name", AttributeValue::S(name.to_owned()))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| self.query_error(name, DisplayErrorContext(err)))?;
        match output.items.unwrap_or_default().into_iter().next() {
            Some(item) => Ok(Some(self.open_attributes(item).await)),
            None => {
                self.remembered.lock().since.remove(name);
                Ok(None)
            }
        }
    }

    /// Reads and opens one version of `name`. Versions shorter than 19
    /// characters are zero-padded, as `credstash get -v` does.
    pub async fn read_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<Entry>, TableError> {
        let padded = format!("{version:0>19}");
        self.count_call();
        let output = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key(attr::NAME, AttributeValue::S(name.to_owned()))
            .key(attr::VERSION, AttributeValue::S(padded))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| self.query_error(name, DisplayErrorContext(err)))?;
        match output.item {
            Some(item) => Ok(Some(self.open_attributes(item).await)),
            None => Ok(None),
        }
    }

    /// Every name with its latest version, without decrypting anything.
    pub async fn list_latest(&self) -> Result<Vec<ItemId>, TableError> {
        let scan = self
            .scan(Some("#n, version"), |_, _| (), |result| async { result })
            .await;
        match scan.error {
            Some(err) => Err(err),
            None => Ok(scan.latest.into_iter().map(|(id, _)| id).collect()),
        }
    }

    async fn open_attributes(&self, attributes: Attributes) -> Entry {
        let id = match ItemId::from_attributes(&attributes) {
            Ok(id) => id,
            Err(err) => {
                return Entry {
                    id: ItemId {
                        name: String::new(),
                        version: "".into(),
                    },
                    value: Err(Box::new(err)),
                    seal: None,
                }
            }
        };
        let mut slot = self.scanned(id.clone(), &attributes);
        self.open_slot(&mut slot).await;
        slot.into_entry(id)
    }

    /// Opens `sealed`, whose fingerprint is `fingerprint`: the value opened
    /// before when the sealed item is the same, else KMS unwraps its data key
    /// (dropped, and zeroized, once the value is open).
    async fn open_sealed(
        &self,
        sealed: &SealedItem,
        fingerprint: SealFingerprint,
    ) -> Result<SecretValue, ItemError> {
        if let Some(opened) = self.recall(&sealed.id.name, fingerprint) {
            return Ok(opened?);
        }
        let data_key = self.keys.unwrap_key(&sealed.wrapped_key).await?;
        let opened = crypto::open(&data_key, sealed.digest, &sealed.ciphertext, &sealed.hmac);
        self.remembered
            .lock()
            .since
            .insert(sealed.id.name.clone(), (fingerprint, opened.clone()));
        Ok(opened?)
    }

    /// What opening the sealed item of `name` with `fingerprint` gave
    /// before, when the reader last opened that very item (counted as a KMS
    /// call saved).
    fn recall(&self, name: &str, fingerprint: SealFingerprint) -> Option<Opened> {
        let known = {
            let remembered = self.remembered.lock();
            match remembered.since.get(name) {
                Some((seen, opened)) if *seen == fingerprint => Some(opened.clone()),
                _ => remembered
                    .last_read
                    .get(name)
                    .and_then(|entry| entry.opened_from(fingerprint)),
            }
        }?;
        self.keys
            .counters()
            .cache_hits
            .fetch_add(1, Ordering::Relaxed);
        Some(known)
    }

    /// Scans all segments concurrently and keeps each name's latest version,
    /// turned into `T` by `keep` as its page arrives: a whole table of raw
    /// DynamoDB items is never held at once. After each page but the last,
    /// `after_page` gets the segment's result, whose last item the next page
    /// may continue.
    async fn scan<T, F>(
        &self,
        projection: Option<&str>,
        keep: impl Fn(ItemId, Attributes) -> T + Copy,
        after_page: impl Fn(ScanResult<T>) -> F + Copy,
    ) -> FullScan<T>
    where
        F: Future<Output = ScanResult<T>>,
    {
        let segments = self.options.scan_segments.max(1);
        let results = futures::future::join_all(
            (0..segments)
                .map(|segment| self.scan_segment(segment, segments, projection, keep, after_page)),
        )
        .await;
        FullScan::merge(results)
    }

    async fn scan_segment<T, F>(
        &self,
        segment: u32,
        total: u32,
        projection: Option<&str>,
        keep: impl Fn(ItemId, Attributes) -> T,
        after_page: impl Fn(ScanResult<T>) -> F,
    ) -> ScanResult<T>
    where
        F: Future<Output = ScanResult<T>>,
    {
        let mut result = ScanResult::default();
        let mut start_key: Option<Attributes> = None;
        loop {
            let mut request = self
                .dynamodb
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start_key.take());
            if total > 1 {
                request = request.segment(segment as i32).total_segments(total as i32);
            }
            if let Some(limit) = self.options.scan_page_items {
                request = request.limit(limit.clamp(1, i32::MAX as u32) as i32);
            }
            if let Some(projection) = projection {
                request = request
                    .projection_expression(projection)
                    .expression_attribute_names("#n", attr::NAME);
            }
            // Never closed; without a permit the page is read all the same.
            let permit = self.page_permits.acquire().await.ok();
            self.count_call();
            match request.send().await {
                Ok(page) => {
                    for item in page.items.unwrap_or_default() {
                        result.keep_if_latest(item, &keep);
                    }
                    drop(permit);
                    match page.last_evaluated_key {
                        Some(key) if !key.is_empty() => start_key = Some(key),
                        _ => return result,
                    }
                    result = after_page(result).await;
                }
                Err(err) => {
                    result.error = Some(TableError::Scan {
                        table: self.table.clone(),
                        cause: DisplayErrorContext(err).to_string(),
                    });
                    return result;
                }
            }
        }
    }

    fn count_call(&self) {
        self.dynamodb_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn query_error(&self, name: &str, cause: impl std::fmt::Display) -> TableError {
        TableError::Query {
            table: self.table.clone(),
            name: name.to_owned(),
            cause: cause.to_string(),
        }
    }
}

/// Each name's latest item seen by a Scan, as `T`.
/// The items one segment of a Scan kept, as `T`, in the order the Scan
/// returned them. DynamoDB returns a name's versions together, so an item
/// of the same name as the last one kept replaces it when newer; a store
/// that does not keeps several versions of a name, and [`FullScan::merge`]
/// keeps the latest.
struct ScanResult<T> {
    latest: Vec<(ItemId, T)>,
    /// How many items of `latest` `after_page` is done with.
    settled: usize,
    unnamed_failures: Vec<ItemError>,
    error: Option<TableError>,
}

impl<T> Default for ScanResult<T> {
    fn default() -> Self {
        Self {
            latest: Vec::new(),
            settled: 0,
            unnamed_failures: Vec::new(),
            error: None,
        }
    }
}

impl<T> ScanResult<T> {
    /// Keeps the item unless it is an older version of the last name kept.
    fn keep_if_latest(&mut self, attributes: Attributes, keep: impl Fn(ItemId, Attributes) -> T) {
        let id = match ItemId::from_attributes(&attributes) {
            Ok(id) => id,
            Err(err) => return self.unnamed_failures.push(err),
        };
        let unsettled = self.latest.len() > self.settled;
        match self.latest.last_mut() {
            Some((last, kept)) if unsettled && last.name == id.name => {
                if id.is_newer_than(last) {
                    *kept = keep(id.clone(), attributes);
                    *last = id;
                }
            }
            _ => {
                let kept = keep(id.clone(), attributes);
                self.latest.push((id, kept));
            }
        }
    }
}

/// Each name's latest item over every segment of a Scan, in name order.
struct FullScan<T> {
    latest: Vec<(ItemId, T)>,
    unnamed_failures: Vec<ItemError>,
    error: Option<TableError>,
}

impl<T> FullScan<T> {
    /// The segments' results together, keeping the later version of a name
    /// seen in several (a store may split a name's versions over segments).
    /// Each segment's map is freed as it is moved into one sorted list.
    fn merge(segments: Vec<ScanResult<T>>) -> Self {
        let total = segments.iter().map(|s| s.latest.len()).sum();
        let mut merged = FullScan {
            latest: Vec::with_capacity(total),
            unnamed_failures: Vec::new(),
            error: None,
        };
        for segment in segments {
            merged.error = merged.error.take().or(segment.error);
            merged.unnamed_failures.extend(segment.unnamed_failures);
            merged.latest.extend(segment.latest);
        }
        keep_latest(&mut merged.latest, |(id, _)| id);
        merged
    }
}

/// Sorts `items` by name and keeps the latest version of each name (by
/// [`ItemId::is_newer_than`]: the byte-wise greatest version string). The
/// sort is unstable, which needs no scratch list: no two items share both
/// name and version, the table's key.
fn keep_latest<T>(items: &mut Vec<T>, id: fn(&T) -> &ItemId) {
    items.sort_unstable_by(|a, b| {
        let (a, b) = (id(a), id(b));
        a.name.cmp(&b.name).then_with(|| b.version.cmp(&a.version))
    });
    items.dedup_by(|later, newest| id(later).name == id(newest).name);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, version: &str) -> ItemId {
        ItemId {
            name: name.to_owned(),
            version: version.into(),
        }
    }

    fn segment(items: &[(&str, &str)]) -> ScanResult<()> {
        ScanResult {
            latest: items.iter().map(|(n, v)| (id(n, v), ())).collect(),
            ..Default::default()
        }
    }

    fn attributes(name: &str, version: &str) -> Attributes {
        Attributes::from([
            (attr::NAME.to_owned(), AttributeValue::S(name.to_owned())),
            (
                attr::VERSION.to_owned(),
                AttributeValue::S(version.to_owned()),
            ),
        ])
    }

    #[test]
    fn a_segment_keeps_the_latest_of_each_run_of_versions_of_a_name() {
        let mut result = ScanResult::default();
        let keep = |id: ItemId, _| id.version.to_string();
        for (name, version) in [("a", "1"), ("a", "3"), ("a", "2"), ("b", "1")] {
            result.keep_if_latest(attributes(name, version), keep);
        }
        result.keep_if_latest(Attributes::new(), keep);
        assert_eq!(result.unnamed_failures.len(), 1, "an item without a name");
        // What `after_page` is done with is not replaced: a later version
        // of its name is kept beside it (and the merge keeps the latest).
        result.settled = result.latest.len();
        result.keep_if_latest(attributes("b", "2"), keep);
        let kept: Vec<(&str, &str)> = result
            .latest
            .iter()
            .map(|(id, kept)| (id.name.as_str(), kept.as_str()))
            .collect();
        assert_eq!(kept, [("a", "3"), ("b", "1"), ("b", "2")]);
        let merged = FullScan::merge(vec![result]);
        let latest: Vec<&str> = merged.latest.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(latest, ["3", "2"]);
    }

    #[test]
    fn segments_merge_into_the_latest_version_of_each_name_in_name_order() {
        // A store may put a name's versions in different segments; the
        // byte-wise greatest version string wins, as in credstash.
        let merged = FullScan::merge(vec![
            segment(&[("b", "0000000000000000002"), ("c", "0000000000000000001")]),
            segment(&[("b", "0000000000000000010"), ("a", "0000000000000000001")]),
            segment(&[("b", "0000000000000000003"), ("a", "4")]),
        ]);
        let latest: Vec<String> = merged
            .latest
            .iter()
            .map(|(id, ())| format!("{}@{}", id.name, id.version))
            .collect();
        assert_eq!(
            latest,
            ["a@4", "b@0000000000000000010", "c@0000000000000000001"]
        );
    }

    #[test]
    fn a_read_finds_each_name_and_the_names_from_a_prefix() {
        let read = TableRead::of_entries(["ns/b/K", "ns/a/K", "ns/a-b/K", "x"].map(Entry::opened));
        assert_eq!(read.entries().count(), 4);
        assert!(read.get("ns/a/K").is_some());
        assert!(read.get("ns/a/L").is_none());
        let from: Vec<&str> = read
            .entries_from("ns/a/")
            .iter()
            .map(|e| e.id.name.as_str())
            .collect();
        assert_eq!(from, ["ns/a/K", "ns/b/K", "x"]);
    }
}
