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
//! Secret, more than everything else the cache keeps of it.

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
    /// The Secret's metadata, without [`LAST_APPLIED_ANNOTATION`] and
    /// without `managedFields` (in [`LiveSecret::managed_fields`]).
    pub metadata: ObjectMeta,
    /// The `managedFields` entries, in order.
    pub managed_fields: Vec<ManagedEntry>,
    /// `type` as stored (`None`: Opaque).
    pub type_: Option<String>,
    /// `immutable` as stored.
    pub immutable: Option<bool>,
    /// The SHA-256 digest of each data key's value.
    pub data: BTreeMap<String, ValueDigest>,
}

impl LiveSecret {
    /// Keeps what the operator needs of `secret`; its values are dropped.
    pub fn reduce(secret: Secret) -> Self {
        let Secret {
            mut metadata,
            type_,
            immutable,
            data,
            ..
        } = secret;
        if let Some(annotations) = &mut metadata.annotations {
            annotations.remove(LAST_APPLIED_ANNOTATION);
        }
        let managed_fields = metadata
            .managed_fields
            .take()
            .into_iter()
            .flatten()
            .map(ManagedEntry::compact)
            .collect();
        LiveSecret {
            metadata,
            managed_fields,
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
        assert_eq!(live.data["K"], ValueDigest::of(b"hunter2"));
        assert_eq!(live.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(
            live.metadata.labels.as_ref().map(|l| l["a"].as_str()),
            Some("1")
        );
        let annotations = live.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(live.metadata.managed_fields, None);
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
