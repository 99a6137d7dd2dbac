//! A live Secret as the operator keeps it: its metadata (labels,
//! annotations, `managedFields`, resourceVersion), type, immutability and a
//! SHA-256 digest per data key, never a value.
//!
//! The managed-Secret watch cache, the ledger of the operator's own writes
//! and the Secrets fetched for a plan hold this, not `Secret`: the plan needs
//! to know whether a key holds the table's value, which a digest answers,
//! and the values of every managed Secret would otherwise stay in memory for
//! the life of the process. The one annotation that can hold values,
//! `kubectl.kubernetes.io/last-applied-configuration`, is dropped too.
//!
//! `managedFields` are kept whole, but each entry's `fieldsV1` as JSON text
//! ([`ManagedEntry`]): parsed, those small trees of maps cost a few KiB per
//! Secret, more than everything else the cache keeps of it. Labels,
//! annotations and digests are sorted lists ([`SortedPairs`]), not maps: a
//! map spends a node of eleven slots on a Secret's one label. Of the rest of
//! the metadata, only what identifies the Secret is kept.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::watcher::Event;
use kube::Resource;

use crate::value::ValueDigest;

/// The annotation `kubectl apply` writes: a copy of the whole object as
/// applied, values included.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Secret without its values (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveSecret {
    /// Name, namespace, uid, resourceVersion and deletionTimestamp: the
    /// rest of the metadata is below or dropped.
    pub metadata: ObjectMeta,
    /// `metadata.labels`.
    pub labels: SortedPairs<Box<str>>,
    /// `metadata.annotations`, without [`LAST_APPLIED_ANNOTATION`].
    pub annotations: SortedPairs<Box<str>>,
    /// The `managedFields` entries, in order.
    pub managed_fields: Box<[ManagedEntry]>,
    /// `type` as stored (`None`: Opaque).
    pub type_: Option<String>,
    /// `immutable` as stored.
    pub immutable: Option<bool>,
    /// The SHA-256 digest of each data key's value.
    pub data: SortedPairs<ValueDigest>,
}

impl LiveSecret {
    /// Keeps what the operator needs of `secret`; its values are dropped.
    pub fn reduce(secret: Secret) -> Self {
        let Secret {
            metadata,
            type_,
            immutable,
            data,
            ..
        } = secret;
        let annotations = metadata.annotations.into_iter().flatten();
        LiveSecret {
            metadata: ObjectMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                uid: metadata.uid,
                resource_version: metadata.resource_version,
                deletion_timestamp: metadata.deletion_timestamp,
                ..ObjectMeta::default()
            },
            labels: metadata.labels.into_iter().flatten().map(boxed).collect(),
            annotations: annotations
                .filter(|(key, _)| key != LAST_APPLIED_ANNOTATION)
                .map(boxed)
                .collect(),
            managed_fields: metadata
                .managed_fields
                .into_iter()
                .flatten()
                .map(ManagedEntry::compact)
                .collect(),
            type_,
            immutable,
            data: data
                .into_iter()
                .flatten()
                .map(|(key, value)| (key, ValueDigest::of(&value.0)))
                .collect(),
        }
    }

    /// The `managedFields` entries as the API server sent them.
    pub fn managed_fields_entries(&self) -> Vec<ManagedFieldsEntry> {
        self.managed_fields
            .iter()
            .map(ManagedEntry::expand)
            .collect()
    }
}

fn boxed((key, value): (String, String)) -> (String, Box<str>) {
    (key, value.into_boxed_str())
}

/// A map from string keys, kept as a list sorted by key: small, and
/// searched by bisection.
#[derive(Debug, Clone, PartialEq)]
pub struct SortedPairs<V>(Box<[(Box<str>, V)]>);

impl<V> SortedPairs<V> {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|at| &self.0[at].1)
    }

    /// Every key and value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

impl SortedPairs<Box<str>> {
    /// As a map of strings (labels, annotations).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(key, value)| (key.to_owned(), value.to_string()))
            .collect()
    }
}

impl<V> Default for SortedPairs<V> {
    fn default() -> Self {
        Self(Box::default())
    }
}

