//! `metadata.managedFields`: per-manager field ownership for Update and Apply
//! operations, conflicts and pruning (structured-merge-diff semantics).

use serde_json::{json, Map, Value};

use crate::errors::{ApiError, Cause};
use crate::fieldset::{
    compare, drop_applied_nulls, ensure_named_fields, merge, null_emptied, path_string,
    remove_items, to_set, FieldSet,
};
use crate::schema::TypeInfo;

/// One managedFields entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the manager used.
    pub api_version: String,
    /// RFC3339 time of the last change.
    pub time: String,
    /// `status` for subresource writes, empty otherwise.
    pub subresource: String,
    /// Owned fields.
    pub set: FieldSet,
}

impl Entry {
    fn same_identity(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    fn describe(&self) -> String {
        let mut s = format!("\"{}\"", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource \"{}\"", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn identity_json(&self) -> String {
        json!({"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version, "subresource": self.subresource}).to_string()
    }
}

/// Which part of the object a write through an endpoint may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (no status subresource).
    All,
    /// Everything but `status` (main endpoint of a resource with a status subresource).
    NoStatus,
    /// Only `status` (the `/status` subresource).
    StatusOnly,
    /// The `/status` subresource of a built-in kind whose status strategy
    /// resets only `spec` (and a Deployment's `metadata.labels`): the rest of
    /// the object, metadata included, goes through.
    NoSpec {
        /// Whether `metadata.labels` is reset too (Deployments).
        reset_labels: bool,
    },
}

impl Scope {
    /// The scope of a write to `res` through `subresource`.
    pub fn of(res: &crate::resources::ResourceInfo, subresource: Option<&str>) -> Scope {
        use crate::resources::Class;
        match subresource {
            Some("status") if matches!(res.class, Class::Workload | Class::Namespace) => {
                Scope::NoSpec {
                    reset_labels: res.kind == "Deployment",
                }
            }
            Some("status") => Scope::StatusOnly,
            _ if res.status_subresource => Scope::NoStatus,
            _ => Scope::All,
        }
    }

    fn keep(self, set: &FieldSet) -> FieldSet {
        let meta = vec!["f:metadata".to_string()];
        let set = set.filter(|p| *p != meta);
        match self {
            Scope::All => set,
            Scope::NoStatus => set.filter(|p| p.first().map(String::as_str) != Some("f:status")),
            Scope::StatusOnly => set.filter(|p| p.first().map(String::as_str) == Some("f:status")),
            Scope::NoSpec { reset_labels } => set.filter(|p| {
                let head: Vec<&str> = p.iter().take(2).map(String::as_str).collect();
                head.first() != Some(&"f:spec")
                    && !(reset_labels && head == ["f:metadata", "f:labels"])
            }),
        }
    }
}

/// Reads the entries of an object.
pub fn decode(obj: &Value) -> Vec<Entry> {
    decode_list(&obj["metadata"]["managedFields"])
}

/// The entries a write's body asks for, as kube-apiserver reads them
/// (`decodeLiveOrNew`): `[]` and `[{}]` reset them to none, any other list
/// replaces the stored entries, and no list (or `null`) keeps them (`None`).
pub fn requested(obj: &Value) -> Option<Vec<Entry>> {
    let list = &obj["metadata"]["managedFields"];
    let items = list.as_array()?;
    let reset =
        items.is_empty() || (items.len() == 1 && items[0].as_object().is_some_and(Map::is_empty));
    Some(if reset { vec![] } else { decode_list(list) })
}

fn decode_list(list: &Value) -> Vec<Entry> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().to_string(),
                    operation: e["operation"].as_str().unwrap_or_default().to_string(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                    time: e["time"].as_str().unwrap_or_default().to_string(),
                    subresource: e["subresource"].as_str().unwrap_or_default().to_string(),
                    set: FieldSet::from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes entries into an object, sorted as kube-apiserver sorts them.
pub fn encode(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (
            a.operation.as_str(),
            a.time.as_str(),
            a.manager.as_str(),
            a.api_version.as_str(),
            a.subresource.as_str(),
        )
            .cmp(&(
                b.operation.as_str(),
                b.time.as_str(),
                b.manager.as_str(),
                b.api_version.as_str(),
                b.subresource.as_str(),
            ))
    });
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.set.to_fields_v1(),
            });
            // An entry kube-apiserver never stamped has no time.
            if e.time.is_empty() {
                v.as_object_mut().unwrap().remove("time");
            }
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// An object without the fields that are never tracked.
pub fn strip(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
                "selfLink",
            ] {
                meta.remove(k);
            }
        }
    }
    o
}

