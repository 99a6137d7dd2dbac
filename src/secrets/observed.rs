//! What the cluster has: a live Secret reduced to what the plan needs,
//! including which data keys each field manager owns (from `managedFields`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

use super::live::LiveSecret;
use super::{MANAGER_PREFIX, OPAQUE, SOURCE_ANNOTATION};
use crate::mapping::SecretRef;
use crate::value::ValueDigest;

/// A live Secret as the plan sees it. It holds no value: a digest per key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedSecret {
    /// The Secret type (`Opaque` when absent).
    pub type_: String,
    /// Whether the Secret is immutable (its data cannot be changed).
    pub immutable: bool,
    /// The digest of each key's value, by key.
    pub data: BTreeMap<String, ValueDigest>,
    /// Data keys our field manager owns through server-side apply.
    pub owned_keys: BTreeSet<String>,
    /// Data keys owned by another living `kubestash/*` manager (one whose
    /// CredstashSync exists), with that manager (the lexicographically first
    /// one when several own a key). Managers of deleted CredstashSyncs own
    /// nothing: a renamed or replacement CredstashSync takes their keys over.
    pub other_kubestash_owners: BTreeMap<String, String>,
    /// The Secret's labels.
    pub labels: BTreeMap<String, String>,
    /// The Secret's annotations.
    pub annotations: BTreeMap<String, String>,
    /// Labels and annotations our field manager owns through an `Apply`
    /// entry (what `spec.secretMetadata` and our own metadata put there).
    pub owned_metadata: MetadataOwners,
    /// Labels and annotations owned by another living `kubestash/*` manager.
    pub other_metadata_owners: MetadataOwners,
}

/// Label and annotation keys, each with the manager owning it (the
/// lexicographically first one when several do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataOwners {
    /// Label key -> manager.
    pub labels: BTreeMap<String, String>,
    /// Annotation key -> manager.
    pub annotations: BTreeMap<String, String>,
}

impl MetadataOwners {
    /// Records the labels and annotations `entry` lists, for `manager`.
    fn add(&mut self, entry: &ManagedFieldsEntry, manager: &str) {
        for (path, owners) in [
            (["f:metadata", "f:labels"], &mut self.labels),
            (["f:metadata", "f:annotations"], &mut self.annotations),
        ] {
            for key in listed_fields(entry, &path) {
                add_owner(owners, key, manager);
            }
        }
    }
}

/// Records `manager` as an owner of `key`, keeping the first by name.
fn add_owner(owners: &mut BTreeMap<String, String>, key: String, manager: &str) {
    owners
        .entry(key)
        .and_modify(|owner| {
            if manager < owner.as_str() {
                *owner = manager.to_owned();
            }
        })
        .or_insert_with(|| manager.to_owned());
}

/// Whose field ownership counts when reading a Secret.
#[derive(Debug, Clone, Copy)]
pub struct Managers<'a> {
    /// Our manager, `kubestash/<name>`.
    pub ours: &'a str,
    /// The managers of every CredstashSync that exists (ours included).
    pub living: &'a BTreeSet<String>,
}

/// Who a field manager of a Secret is, to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagerKind {
    /// Our own manager.
    Ours,
    /// The manager of another CredstashSync that exists: it owns its keys
    /// against us.
    Living,
    /// A `kubestash/*` manager whose CredstashSync no longer exists (renamed,
    /// deleted, or `kubestash sync`): it owns nothing, and its entries pass
    /// to the next CredstashSync that writes the Secret.
    Dead,
    /// Not kubestash (a person, another tool).
    Foreign,
}

impl Managers<'_> {
    /// The one rule for who `manager` is.
    pub fn kind(&self, manager: &str) -> ManagerKind {
        if manager == self.ours {
            ManagerKind::Ours
        } else if !manager.starts_with(MANAGER_PREFIX) {
            ManagerKind::Foreign
        } else if self.living.contains(manager) {
            ManagerKind::Living
        } else {
            ManagerKind::Dead
        }
    }
}

