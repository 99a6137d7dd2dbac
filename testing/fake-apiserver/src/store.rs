//! Object storage: JSON documents keyed by storage key, namespace and name, a
//! global resourceVersion (like etcd's revision) and the event log watches
//! replay from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

/// Type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// Wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One write, as recorded in the event log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// The resourceVersion of this write.
    pub rv: u64,
    /// Storage key of the written object.
    pub storage: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the write (for deletes: the last state, with the delete's RV).
    pub object: Value,
    /// The object before the write, if any.
    pub old: Option<Value>,
}

/// Key of one object inside a storage key: (namespace, name).
pub type ObjectKey = (String, String);

/// The object store.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<String, BTreeMap<ObjectKey, Value>>,
    log: VecDeque<Arc<LogEntry>>,
    log_capacity: usize,
    /// Watches starting before this RV are too old.
    compacted_rv: u64,
    tx: broadcast::Sender<Arc<LogEntry>>,
}

impl Store {
    /// An empty store whose event log keeps `log_capacity` entries.
    pub fn new(log_capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            log_capacity: log_capacity.max(1),
            compacted_rv: 1,
            tx,
        }
    }

    /// The current global resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may start from.
    pub fn compacted_rv(&self) -> u64 {
        self.compacted_rv
    }

    /// Drops the whole event log, as an etcd compaction at the current revision.
    pub fn compact(&mut self) {
        self.log.clear();
        self.compacted_rv = self.rv;
    }

    /// Reads one object.
    pub fn get(&self, storage: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(storage)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
    }

    /// All objects of a storage key (optionally in one namespace), in key order.
    pub fn list(&self, storage: &str, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .get(storage)
            .map(|m| {
                m.iter()
                    .filter(|((ons, _), _)| ns.is_none_or(|n| n == ons))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether any object of any storage key lives in the namespace.
    pub fn namespace_objects(&self, ns: &str) -> Vec<(String, Value)> {
        let mut out = vec![];
        for (storage, m) in &self.objects {
            for ((ons, _), v) in m {
                if ons == ns {
                    out.push((storage.clone(), v.clone()));
                }
            }
        }
        out
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, entry: LogEntry) {
        let entry = Arc::new(entry);
        self.log.push_back(entry.clone());
        while self.log.len() > self.log_capacity {
            if let Some(e) = self.log.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
        let _ = self.tx.send(entry);
    }

    /// Stores a new or changed object, assigning the next resourceVersion; returns the stored object.
    pub fn put(&mut self, storage: &str, mut obj: Value) -> Value {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let key = object_key(&obj);
        let old = self
            .objects
            .entry(storage.to_string())
            .or_default()
            .insert(key, obj.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(LogEntry {
            rv,
            storage: storage.to_string(),
            kind,
            object: obj.clone(),
            old,
        });
        obj
    }

    /// Removes an object; returns its final state (carrying the delete's resourceVersion).
    pub fn remove(&mut self, storage: &str, ns: &str, name: &str) -> Option<Value> {
        let old = self
            .objects
            .get_mut(storage)?
            .remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        let mut last = old.clone();
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.record(LogEntry {
            rv,
            storage: storage.to_string(),
            kind: EventType::Deleted,
            object: last.clone(),
            old: Some(old),
        });
        Some(last)
    }

    /// Log entries with an RV greater than `after`, or `None` when `after` is too old.
    pub fn events_since(&self, after: u64) -> Option<Vec<Arc<LogEntry>>> {
        if after < self.compacted_rv {
            return None;
        }
        Some(self.log.iter().filter(|e| e.rv > after).cloned().collect())
    }

    /// Subscribes to future writes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogEntry>> {
        self.tx.subscribe()
    }
}

/// (namespace, name) of an object.
pub fn object_key(obj: &Value) -> ObjectKey {
    (
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}