/// Puts the stripped fields of `from` back onto `obj`.
pub fn unstrip(obj: &mut Value, from: &Value) {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    for k in ["apiVersion", "kind"] {
        if let Some(v) = from.get(k) {
            obj[k] = v.clone();
        }
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = Value::Object(Map::new());
    }
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "selfLink",
    ] {
        if let Some(v) = from["metadata"].get(k) {
            obj["metadata"][k] = v.clone();
        }
    }
}

/// Who writes, through which endpoint, when.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// Type information of the resource.
    pub ti: TypeInfo<'a>,
    /// Which fields the endpoint may own.
    pub scope: Scope,
    /// Field manager.
    pub manager: &'a str,
    /// apiVersion of the request.
    pub api_version: &'a str,
    /// Subresource (`status`) or empty.
    pub subresource: &'a str,
    /// Time of the write (RFC3339).
    pub now: &'a str,
}

/// Ownership after an Update-type write (create, PUT, merge/strategic/JSON patch):
/// the manager gains the added and modified fields, others lose them.
pub fn update(entries: Vec<Entry>, old: &Value, new: &Value, op: &Op) -> Vec<Entry> {
    let Op {
        ti,
        scope,
        manager,
        api_version,
        subresource,
        now,
    } = *op;
    let ti = &ti;
    let zero = ti.value_structs();
    let cmp = compare(
        &with_value_structs(strip(old), &zero),
        &with_value_structs(strip(new), &zero),
        ti,
    );
    let changed = scope.keep(&cmp.added.union(&cmp.modified));
    let removed = scope.keep(&cmp.removed);
    let mut out: Vec<Entry> = entries
        .into_iter()
        .map(|mut e| {
            if !e.same_identity(manager, "Update", subresource) {
                e.set = e.set.difference(&changed).recursive_difference(&removed);
            }
            e
        })
        .collect();
    let existing = out
        .iter()
        .position(|e| e.same_identity(manager, "Update", subresource));
    let idx = match existing {
        Some(i) => i,
        None => {
            out.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                subresource: subresource.to_string(),
                set: FieldSet::default(),
            });
            out.len() - 1
        }
    };
    let e = &mut out[idx];
    let new_set = e.set.recursive_difference(&removed).union(&changed);
    // kube-apiserver's managedFieldsUpdater restamps the manager's entry
    // when the write added or modified a field (whoever owned it before);
    // a write that only removes fields keeps the old time.
    if !changed.is_empty() {
        e.time = now.to_string();
    }
    e.set = new_set;
    e.api_version = api_version.to_string();
    out.retain(|e| !e.set.is_empty());
    cap_update_managers(&mut out);
    out
}

/// How many Update entries kube-apiserver keeps before it merges the
/// oldest into [`ANCIENT_CHANGES`].
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// The Update manager the oldest Update entries are merged into.
pub const ANCIENT_CHANGES: &str = "ancient-changes";

/// kube-apiserver's capManagersManager (after every Update-type write):
/// with more than [`MAX_UPDATE_MANAGERS`] Update entries, the oldest (by
/// time, then by manager identifier) are merged, per apiVersion, into one
/// `ancient-changes` entry that takes the time of the newest one merged.
/// Ported as written, quirks included.
fn cap_update_managers(entries: &mut Vec<Entry>) {
    let id = |e: &Entry| {
        let mut s = format!(
            "{{\"manager\":{},\"operation\":{},\"apiVersion\":{}",
            json!(e.manager),
            json!(e.operation),
            json!(e.api_version)
        );
        if !e.subresource.is_empty() {
            s.push_str(&format!(",\"subresource\":{}", json!(e.subresource)));
        }
        s + "}"
    };
    let mut updaters: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e.operation != "Apply")
        .map(|e| (e.time.clone(), id(e)))
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort();
    let position = |entries: &Vec<Entry>, key: &str| entries.iter().position(|e| id(e) == key);
    let mut first_of_version: std::collections::HashMap<String, String> = Default::default();
    let mut length = updaters.len();
    for (_, key) in &updaters {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let Some(i) = position(entries, key) else {
            continue;
        };
        let (version, time, set) = (
            entries[i].api_version.clone(),
            entries[i].time.clone(),
            entries[i].set.clone(),
        );
        let bucket = Entry {
            manager: ANCIENT_CHANGES.into(),
            operation: "Update".into(),
            api_version: version.clone(),
            time: String::new(),
            subresource: String::new(),
            set: FieldSet::default(),
        };
        let bucket_id = id(&bucket);
        match first_of_version.get(&version) {
            Some(first) => {
                if position(entries, &bucket_id).is_none() {
                    if let Some(f) = position(entries, first) {
                        let first_entry = entries.remove(f);
                        entries.push(Entry {
                            set: first_entry.set,
                            ..bucket.clone()
                        });
                    }
                }
                if let Some(b) = position(entries, &bucket_id) {
                    entries[b].set = set.union(&entries[b].set);
                }
                if let Some(m) = position(entries, key) {
                    entries.remove(m);
                }
                length -= 1;
                if let Some(b) = position(entries, &bucket_id) {
                    entries[b].time = time;
                }
            }
            None => {
                first_of_version.insert(version, key.clone());
            }
        }
    }
}