impl ObservedSecret {
    /// Reduces a live Secret as seen by `managers.ours`.
    ///
    /// A key is ours when an `Apply` entry of our manager lists it under
    /// `f:data`; it belongs to another CredstashSync when any entry of another
    /// living `kubestash/*` manager lists it. Entries that are not `FieldsV1`
    /// or do not parse are ignored. `stringData` is write-only and never read.
    pub fn from_secret(secret: &LiveSecret, managers: Managers<'_>) -> Self {
        let mut observed = ObservedSecret {
            type_: secret.type_.clone().unwrap_or_else(|| OPAQUE.to_owned()),
            immutable: secret.immutable.unwrap_or(false),
            data: secret
                .data
                .iter()
                .map(|(key, digest)| (key.to_owned(), *digest))
                .collect(),
            labels: secret.labels.to_map(),
            annotations: secret.annotations.to_map(),
            ..Default::default()
        };
        for entry in &secret.managed_fields {
            observed.add_managed_entry(&entry.expand(), managers);
        }
        observed
    }

    /// Records the data keys one `managedFields` entry owns.
    fn add_managed_entry(&mut self, entry: &ManagedFieldsEntry, managers: Managers<'_>) {
        let Some(manager) = entry.manager.as_deref() else {
            return;
        };
        let keys = managed_data_keys(entry);
        match managers.kind(manager) {
            ManagerKind::Ours if entry.operation.as_deref() == Some("Apply") => {
                self.owned_keys.extend(keys);
                self.owned_metadata.add(entry, manager);
            }
            ManagerKind::Living => {
                for key in keys {
                    add_owner(&mut self.other_kubestash_owners, key, manager);
                }
                self.other_metadata_owners.add(entry, manager);
            }
            _ => {}
        }
    }

    /// Whether this Secret is `Opaque` (the only type kubestash writes).
    pub fn is_opaque(&self) -> bool {
        self.type_ == OPAQUE
    }
}

/// The data keys listed under `f:data` in a `FieldsV1` managed-fields entry.
pub fn managed_data_keys(entry: &ManagedFieldsEntry) -> Vec<String> {
    listed_fields(entry, &["f:data"])
}

/// The map keys listed under `path` (e.g. `f:metadata`, `f:labels`) in a
/// `FieldsV1` managed-fields entry.
fn listed_fields(entry: &ManagedFieldsEntry, path: &[&str]) -> Vec<String> {
    if entry
        .fields_type
        .as_deref()
        .is_some_and(|kind| kind != "FieldsV1")
    {
        return Vec::new();
    }
    let Some(fields) = entry.fields_v1.as_ref().and_then(|fields| {
        path.iter()
            .try_fold(&fields.0, |node, step| node.get(step))
            .and_then(|node| node.as_object())
    }) else {
        return Vec::new();
    };
    fields
        .keys()
        .filter_map(|field| field.strip_prefix("f:"))
        .map(str::to_owned)
        .collect()
}

/// The reference of a live Secret (`None` without a name or namespace).
pub fn secret_ref(secret: &LiveSecret) -> Option<SecretRef> {
    let meta = &secret.metadata;
    Some(SecretRef::new(meta.namespace.clone()?, meta.name.clone()?))
}

/// Reduces many live Secrets (e.g. a watch cache) by reference. Secrets
/// without a name or namespace are left out.
pub fn observe_all<'a, I>(secrets: I, managers: Managers<'_>) -> BTreeMap<SecretRef, ObservedSecret>
where
    I: IntoIterator<Item = &'a LiveSecret>,
{
    secrets
        .into_iter()
        .filter_map(|secret| {
            let reference = secret_ref(secret)?;
            Some((reference, ObservedSecret::from_secret(secret, managers)))
        })
        .collect()
}

