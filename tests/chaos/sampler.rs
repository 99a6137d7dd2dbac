//! Continuous sampling: every committed write to a Secret, straight from the
//! fake API server's store (no request, no fault), with the state before and
//! after, so that even a state that lasted a microsecond is judged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use fake_apiserver::store::{EventType, LogEntry};
use fake_apiserver::FakeApiServer;
use tokio::sync::broadcast::error::RecvError;

use super::model::Observed;
use super::ops::SecretId;

/// One write to a Secret.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub secret: SecretId,
    pub before: Option<Observed>,
    pub after: Option<Observed>,
    /// Field managers named in the written object's managedFields.
    pub managers: Vec<String>,
}

/// Collects [`Sample`]s in the background.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    lagged: Arc<Mutex<u64>>,
}

impl Sampler {
    /// Starts following the store's writes.
    pub fn start(fake: &FakeApiServer) -> Sampler {
        let mut rx = fake.subscribe();
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let lagged: Arc<Mutex<u64>> = Arc::default();
        let (out, lost) = (samples.clone(), lagged.clone());
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(entry) => {
                        if let Some(sample) = sample_of(&entry) {
                            out.lock().expect("samples").push(sample);
                        }
                    }
                    Err(RecvError::Lagged(n)) => *lost.lock().expect("lagged") += n,
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Sampler { samples, lagged }
    }

    /// Takes the samples collected so far.
    pub fn take(&self) -> Vec<Sample> {
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }

    /// What the writes sampled since `since` changed, one line each (key
    /// names only).
    pub fn describe_since(&self, since: Instant) -> Vec<String> {
        self.samples
            .lock()
            .expect("samples")
            .iter()
            .filter(|s| s.at >= since)
            .map(describe)
            .collect()
    }

    /// Writes missed because the sampler fell behind (should stay 0).
    pub fn lagged(&self) -> u64 {
        *self.lagged.lock().expect("lagged")
    }
}

fn sample_of(entry: &LogEntry) -> Option<Sample> {
    if entry.storage != "/secrets" {
        return None;
    }
    let meta = &entry.object["metadata"];
    let secret = (
        meta["namespace"].as_str()?.to_owned(),
        meta["name"].as_str()?.to_owned(),
    );
    let after = (entry.kind != EventType::Deleted).then(|| observed(&entry.object));
    let before = match entry.kind {
        EventType::Added => None,
        EventType::Deleted => Some(observed(&entry.object)),
        EventType::Modified => entry.old.as_ref().map(observed),
    };
    let managers = meta["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str().map(str::to_owned))
        .collect();
    Some(Sample {
        at: Instant::now(),
        secret,
        before,
        after,
        managers,
    })
}

/// A stored or served Secret's type and decoded data.
pub fn observed(object: &serde_json::Value) -> Observed {
    let data: BTreeMap<String, String> = object["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap_or_default();
            (k.clone(), String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect();
    let mut owners: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for entry in object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(manager) = entry["manager"].as_str() else {
            continue;
        };
        let keys = entry["fieldsV1"]["f:data"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("f:").map(str::to_owned));
        owners.entry(manager.to_owned()).or_default().extend(keys);
    }
    Observed {
        type_: object["type"].as_str().unwrap_or("Opaque").to_owned(),
        data,
        owners,
    }
}

/// `ns/name: changed keys [..]` of one write (names only, never values).
fn describe(s: &Sample) -> String {
    let empty = BTreeMap::new();
    let before = s.before.as_ref().map_or(&empty, |o| &o.data);
    let after = s.after.as_ref().map_or(&empty, |o| &o.data);
    let mut changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    changed.dedup();
    let what = match (&s.before, &s.after) {
        (None, _) => "created",
        (_, None) => "deleted",
        _ => "modified",
    };
    format!(
        "{}/{} {what}, data keys changed: {changed:?}, managers {:?}",
        s.secret.0, s.secret.1, s.managers
    )
}