/// `obj` with the empty value structs of `zero` added where it has none.
fn with_value_structs(mut obj: Value, zero: &Value) -> Value {
    if let (Some(o), Some(z)) = (obj.as_object_mut(), zero.as_object()) {
        for (k, zv) in z {
            let child = o.entry(k.clone()).or_insert_with(|| json!({}));
            if child.is_object() {
                *child = with_value_structs(child.take(), zv);
            }
        }
    }
    obj
}

/// The Update manager kube-apiserver gives an object's existing fields when
/// it is applied to without managedFields.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// The entries an apply to an existing object without managedFields starts
/// from: every field it has belongs to the Update manager
/// `before-first-apply` (kube-apiserver's `skipNonAppliedManager`), so the
/// apply conflicts where it changes a value.
pub fn before_first_apply(live: &Value, op: &Op) -> Vec<Entry> {
    let first = Op {
        manager: BEFORE_FIRST_APPLY,
        ..*op
    };
    update(vec![], &json!({}), live, &first)
}

/// structured-merge-diff's prune: what the applier applied last time
/// (`last`) and not now goes, unless a manager (the applier's new
/// configuration included) owns it; a named field (struct field) it owned
/// goes with everything under it that nobody owns, while map keys it never
/// owned stay.
fn prune(merged: &Value, last: &FieldSet, owned: &FieldSet, ti: &TypeInfo) -> Value {
    if last.is_empty() {
        return merged.clone();
    }
    let named = |s: &FieldSet| ensure_named_fields(s, ti);
    // The API server's own metadata (name, namespace) is owned by every applier.
    let mut owned = named(owned);
    owned.insert(vec!["f:metadata".into()]);
    let last = named(last);
    let all = named(&to_set(merged, ti, false));
    // RemoveItems leaves null where it empties a map or list, and a null
    // is a member of the set it is read back as.
    let remove = |set: &FieldSet| {
        let mut out = remove_items(merged, set);
        null_emptied(&mut out, set);
        out
    };
    let first = remove(&last);
    let keep = named(&to_set(&first, ti, false)).union(&owned);
    let owned_back = remove(&all.difference(&keep));
    let dangling = all
        .difference(&named(&to_set(&owned_back, ti, false)))
        .intersection(&last);
    let mut pruned = remove_items(merged, &dangling);
    if ti.stores_nulls() {
        null_emptied(&mut pruned, &dangling);
    }
    pruned
}

/// Result of a server-side apply.
pub struct Applied {
    /// The merged object (stripped fields taken from `live`).
    pub object: Value,
    /// New managedFields entries.
    pub entries: Vec<Entry>,
}