/// Whether `manager` owns any data key of `secret` through an `Apply`
/// entry (what [`ObservedSecret::owned_keys`] would list, without copying
/// the data).
pub fn owns_data_keys(secret: &LiveSecret, manager: &str) -> bool {
    secret.managed_fields.iter().any(|entry| {
        entry.manager() == Some(manager)
            && entry.operation() == Some("Apply")
            && !managed_data_keys(&entry.expand()).is_empty()
    })
}

/// Whether `secret` holds fields (keys, or only our label and annotations)
/// of a CredstashSync that no longer exists and that read `table` (the
/// Secret's source annotation says so): the CredstashSync now reading that
/// table inherits them, also when the table no longer maps any name into the
/// Secret (a renamed CredstashSync whose keys were all deleted meanwhile must
/// not leave them to a dead manager, which owns nothing).
pub fn holds_orphaned_fields_of(secret: &LiveSecret, managers: Managers<'_>, table: &str) -> bool {
    let from_table = secret
        .annotations
        .get(SOURCE_ANNOTATION)
        .and_then(|source| source.split_once('/'))
        .is_some_and(|(_, source_table)| source_table == table);
    from_table
        && secret.managed_fields.iter().any(|entry| {
            entry.operation() == Some("Apply")
                && entry
                    .manager()
                    .is_some_and(|m| managers.kind(m) == ManagerKind::Dead)
        })
}

