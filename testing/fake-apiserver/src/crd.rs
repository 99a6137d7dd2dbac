//! CustomResourceDefinition lifecycle: defaults, validation, the naming and
//! establishing controllers, and cleanup of custom resources on deletion.

use serde_json::{json, Value};

use crate::errors::Cause;
use crate::server::Inner;
use crate::util::now_rfc3339;
use crate::write::remove_object;

const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn defaults(obj: &mut Value) {
    let kind = obj["spec"]["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if obj["spec"]["names"].is_object() {
        if obj["spec"]["names"]["singular"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            obj["spec"]["names"]["singular"] = json!(kind.to_lowercase());
        }
        if obj["spec"]["names"]["listKind"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            obj["spec"]["names"]["listKind"] = json!(format!("{kind}List"));
        }
    }
    if obj["spec"].is_object() && obj["spec"]["conversion"].is_null() {
        obj["spec"]["conversion"] = json!({"strategy": "None"});
    }
}

/// Create strategy: defaults, status reset, cleanup finalizer.
pub fn prepare_create(obj: &mut Value) {
    defaults(obj);
    let storage = obj["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
        .map(|v| v["name"].clone())
        .unwrap_or(Value::Null);
    obj["status"] = json!({"conditions": [], "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": [storage]});
    if obj["metadata"].is_object() {
        let mut f: Vec<Value> = obj["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !f.contains(&json!(CLEANUP_FINALIZER)) {
            f.push(json!(CLEANUP_FINALIZER));
        }
        obj["metadata"]["finalizers"] = json!(f);
    }
}

/// Update strategy: defaults and stored versions.
pub fn prepare_update(old: &Value, new: &mut Value) {
    defaults(new);
    let _ = old;
    if let Some(storage) = new["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
        .map(|v| v["name"].clone())
    {
        if new["status"].is_object() {
            let mut stored: Vec<Value> = new["status"]["storedVersions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !stored.contains(&storage) {
                stored.push(storage);
            }
            new["status"]["storedVersions"] = json!(stored);
        }
    }
}

/// CRD validation (names, versions).
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let req = |causes: &mut Vec<Cause>, field: &str| {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: field.into(),
        })
    };
    if group.is_empty() {
        req(causes, "spec.group");
    }
    if plural.is_empty() {
        req(causes, "spec.names.plural");
    }
    if spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
        req(causes, "spec.names.kind");
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced") | Some("Cluster")) {
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: \"Cluster\", \"Namespaced\"",
                spec["scope"]
            ),
            field: "spec.scope".into(),
        });
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        req(causes, "spec.versions");
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if !versions.is_empty() && storage != 1 {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {:?}: must have exactly one version marked as storage version",
                versions
                    .iter()
                    .filter_map(|v| v["name"].as_str())
                    .collect::<Vec<_>>()
            ),
            field: "spec.versions".into(),
        });
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
            ),
            field: "metadata.name".into(),
        });
    }
}

/// Naming and establishing controllers: accept names and mark Established.
pub fn after_create(inner: &mut Inner, stored: Value) -> Value {
    let mut est = stored.clone();
    let now = now_rfc3339();
    est["status"]["acceptedNames"] = est["spec"]["names"].clone();
    est["status"]["conditions"] = json!([
        {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
        {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
    ]);
    inner
        .store
        .put("apiextensions.k8s.io/customresourcedefinitions", est);
    inner.refresh_registry();
    stored
}

/// Deleting a CRD: removes all its custom resources, then the CRD.
pub fn cleanup(inner: &mut Inner, crd: &Value) {
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
    let storage = format!("{group}/{plural}");
    let mut terminating = crd.clone();
    if let Some(conds) = terminating["status"]["conditions"].as_array_mut() {
        conds.retain(|c| c["type"] != "Established");
        conds.push(json!({"type": "Terminating", "status": "True", "lastTransitionTime": now_rfc3339(), "reason": "InstanceDeletionInProgress", "message": "CustomResource deletion is in progress"}));
    }
    let terminating = inner.store.put(
        "apiextensions.k8s.io/customresourcedefinitions",
        terminating,
    );
    let res = inner
        .registry
        .all()
        .iter()
        .find(|r| r.storage == storage)
        .cloned();
    inner.refresh_registry();
    for obj in inner.store.list(&storage, None) {
        let (ns, name) = crate::store::object_key(&obj);
        match &res {
            Some(r) => {
                remove_object(inner, r, &ns, &name);
            }
            None => {
                inner.store.remove(&storage, &ns, &name);
            }
        }
    }
    let mut done = terminating;
    if let Some(f) = done["metadata"]["finalizers"].as_array_mut() {
        f.retain(|x| x != CLEANUP_FINALIZER);
    }
    let name = done["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let remaining = done["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    inner
        .store
        .put("apiextensions.k8s.io/customresourcedefinitions", done);
    if !remaining {
        inner
            .store
            .remove("apiextensions.k8s.io/customresourcedefinitions", "", &name);
        inner.refresh_registry();
    }
}