impl<V> FromIterator<(String, V)> for SortedPairs<V> {
    /// Sorted by key; of a key given twice, the last value is kept.
    fn from_iter<I: IntoIterator<Item = (String, V)>>(pairs: I) -> Self {
        let mut pairs: Vec<(Box<str>, V)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v))
            .collect();
        pairs.reverse();
        pairs.sort_by(|(a, _), (b, _)| a.cmp(b));
        pairs.dedup_by(|later, first| later.0 == first.0);
        Self(pairs.into_boxed_slice())
    }
}

/// One `managedFields` entry with its `fieldsV1` kept as JSON text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagedEntry {
    /// The entry without `fieldsV1`.
    entry: ManagedFieldsEntry,
    /// `fieldsV1` as JSON.
    fields: Option<Box<str>>,
}

impl ManagedEntry {
    fn compact(mut entry: ManagedFieldsEntry) -> Self {
        let fields = entry
            .fields_v1
            .take()
            .map(|fields| fields.0.to_string().into_boxed_str());
        ManagedEntry { entry, fields }
    }

    /// The whole entry, `fieldsV1` parsed again.
    pub fn expand(&self) -> ManagedFieldsEntry {
        let fields_v1 = self
            .fields
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .map(FieldsV1);
        ManagedFieldsEntry {
            fields_v1,
            ..self.entry.clone()
        }
    }

    /// The field manager.
    pub fn manager(&self) -> Option<&str> {
        self.entry.manager.as_deref()
    }

    /// The operation (`Apply` or `Update`).
    pub fn operation(&self) -> Option<&str> {
        self.entry.operation.as_deref()
    }
}

impl From<Secret> for LiveSecret {
    fn from(secret: Secret) -> Self {
        Self::reduce(secret)
    }
}

impl Resource for LiveSecret {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Secret::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Secret::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Secret::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Secret::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A watch event of Secrets with each Secret reduced, so that no value
/// reaches the cache the events feed.
pub fn reduce_event(event: Event<Secret>) -> Event<LiveSecret> {
    match event {
        Event::Apply(secret) => Event::Apply(secret.into()),
        Event::Delete(secret) => Event::Delete(secret.into()),
        Event::Init => Event::Init,
        Event::InitApply(secret) => Event::InitApply(secret.into()),
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorted_pairs_find_each_key_and_keep_the_last_value_given() {
        let pairs: SortedPairs<u8> = [("b", 1), ("a", 2), ("b", 3)]
            .map(|(k, v)| (k.to_owned(), v))
            .into_iter()
            .collect();
        assert_eq!(pairs.iter().collect::<Vec<_>>(), [("a", &2), ("b", &3)]);
        assert_eq!(pairs.get("b"), Some(&3));
        assert_eq!(pairs.get("c"), None);
    }

    #[test]
    fn keeps_metadata_and_digests_and_no_value() {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "7",
                "labels": {"a": "1"},
                "annotations": {"b": "2", LAST_APPLIED_ANNOTATION: "{\"data\":{\"K\":\"aHVudGVyMg==\"}}"},
                "managedFields": [{"manager": "kubestash/x", "operation": "Apply",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:K": {}}}}]},
            "type": "Opaque",
            "immutable": false,
            "data": {"K": "aHVudGVyMg=="}
        }))
        .expect("test Secret");
        let live = LiveSecret::reduce(secret);
        assert_eq!(live.data.get("K"), Some(&ValueDigest::of(b"hunter2")));
        assert_eq!(live.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(live.labels.get("a").map(AsRef::as_ref), Some("1"));
        let annotations: Vec<&str> = live.annotations.iter().map(|(k, _)| k).collect();
        assert_eq!(annotations, ["b"]);
        assert_eq!(live.metadata.managed_fields, None);
        assert_eq!(live.metadata.labels, None, "labels are kept once");
        let entries = live.managed_fields_entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager.as_deref(), Some("kubestash/x"));
        assert_eq!(
            entries[0].fields_v1.as_ref().map(|f| f.0.clone()),
            Some(json!({"f:data": {"f:K": {}}})),
            "fieldsV1 comes back as it was"
        );
        assert_eq!(live.type_.as_deref(), Some("Opaque"));
        let printed = format!("{live:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("aHVudGVy"),
            "{printed}"
        );
        assert_eq!(
            LiveSecret::url_path(&(), Some("ns")),
            "/api/v1/namespaces/ns/secrets"
        );
    }
}