/// Whether any `managedFields` entry of `secret` belongs to `manager`.
pub fn has_manager(secret: &LiveSecret, manager: &str) -> bool {
    secret
        .managed_fields
        .iter()
        .any(|entry| entry.manager() == Some(manager))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OURS: &str = "kubestash/prod";

    fn living(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn ours(living: &BTreeSet<String>) -> Managers<'_> {
        Managers { ours: OURS, living }
    }

    fn secret(value: serde_json::Value) -> LiveSecret {
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(value).expect("test Secret");
        secret.into()
    }

    fn entry(manager: &str, operation: &str, keys: &[&str]) -> serde_json::Value {
        let data: serde_json::Map<String, serde_json::Value> =
            keys.iter().map(|k| (format!("f:{k}"), json!({}))).collect();
        json!({
            "manager": manager,
            "operation": operation,
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": data, "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}}}
        })
    }

    fn names(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    #[test]
    fn fields_of_a_dead_manager_on_the_same_table_are_inherited() {
        let only_ours = living(&[OURS]);
        let orphaned = |source: &str, manager: &str| {
            secret(json!({
                "metadata": {"name": "s", "namespace": "ns",
                    "annotations": {SOURCE_ANNOTATION: source},
                    "managedFields": [entry(manager, "Apply", &["A"])]},
            }))
        };
        let dead = "kubestash/old";
        assert!(holds_orphaned_fields_of(
            &orphaned("old/t", dead),
            ours(&only_ours),
            "t"
        ));
        assert!(!holds_orphaned_fields_of(
            &orphaned("old/other", dead),
            ours(&only_ours),
            "t"
        ));
        assert!(!holds_orphaned_fields_of(
            &orphaned("prod/t", OURS),
            ours(&only_ours),
            "t"
        ));
        let metadata_only = secret(json!({
            "metadata": {"name": "s", "namespace": "ns",
                "annotations": {SOURCE_ANNOTATION: "old/t"},
                "managedFields": [entry(dead, "Apply", &[])]},
        }));
        assert!(
            holds_orphaned_fields_of(&metadata_only, ours(&only_ours), "t"),
            "a dead manager owning only our label and annotations is inherited too"
        );
        let alive = living(&[OURS, dead]);
        assert!(!holds_orphaned_fields_of(
            &orphaned("old/t", dead),
            ours(&alive),
            "t"
        ));
    }

    #[test]
    fn reads_type_data_labels_and_annotations() {
        let s = secret(json!({
            "metadata": {"name": "s", "namespace": "ns",
                "labels": {"a": "1"}, "annotations": {"b": "2"}},
            "type": "kubernetes.io/tls",
            "immutable": true,
            "data": {"tls.crt": "Y2VydA=="}
        }));
        let o = ObservedSecret::from_secret(&s, ours(&living(&[OURS])));
        assert_eq!(o.type_, "kubernetes.io/tls");
        assert!(!o.is_opaque());
        assert!(o.immutable);
        assert_eq!(o.data["tls.crt"], ValueDigest::of(b"cert"));
        assert_eq!(o.labels["a"], "1");
        assert_eq!(o.annotations["b"], "2");
        assert_eq!(secret_ref(&s), Some(SecretRef::new("ns", "s")));
    }

    #[test]
    fn absent_type_means_opaque_and_absent_fields_are_empty() {
        let everyone = living(&[OURS]);
        let o = ObservedSecret::from_secret(
            &secret(json!({"metadata": {"name": "s"}})),
            ours(&everyone),
        );
        assert_eq!(o.type_, "Opaque");
        assert!(o.is_opaque());
        assert!(!o.immutable);
        assert!(o.data.is_empty() && o.owned_keys.is_empty() && o.labels.is_empty());
    }

    #[test]
    fn ownership_comes_from_managed_fields() {
        let s = secret(json!({
            "metadata": {"name": "s", "namespace": "ns", "managedFields": [
                entry(OURS, "Apply", &["A", "B"]),
                entry(OURS, "Update", &["FROM_UPDATE"]),
                entry("kubectl-edit", "Update", &["HAND"]),
                entry("kubestash/other", "Apply", &["B", "C"]),
                entry("kubestash/aaa", "Apply", &["C"]),
                entry("kubestash-not-ours", "Apply", &["D"]),
                {"manager": OURS, "operation": "Apply", "fieldsType": "FieldsV2",
                 "fieldsV1": {"f:data": {"f:WRONG_TYPE": {}}}},
                {"manager": OURS, "operation": "Apply", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:data": "not an object"}},
                {"operation": "Apply", "fieldsV1": {"f:data": {"f:NO_MANAGER": {}}}},
                {"manager": OURS, "operation": "Apply",
                 "fieldsV1": {"f:data": {"f:E": {}, ".": {}}}},
            ]},
            "data": {"A": "YQ==", "B": "Yg==", "C": "Yw==", "HAND": "aA=="}
        }));
        let everyone = living(&[OURS, "kubestash/other", "kubestash/aaa"]);
        let o = ObservedSecret::from_secret(&s, ours(&everyone));
        assert_eq!(names(&o.owned_keys), vec!["A", "B", "E"]);
        assert_eq!(
            o.other_kubestash_owners,
            BTreeMap::from([
                ("B".to_owned(), "kubestash/other".to_owned()),
                ("C".to_owned(), "kubestash/aaa".to_owned()),
            ])
        );
        assert!(has_manager(&s, "kubestash/aaa"));
        assert!(owns_data_keys(&s, OURS));
        assert!(
            !owns_data_keys(&s, "kubectl-edit"),
            "an Update entry owns nothing of ours"
        );
        assert!(!has_manager(&s, "kubestash/gone"));
    }

    #[test]
    fn metadata_ownership_comes_from_managed_fields() {
        let metadata = |labels: &[&str], annotations: &[&str]| {
            let fields = |keys: &[&str]| -> serde_json::Map<String, serde_json::Value> {
                keys.iter().map(|k| (format!("f:{k}"), json!({}))).collect()
            };
            json!({"f:metadata": {"f:labels": fields(labels), "f:annotations": fields(annotations)}})
        };
        let s = secret(json!({
            "metadata": {"name": "s", "namespace": "ns", "managedFields": [
                {"manager": OURS, "operation": "Apply", "fieldsType": "FieldsV1",
                 "fieldsV1": metadata(&["app.kubernetes.io/managed-by", "team"], &["kubestash.io/source", "note"])},
                {"manager": OURS, "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": metadata(&["from-update"], &[])},
                {"manager": "kubestash/other", "operation": "Apply", "fieldsType": "FieldsV1",
                 "fieldsV1": metadata(&["team", "tier"], &["note"])},
                {"manager": "kubestash/gone", "operation": "Apply", "fieldsType": "FieldsV1",
                 "fieldsV1": metadata(&["gone"], &[])},
                {"manager": "kubectl-label", "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": metadata(&["hand"], &[])},
            ]}
        }));
        let everyone = living(&[OURS, "kubestash/other"]);
        let o = ObservedSecret::from_secret(&s, ours(&everyone));
        let keys = |owners: &BTreeMap<String, String>| owners.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(&o.owned_metadata.labels),
            vec!["app.kubernetes.io/managed-by", "team"]
        );
        assert_eq!(
            keys(&o.owned_metadata.annotations),
            vec!["kubestash.io/source", "note"]
        );
        assert_eq!(
            o.other_metadata_owners.labels,
            BTreeMap::from([
                ("team".to_owned(), "kubestash/other".to_owned()),
                ("tier".to_owned(), "kubestash/other".to_owned()),
            ])
        );
        assert_eq!(keys(&o.other_metadata_owners.annotations), vec!["note"]);
    }

    #[test]
    fn a_manager_is_ours_living_dead_or_foreign() {
        let alive = living(&[OURS, "kubestash/alive"]);
        let managers = ours(&alive);
        for (manager, kind) in [
            (OURS, ManagerKind::Ours),
            ("kubestash/alive", ManagerKind::Living),
            ("kubestash/gone", ManagerKind::Dead),
            ("kubectl-edit", ManagerKind::Foreign),
            ("kubestash", ManagerKind::Foreign),
        ] {
            assert_eq!(managers.kind(manager), kind, "{manager}");
        }
        let alone = BTreeSet::new();
        let ours_only = Managers {
            ours: OURS,
            living: &alone,
        };
        assert_eq!(
            ours_only.kind(OURS),
            ManagerKind::Ours,
            "ours, listed or not"
        );
    }

    #[test]
    fn managers_of_deleted_credstashsyncs_own_nothing() {
        let s = secret(json!({
            "metadata": {"name": "s", "namespace": "ns", "managedFields": [
                entry("kubestash/renamed-away", "Apply", &["A"]),
                entry("kubestash/sync", "Apply", &["B"]),
                entry("kubestash/alive", "Apply", &["C"]),
            ]},
            "data": {"A": "YQ==", "B": "Yg==", "C": "Yw=="}
        }));
        let alive = living(&[OURS, "kubestash/alive"]);
        let o = ObservedSecret::from_secret(&s, ours(&alive));
        assert_eq!(
            o.other_kubestash_owners,
            BTreeMap::from([("C".to_owned(), "kubestash/alive".to_owned())])
        );
    }

    #[test]
    fn observe_all_keys_by_reference_and_skips_unnamed() {
        let secrets = [
            secret(json!({"metadata": {"name": "a", "namespace": "ns"}})),
            secret(json!({"metadata": {"name": "b"}})),
            secret(json!({"metadata": {"name": "c", "namespace": "other"}})),
        ];
        let everyone = living(&[OURS]);
        let all = observe_all(&secrets, ours(&everyone));
        assert_eq!(
            all.keys().cloned().collect::<Vec<_>>(),
            vec![SecretRef::new("ns", "a"), SecretRef::new("other", "c")]
        );
    }

    #[test]
    fn debug_shows_no_value() {
        let s = secret(json!({"metadata": {"name": "s"}, "data": {"K": "aHVudGVyMi1zM2NyM3Q="}}));
        let everyone = living(&[OURS]);
        let printed = format!("{:?}", ObservedSecret::from_secret(&s, ours(&everyone)));
        assert!(
            !printed.contains("hunter2") && !printed.contains("aHVudGVy"),
            "{printed}"
        );
        assert!(printed.contains("\"K\""));
    }
}
