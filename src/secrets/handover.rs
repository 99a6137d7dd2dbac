//! Handing the field ownership of deleted CredstashSyncs over: pure edits of
//! a Secret's `managedFields`.
//!
//! A `kubestash/<name>` manager whose CredstashSync no longer exists must
//! not keep owning keys: while it co-owns a key, server-side apply never
//! removes it (no pruning), and it blocks nobody but confuses everyone. Its
//! entries are not simply dropped: keys owned by nobody are never pruned
//! either (and an empty `managedFields` makes kube-apiserver give every
//! field to `before-first-apply` on the next apply). So they go to an heir,
//! the CredstashSync about to write the Secret, which takes the keys over as
//! a renamed or replacement CredstashSync should.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use serde_json::Value;

/// The `managedFields` after handing the entries of `dead` managers to
/// `heir` (merged into its `Apply` entry, or becoming it); `None` when no
/// entry is `dead`'s.
pub fn hand_over(
    entries: &[ManagedFieldsEntry],
    dead: &BTreeSet<String>,
    heir: &str,
) -> Option<Vec<ManagedFieldsEntry>> {
    let is_dead = |entry: &ManagedFieldsEntry| {
        entry.subresource.is_none() && entry.manager.as_ref().is_some_and(|m| dead.contains(m))
    };
    let (gone, mut kept): (Vec<&ManagedFieldsEntry>, Vec<ManagedFieldsEntry>) = (
        entries.iter().filter(|e| is_dead(e)).collect(),
        entries.iter().filter(|e| !is_dead(e)).cloned().collect(),
    );
    if gone.is_empty() {
        return None;
    }
    let is_heirs = |entry: &ManagedFieldsEntry| {
        entry.manager.as_deref() == Some(heir)
            && entry.operation.as_deref() == Some("Apply")
            && entry.subresource.is_none()
    };
    let index = match kept.iter().position(is_heirs) {
        Some(index) => index,
        None => {
            kept.push(ManagedFieldsEntry {
                manager: Some(heir.to_owned()),
                operation: Some("Apply".to_owned()),
                fields_type: Some("FieldsV1".to_owned()),
                fields_v1: Some(FieldsV1(Value::Object(Default::default()))),
                ..gone[0].clone()
            });
            kept.len() - 1
        }
    };
    let heirs = &mut kept[index];
    let mut fields = heirs
        .fields_v1
        .take()
        .map(|f| f.0)
        .unwrap_or_else(|| Value::Object(Default::default()));
    for entry in &gone {
        if let Some(FieldsV1(more)) = &entry.fields_v1 {
            union(&mut fields, more);
        }
        heirs.time = heirs.time.clone().max(entry.time.clone());
    }
    heirs.fields_v1 = Some(FieldsV1(fields));
    Some(kept)
}

/// Adds every field of `more` to `into` (both `FieldsV1` trees).
fn union(into: &mut Value, more: &Value) {
    let (Value::Object(into), Value::Object(more)) = (into, more) else {
        return;
    };
    for (key, value) in more {
        match into.get_mut(key) {
            Some(existing) => union(existing, value),
            None => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        serde_json::from_value(json!({
            "manager": manager, "operation": operation, "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": fields,
        }))
        .expect("an entry")
    }

    fn data(keys: &[&str]) -> Value {
        let keys: serde_json::Map<String, Value> =
            keys.iter().map(|k| (format!("f:{k}"), json!({}))).collect();
        json!({"f:data": keys})
    }

    fn dead(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn summary(entries: &[ManagedFieldsEntry]) -> Vec<(String, Value)> {
        entries
            .iter()
            .map(|e| {
                let fields = e
                    .fields_v1
                    .as_ref()
                    .map(|f| f.0.clone())
                    .unwrap_or_default();
                (e.manager.clone().unwrap_or_default(), fields)
            })
            .collect()
    }

    #[test]
    fn the_last_entry_of_a_deleted_credstashsync_goes_to_its_heir() {
        let entries = [entry("kubestash/old", "Apply", data(&["A", "B"]))];
        let after =
            hand_over(&entries, &dead(&["kubestash/old"]), "kubestash/new").expect("a change");
        assert_eq!(
            summary(&after),
            vec![("kubestash/new".to_owned(), data(&["A", "B"]))]
        );
        assert_eq!(after[0].operation.as_deref(), Some("Apply"));
    }

    #[test]
    fn entries_merge_into_the_heirs_own() {
        let entries = [
            entry("kubestash/new", "Apply", data(&["A"])),
            entry("kubectl-edit", "Update", data(&["HAND"])),
            entry("kubestash/old", "Apply", data(&["B"])),
        ];
        let after =
            hand_over(&entries, &dead(&["kubestash/old"]), "kubestash/new").expect("a change");
        assert_eq!(
            summary(&after),
            vec![
                ("kubestash/new".to_owned(), data(&["A", "B"])),
                ("kubectl-edit".to_owned(), data(&["HAND"])),
            ]
        );
    }

    #[test]
    fn nothing_changes_without_a_dead_entry() {
        let entries = [entry("kubestash/new", "Apply", data(&["A"]))];
        assert_eq!(
            hand_over(&entries, &dead(&["kubestash/old"]), "kubestash/new"),
            None
        );
    }
}
