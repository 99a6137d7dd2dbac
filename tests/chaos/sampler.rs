//! Continuous sampling: every committed write to a Secret, with the state
//! before and after, so that even a state that lasted a microsecond is
//! judged. On the fake straight from its store (no request, no fault); on
//! the real control plane from a watch of every Secret by the harness's own
//! client, which the fault proxy does not see (kube-apiserver sends every
//! write to a watch, in order; a watch that expires is counted as lagged).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fake_apiserver::store::EventType;
use fake_apiserver::FakeApiServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use tokio::sync::broadcast::error::RecvError;

use crate::cluster::Env;

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
    /// The written object's resourceVersion (`None`: a deletion).
    pub resource_version: Option<String>,
}

/// Collects [`Sample`]s in the background.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    lagged: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sampler {
    /// Starts following the writes to Secrets of `env`'s API server.
    pub async fn start(env: &Env) -> Sampler {
        match &env.fake {
            Some(fake) => Sampler::from_store(fake),
            None => Sampler::from_watch(env.client().await).await,
        }
    }

    /// Follows a real API server through a watch of all Secrets, relisting
    /// when the watch expires (each relist counted as lagged: writes may
    /// have been missed).
    async fn from_watch(client: Client) -> Sampler {
        let api: Api<Secret> = Api::all(client);
        let (mut last, mut version) = list_secrets(&api).await;
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let lagged: Arc<Mutex<u64>> = Arc::default();
        let (out, lost) = (samples.clone(), lagged.clone());
        let task = tokio::spawn(async move {
            loop {
                let params = WatchParams::default().timeout(290);
                let Ok(stream) = api.watch(&params, &version).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let (kind, secret) = match event {
                        Ok(WatchEvent::Added(s)) => (EventType::Added, s),
                        Ok(WatchEvent::Modified(s)) => (EventType::Modified, s),
                        Ok(WatchEvent::Deleted(s)) => (EventType::Deleted, s),
                        Ok(WatchEvent::Bookmark(b)) => {
                            version = b.metadata.resource_version;
                            continue;
                        }
                        Ok(WatchEvent::Error(_)) | Err(_) => {
                            *lost.lock().expect("lagged") += 1;
                            (last, version) = list_secrets(&api).await;
                            break;
                        }
                    };
                    version = secret.resource_version().unwrap_or_default();
                    let Ok(object) = serde_json::to_value(&secret) else {
                        continue;
                    };
                    let id = (secret.namespace().unwrap_or_default(), secret.name_any());
                    let old = match kind {
                        EventType::Deleted => last.remove(&id),
                        _ => last.insert(id, object.clone()),
                    };
                    if let Some(sample) = sample_of(kind, &object, old.as_ref()) {
                        out.lock().expect("samples").push(sample);
                    }
                }
            }
        });
        Sampler {
            samples,
            lagged,
            task,
        }
    }

    /// Follows the fake's store.
    fn from_store(fake: &FakeApiServer) -> Sampler {
        let mut rx = fake.subscribe();
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let lagged: Arc<Mutex<u64>> = Arc::default();
        let (out, lost) = (samples.clone(), lagged.clone());
        let task = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(entry) if entry.storage == "/secrets" => {
                        if let Some(sample) =
                            sample_of(entry.kind, &entry.object, entry.old.as_ref())
                        {
                            out.lock().expect("samples").push(sample);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => *lost.lock().expect("lagged") += n,
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Sampler {
            samples,
            lagged,
            task,
        }
    }

    /// Takes the samples collected so far.
    pub fn take(&self) -> Vec<Sample> {
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }

    /// The writes sampled since `since`, still kept for [`Sampler::take`].
    pub fn since(&self, since: Instant) -> Vec<Sample> {
        self.samples
            .lock()
            .expect("samples")
            .iter()
            .filter(|s| s.at >= since)
            .cloned()
            .collect()
    }

    /// Writes missed because the sampler fell behind (should stay 0).
    pub fn lagged(&self) -> u64 {
        *self.lagged.lock().expect("lagged")
    }
}

/// Every Secret by id, and the list's resourceVersion.
async fn list_secrets(api: &Api<Secret>) -> (BTreeMap<SecretId, serde_json::Value>, String) {
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await {
            let secrets = list
                .items
                .iter()
                .filter_map(|s| {
                    let id = (s.namespace()?, s.name_any());
                    Some((id, serde_json::to_value(s).ok()?))
                })
                .collect();
            return (secrets, list.metadata.resource_version.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sample of one write: `object` is the Secret after it (for a delete,
/// its last state), `old` the state before it, if any.
fn sample_of(
    kind: EventType,
    object: &serde_json::Value,
    old: Option<&serde_json::Value>,
) -> Option<Sample> {
    let meta = &object["metadata"];
    let secret = (
        meta["namespace"].as_str()?.to_owned(),
        meta["name"].as_str()?.to_owned(),
    );
    let after = (kind != EventType::Deleted).then(|| observed(object));
    let before = match kind {
        EventType::Added => None,
        EventType::Deleted => Some(observed(object)),
        EventType::Modified => old.map(observed),
    };
    let managers = meta["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str().map(str::to_owned))
        .collect();
    let resource_version = (kind != EventType::Deleted)
        .then(|| meta["resourceVersion"].as_str().map(str::to_owned))
        .flatten();
    Some(Sample {
        at: Instant::now(),
        secret,
        before,
        after,
        managers,
        resource_version,
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
    let strings = |field: &str| -> BTreeMap<String, String> {
        object["metadata"][field]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect()
    };
    Observed {
        type_: object["type"].as_str().unwrap_or("Opaque").to_owned(),
        data,
        owners,
        labels: strings("labels"),
        annotations: strings("annotations"),
    }
}

/// `ns/name: changed keys [..]` of one write (names only, never values).
pub fn describe(s: &Sample) -> String {
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