/// Server-side apply of `config` by `manager` onto `live` (an empty object when creating).
pub fn apply(
    entries: Vec<Entry>,
    live: &Value,
    config: &Value,
    op: &Op,
    force: bool,
) -> Result<Applied, ApiError> {
    let Op {
        ti,
        scope,
        manager,
        api_version,
        subresource,
        now,
    } = *op;
    let ti = &ti;
    let live_s = strip(live);
    let mut config_s = strip(config);
    match scope {
        Scope::NoStatus => {
            if let Some(m) = config_s.as_object_mut() {
                m.remove("status");
            }
        }
        Scope::StatusOnly => {
            let status = config_s.get("status").cloned();
            config_s = json!({});
            if let Some(s) = status {
                config_s["status"] = s;
            }
        }
        Scope::NoSpec { reset_labels } => {
            if let Some(m) = config_s.as_object_mut() {
                m.remove("spec");
            }
            if reset_labels {
                if let Some(m) = config_s["metadata"].as_object_mut() {
                    m.remove("labels");
                }
            }
        }
        Scope::All => {}
    }
    let config_set = scope.keep(&to_set(&config_s, ti, false));
    let last_set = entries
        .iter()
        .find(|e| e.same_identity(manager, "Apply", subresource))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let owned = entries
        .iter()
        .filter(|e| !e.same_identity(manager, "Apply", subresource))
        .fold(config_set.clone(), |acc, e| acc.union(&e.set));
    let mut merged = prune(&merge(&live_s, &config_s, ti), &last_set, &owned, ti);
    let cmp = compare(&live_s, &merged, ti);
    // An explicit null is a value to structured-merge-diff, kept in the
    // merged object: it modifies the live value it replaces (a conflict
    // with its owner; a map or keyed list it replaces only loses its
    // items), and it is added where the live object has no such field (a
    // conflict with a manager that owns the absent field), though a
    // built-in kind's stored object (converted to its Go type) has none
    // either way.
    let changed = scope.keep(&cmp.added.union(&cmp.modified));
    // structured-merge-diff merges the whole configuration, the fields the
    // endpoint resets (status through the main endpoint, the rest through
    // /status) included: the apply is no no-op when those differ either.
    let object_changed = live_s != merged || live_s != merge(&live_s, &strip(config), ti);

    let mut conflicts: Vec<(String, String, Vec<String>)> = vec![];
    // kube-apiserver's lastAppliedManager: the conflicts of an apply by
    // `kubectl` on fields its client-side last-applied annotation set, to
    // the values they still have, are allowed; when they all are, the
    // apply is forced.
    let allowed = if manager == "kubectl" && !force {
        allowed_by_last_applied(live, ti)
    } else {
        FieldSet::default()
    };
    for e in &entries {
        if e.same_identity(manager, "Apply", subresource) {
            continue;
        }
        let c = e.set.intersection(&changed).difference(&allowed);
        if !c.is_empty() {
            conflicts.push((
                e.identity_json(),
                e.describe(),
                c.0.iter().map(|p| path_string(p)).collect(),
            ));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(conflicts));
    }
    if !ti.stores_nulls() {
        drop_applied_nulls(&mut merged, &config_s);
    }
    let previous_entries = entries.clone();
    let mut out: Vec<Entry> = entries
        .into_iter()
        .filter(|e| !e.same_identity(manager, "Apply", subresource))
        .map(|mut e| {
            e.set = e
                .set
                .difference(&changed)
                .recursive_difference(&cmp.removed);
            e
        })
        .collect();
    // kube-apiserver's managedFieldsUpdater stamps an applier's entry only
    // when the apply changed the object; otherwise the entry keeps the time
    // it had, and a new entry has none.
    let previous_time = previous_entries
        .iter()
        .find(|e| e.same_identity(manager, "Apply", subresource))
        .map(|e| e.time.clone())
        .unwrap_or_default();
    let out_time = if object_changed {
        now.to_string()
    } else {
        previous_time
    };
    out.push(Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: api_version.to_string(),
        time: out_time,
        subresource: subresource.to_string(),
        set: config_set,
    });
    out.retain(|e| !e.set.is_empty());
    unstrip(&mut merged, live);
    Ok(Applied {
        object: merged,
        entries: out,
    })
}

/// The fields kubectl's client-side last-applied annotation of `live` sets
/// to the values `live` still has (lastAppliedManager's
/// allowedConflictsFromLastApplied); none without a readable annotation of
/// the object's own kind.
fn allowed_by_last_applied(live: &Value, ti: &TypeInfo) -> FieldSet {
    let Some(text) = live["metadata"]["annotations"]
        ["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
    else {
        return FieldSet::default();
    };
    let Ok(last) = serde_json::from_str::<Value>(text) else {
        return FieldSet::default();
    };
    if !last.is_object() || last["apiVersion"] != live["apiVersion"] || last["kind"] != live["kind"]
    {
        return FieldSet::default();
    }
    let (last, live) = (strip(&last), strip(live));
    let cmp = compare(&last, &live, ti);
    to_set(&last, ti, false).difference(&cmp.modified.union(&cmp.added))
}

fn conflict_error(mut conflicts: Vec<(String, String, Vec<String>)>) -> ApiError {
    conflicts.sort();
    let total: usize = conflicts.iter().map(|c| c.2.len()).sum();
    let mut causes = vec![];
    for (_, who, paths) in &conflicts {
        for p in paths {
            causes.push(Cause {
                reason: "FieldManagerConflict".into(),
                message: format!("conflict with {who}"),
                field: p.clone(),
            });
        }
    }
    let message = if total == 1 {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            conflicts[0].1, conflicts[0].2[0]
        )
    } else {
        let mut lines = vec![];
        for (_, who, paths) in &conflicts {
            lines.push(format!("conflicts with {who}:"));
            for p in paths {
                lines.push(format!("- {p}"));
            }
        }
        format!("Apply failed with {total} conflicts: {}", lines.join("\n"))
    };
    let mut e = ApiError::new(409, "Conflict", message);
    e.details = Some(
        json!({"causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>()}),
    );
    e
}
