//! Field sets in the `FieldsV1` format (structured-merge-diff): object walks,
//! comparisons, merges and removals keyed by paths such as `f:data`, `k:{"uid":"x"}`
//! and `v:"item"`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::schema::{ListType, TypeInfo};

/// A path of `FieldsV1` elements.
pub type Path = Vec<String>;

/// A set of field paths (members).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(pub BTreeSet<Path>);

impl FieldSet {
    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds a member.
    pub fn insert(&mut self, p: Path) {
        if !p.is_empty() {
            self.0.insert(p);
        }
    }

    /// Members of both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// Members of either.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    /// Members of self not in other.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    /// Members of self that neither are nor lie under a member of other.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(
            self.0
                .iter()
                .filter(|p| !other.0.iter().any(|o| p.starts_with(o)))
                .cloned()
                .collect(),
        )
    }

    /// Whether any member equals `p` or lies under it.
    pub fn has_prefix(&self, p: &[String]) -> bool {
        self.0.iter().any(|m| m.starts_with(p))
    }

    /// Keeps only members for which `keep` holds.
    pub fn filter(&self, keep: impl Fn(&Path) -> bool) -> FieldSet {
        FieldSet(self.0.iter().filter(|p| keep(p)).cloned().collect())
    }

    /// Parses a `fieldsV1` object.
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        fn walk(v: &Value, path: &mut Path, set: &mut FieldSet) {
            if let Some(m) = v.as_object() {
                if m.is_empty() {
                    set.insert(path.clone());
                }
                for (k, child) in m {
                    if k == "." {
                        set.insert(path.clone());
                        continue;
                    }
                    path.push(k.clone());
                    walk(child, path, set);
                    path.pop();
                }
            }
        }
        walk(v, &mut vec![], &mut set);
        set
    }

    /// Renders the `fieldsV1` object.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Value::Object(Map::new());
        for p in &self.0 {
            let mut node = &mut root;
            for el in p {
                let Value::Object(m) = node else { break };
                node = m
                    .entry(el.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
        }
        // Members that also have children get a "." marker.
        for p in &self.0 {
            let mut node = &mut root;
            for el in p {
                node = &mut node[el.as_str()];
            }
            if let Some(m) = node.as_object_mut() {
                if !m.is_empty() {
                    m.insert(".".into(), Value::Object(Map::new()));
                }
            }
        }
        root
    }
}

/// The field names of a path, `"[]"` for list items (what `TypeInfo` takes).
fn type_path(p: &[String]) -> Vec<String> {
    p.iter()
        .map(|el| {
            el.strip_prefix("f:")
                .map_or_else(|| "[]".to_string(), str::to_string)
        })
        .collect()
}

/// The set with every named (struct) field on the way to a member added as
/// a member itself, but not map keys (structured-merge-diff's
/// `EnsureNamedFieldsAreMembers`): owning `.metadata.labels.a` then also
/// means `.metadata` and `.metadata.labels`, not `.metadata.labels` keys.
pub fn ensure_named_fields(set: &FieldSet, ti: &TypeInfo) -> FieldSet {
    let mut out = set.clone();
    for p in &set.0 {
        for k in 1..p.len() {
            if p[k - 1].starts_with("f:") && !ti.is_map(&type_path(&p[..k - 1])) {
                out.insert(p[..k].to_vec());
            }
        }
    }
    out
}

/// The object without the members of `set` (each with everything under it),
/// as structured-merge-diff's `RemoveItems`. A map or list left empty stays
/// as `{}` or `[]` here: it is no removed field for ownership, and a built-in
/// kind's Go type does not store it (see [`null_emptied`] for the stored
/// form of a custom resource).
pub fn remove_items(obj: &Value, set: &FieldSet) -> Value {
    let mut out = obj.clone();
    for p in &set.0 {
        remove_path(&mut out, p);
    }
    out
}

/// What `RemoveItems` really leaves: every map or list on the way to a
/// removed member that ends up empty becomes `null` (structured-merge-diff's
/// removing walker sets only non-empty results). kube-apiserver stores that
/// `null` in a custom resource, where a schema that is not `nullable`
/// refuses it.
pub fn null_emptied(obj: &mut Value, removed: &FieldSet) {
    let mut ancestors: Vec<&[String]> = removed
        .0
        .iter()
        .flat_map(|p| (1..p.len()).map(move |k| &p[..k]))
        .collect();
    ancestors.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    ancestors.dedup();
    for path in ancestors {
        let node = path.iter().try_fold(&mut *obj, |n, el| step_mut(n, el));
        if let Some(node) = node {
            let empty = match node {
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            if empty {
                *node = Value::Null;
            }
        }
    }
}

/// Renders a path as kube-apiserver prints it in conflicts (`.data.A`, `[uid="x"]`).
pub fn path_string(p: &[String]) -> String {
    let mut s = String::new();
    for el in p {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = el.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

/// The `k:` element for a keyed list item.
fn key_element(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    // serde_json maps are sorted, matching SMD's canonical key order.
    format!("k:{}", Value::Object(m))
}

fn value_element(item: &Value) -> String {
    format!("v:{item}")
}

fn list_items<'v>(items: &'v [Value], lt: &ListType) -> Vec<(String, &'v Value)> {
    items
        .iter()
        .map(|it| match lt {
            ListType::Set => (value_element(it), it),
            ListType::Map(keys) => (key_element(it, keys), it),
            ListType::Atomic => (String::new(), it),
        })
        .collect()
}

/// Walks an object into a field set. `containers` = true adds every map and
/// list that holds members (an Update's "added" view); false adds them only when
/// empty (an Apply configuration's view).
pub fn to_set(obj: &Value, ti: &TypeInfo, containers: bool) -> FieldSet {
    let mut set = FieldSet::default();
    walk_set(obj, ti, containers, &mut vec![], &mut vec![], &mut set);
    set
}

fn walk_set(
    v: &Value,
    ti: &TypeInfo,
    containers: bool,
    path: &mut Path,
    tpath: &mut Vec<String>,
    set: &mut FieldSet,
) {
    match v {
        Value::Object(_) if ti.is_atomic_struct(tpath) => set.insert(path.clone()),
        Value::Object(m) => {
            if m.is_empty() || containers {
                set.insert(path.clone());
            }
            for (k, child) in m {
                path.push(format!("f:{k}"));
                tpath.push(k.clone());
                walk_set(child, ti, containers, path, tpath, set);
                path.pop();
                tpath.pop();
            }
        }
        Value::Array(items) => {
            let lt = ti.list_type(tpath);
            // An empty set or keyed list owns nothing in an apply
            // configuration (structured-merge-diff's toFieldSet).
            if lt == ListType::Atomic || containers {
                set.insert(path.clone());
            }
            if lt == ListType::Atomic {
                return;
            }
            for (el, item) in list_items(items, &lt) {
                path.push(el);
                set.insert(path.clone());
                if matches!(lt, ListType::Map(_)) {
                    if let Some(m) = item.as_object() {
                        tpath.push("[]".into());
                        for (k, child) in m {
                            path.push(format!("f:{k}"));
                            tpath.push(k.clone());
                            walk_set(child, ti, containers, path, tpath, set);
                            path.pop();
                            tpath.pop();
                        }
                        tpath.pop();
                    }
                }
                path.pop();
            }
        }
        _ => set.insert(path.clone()),
    }
}

/// Differences between two objects as field sets.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Paths only in the new object (containers included).
    pub added: FieldSet,
    /// Leaves (or atomic values) whose value changed.
    pub modified: FieldSet,
    /// Paths only in the old object.
    pub removed: FieldSet,
}

/// Compares two objects.
pub fn compare(old: &Value, new: &Value, ti: &TypeInfo) -> Comparison {
    let mut c = Comparison::default();
    walk_cmp(Some(old), Some(new), ti, &mut vec![], &mut vec![], &mut c);
    c
}

fn walk_cmp(
    o: Option<&Value>,
    n: Option<&Value>,
    ti: &TypeInfo,
    path: &mut Path,
    tpath: &mut Vec<String>,
    c: &mut Comparison,
) {
    // structured-merge-diff reads a null map or keyed list as an empty one:
    // null against one with items is no change of the field itself, only
    // its items come or go. (Null against an empty one is a leaf that
    // changed.)
    let empty_object = Value::Object(Map::new());
    let empty_array = Value::Array(vec![]);
    let map =
        |v: &Value| v.as_object().is_some_and(|m| !m.is_empty()) && !ti.is_atomic_struct(tpath);
    let keyed = |v: &Value| {
        v.as_array().is_some_and(|a| !a.is_empty()) && ti.list_type(tpath) != ListType::Atomic
    };
    let (o, n) = match (o, n) {
        (Some(Value::Null), Some(n)) if map(n) => (Some(&empty_object), Some(n)),
        (Some(o), Some(Value::Null)) if map(o) => (Some(o), Some(&empty_object)),
        (Some(Value::Null), Some(n)) if keyed(n) => (Some(&empty_array), Some(n)),
        (Some(o), Some(Value::Null)) if keyed(o) => (Some(o), Some(&empty_array)),
        other => other,
    };
    match (o, n) {
        (None, None) => {}
        (None, Some(n)) => {
            let mut sub = FieldSet::default();
            walk_set(n, ti, true, &mut path.clone(), &mut tpath.clone(), &mut sub);
            sub.insert(path.clone());
            c.added = c.added.union(&sub);
        }
        (Some(_), None) => c.removed.insert(path.clone()),
        (Some(a), Some(b)) if ti.is_atomic_struct(tpath) => {
            if a != b {
                c.modified.insert(path.clone());
            }
        }
        (Some(Value::Object(om)), Some(Value::Object(nm))) => {
            let keys: BTreeSet<&String> = om.keys().chain(nm.keys()).collect();
            for k in keys {
                path.push(format!("f:{k}"));
                tpath.push(k.clone());
                walk_cmp(om.get(k), nm.get(k), ti, path, tpath, c);
                path.pop();
                tpath.pop();
            }
        }
        (Some(Value::Array(oa)), Some(Value::Array(na))) => {
            let lt = ti.list_type(tpath);
            if lt == ListType::Atomic {
                if oa != na {
                    c.modified.insert(path.clone());
                }
                return;
            }
            let oi = list_items(oa, &lt);
            let ni = list_items(na, &lt);
            let keys: BTreeSet<&String> = oi
                .iter()
                .map(|(k, _)| k)
                .chain(ni.iter().map(|(k, _)| k))
                .collect();
            for k in keys {
                let ov = oi.iter().find(|(ok, _)| ok == k).map(|(_, v)| *v);
                let nv = ni.iter().find(|(nk, _)| nk == k).map(|(_, v)| *v);
                path.push(k.clone());
                tpath.push("[]".into());
                match (ov, nv) {
                    (Some(Value::Object(a)), Some(Value::Object(b)))
                        if matches!(lt, ListType::Map(_)) =>
                    {
                        let fields: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                        for f in fields {
                            path.push(format!("f:{f}"));
                            tpath.push(f.clone());
                            walk_cmp(a.get(f), b.get(f), ti, path, tpath, c);
                            path.pop();
                            tpath.pop();
                        }
                    }
                    (Some(a), Some(b)) => {
                        if a != b {
                            c.modified.insert(path.clone());
                        }
                    }
                    (a, b) => walk_cmp(a, b, ti, path, tpath, c),
                }
                path.pop();
                tpath.pop();
            }
        }
        (Some(a), Some(b)) => {
            if a != b {
                c.modified.insert(path.clone());
            }
        }
    }
}

/// Structural merge for apply: `live ⊕ config` (maps merged, keyed lists merged
/// by key, sets unioned, everything else replaced by the config's value).
pub fn merge(live: &Value, config: &Value, ti: &TypeInfo) -> Value {
    merge_at(live, config, ti, &mut vec![])
}

fn merge_at(live: &Value, config: &Value, ti: &TypeInfo, tpath: &mut Vec<String>) -> Value {
    if ti.is_atomic_struct(tpath) {
        return config.clone();
    }
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                tpath.push(k.clone());
                let merged = match l.get(k) {
                    Some(lv) if !cv.is_null() => merge_at(lv, cv, ti, tpath),
                    // A null merged into a map or keyed list that has
                    // items is an empty one: the items stay (a null
                    // replaces a scalar, an atomic list, or nothing).
                    Some(lv)
                        if (lv.as_object().is_some_and(|m| !m.is_empty())
                            && !ti.is_atomic_struct(tpath))
                            || (lv.as_array().is_some_and(|a| !a.is_empty())
                                && ti.list_type(tpath) != ListType::Atomic) =>
                    {
                        lv.clone()
                    }
                    _ => cv.clone(),
                };
                tpath.pop();
                // An explicit null is a value to structured-merge-diff: the
                // merged object has it (see `drop_nulls` for built-in kinds).
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => {
            let lt = ti.list_type(tpath);
            match &lt {
                ListType::Atomic => config.clone(),
                ListType::Set | ListType::Map(_) => {
                    tpath.push("[]".into());
                    let out = merge_list(l, c, &lt, &mut |live, item| match (live, &lt) {
                        (Some(live), ListType::Map(_)) => merge_at(live, item, ti, tpath),
                        _ => item.clone(),
                    });
                    tpath.pop();
                    Value::Array(out)
                }
            }
        }
        _ => config.clone(),
    }
}

/// `merged` without the nulls `config` put there (outside lists): what a
/// built-in kind's Go type keeps of a merged apply, where the field a null
/// was applied to is a nil pointer, slice or map that is not encoded. (The
/// nulls the live object had, such as a pod template's
/// `creationTimestamp`, are its own.)
pub fn drop_applied_nulls(merged: &mut Value, config: &Value) {
    if let (Value::Object(m), Value::Object(c)) = (merged, config) {
        for (k, cv) in c {
            if cv.is_null() {
                if m.get(k).is_some_and(Value::is_null) {
                    m.remove(k);
                }
            } else if let Some(mv) = m.get_mut(k) {
                drop_applied_nulls(mv, cv);
            }
        }
    }
}

/// structured-merge-diff's merge of a set or keyed list (`visitListItems`):
/// the items of both in an order that keeps each list's own, the applied
/// ones merged into the live ones of the same key.
fn merge_list(
    live: &[Value],
    config: &[Value],
    lt: &ListType,
    merge_item: &mut dyn FnMut(Option<&Value>, &Value) -> Value,
) -> Vec<Value> {
    use std::collections::{HashMap, HashSet, VecDeque};
    let key = |it: &Value| match lt {
        ListType::Map(keys) => key_element(it, keys),
        _ => value_element(it),
    };
    let lk: Vec<String> = live.iter().map(key).collect();
    let rk: Vec<String> = config.iter().map(key).collect();
    let mut observed_l: HashMap<&str, &Value> = HashMap::new();
    for (k, it) in lk.iter().zip(live) {
        observed_l.entry(k.as_str()).or_insert(it);
    }
    let mut observed_r: HashMap<&str, &Value> = HashMap::new();
    for (k, it) in rk.iter().zip(config) {
        observed_r.entry(k.as_str()).or_insert(it);
    }
    let mut shared: VecDeque<&str> = rk
        .iter()
        .map(String::as_str)
        .filter(|k| observed_l.contains_key(k))
        .collect();
    let mut next_shared = shared.pop_front();
    let mut merged_r: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(live.len().max(config.len()));
    let (mut li, mut ri) = (0, 0);
    while li < lk.len() || ri < rk.len() {
        if li < lk.len() && ri < rk.len() {
            let k = lk[li].as_str();
            if k == rk[ri] {
                merged_r.insert(k);
                out.push(merge_item(observed_l.get(k).copied(), observed_r[k]));
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if observed_r.contains_key(k) && next_shared.is_some_and(|n| n != k) {
                // A shared item, but not the one this round wants.
                li += 1;
                continue;
            }
        }
        if li < lk.len() {
            let k = lk[li].as_str();
            if !observed_r.contains_key(k) {
                out.push(live[li].clone());
                li += 1;
                continue;
            } else if merged_r.contains(k) {
                li += 1;
            }
        }
        if ri < rk.len() {
            let k = rk[ri].as_str();
            merged_r.insert(k);
            out.push(merge_item(observed_l.get(k).copied(), observed_r[k]));
            ri += 1;
            if next_shared == Some(k) {
                next_shared = shared.pop_front();
            }
        }
    }
    out
}

/// Removes the member at `path` from an object (no-op when absent).
pub fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = obj;
    for el in parents {
        match step_mut(node, el) {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = node.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(a) = node.as_array_mut() {
        a.retain(|it| !element_matches(it, last));
    }
}

fn element_matches(item: &Value, el: &str) -> bool {
    if let Some(k) = el.strip_prefix("k:") {
        serde_json::from_str::<Map<String, Value>>(k)
            .map(|keys| keys.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
            .unwrap_or(false)
    } else if let Some(v) = el.strip_prefix("v:") {
        serde_json::from_str::<Value>(v)
            .map(|v| &v == item)
            .unwrap_or(false)
    } else {
        false
    }
}

fn step_mut<'v>(node: &'v mut Value, el: &str) -> Option<&'v mut Value> {
    if let Some(f) = el.strip_prefix("f:") {
        node.as_object_mut()?.get_mut(f)
    } else {
        node.as_array_mut()?
            .iter_mut()
            .find(|it| element_matches(it, el))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;
    use serde_json::json;

    fn secret_ti(reg: &Registry) -> TypeInfo<'_> {
        TypeInfo::new(reg.find("", "v1", "secrets").unwrap())
    }

    #[test]
    fn fields_v1_round_trips_with_dot_markers() {
        let v = json!({"f:data": {".": {}, "f:A": {}}, "f:metadata": {"f:finalizers": {"v:\"x\"": {}}}, "f:type": {}});
        let set = FieldSet::from_fields_v1(&v);
        assert_eq!(set.to_fields_v1(), v);
    }

    #[test]
    fn update_view_includes_new_containers_apply_view_does_not() {
        let reg = Registry::new();
        let ti = secret_ti(&reg);
        let obj = json!({"data": {"A": "x"}, "metadata": {"finalizers": ["f"]}});
        let upd = to_set(&obj, &ti, true).to_fields_v1();
        assert_eq!(upd["f:data"], json!({".": {}, "f:A": {}}));
        let app = to_set(&obj, &ti, false).to_fields_v1();
        assert_eq!(app["f:data"], json!({"f:A": {}}));
        assert_eq!(app["f:metadata"]["f:finalizers"], json!({"v:\"f\"": {}}));
    }

    #[test]
    fn compare_reports_added_modified_and_removed_paths() {
        let reg = Registry::new();
        let ti = secret_ti(&reg);
        let c = compare(
            &json!({"data": {"A": "1", "B": "2"}}),
            &json!({"data": {"A": "9", "C": "3"}}),
            &ti,
        );
        let p = |s: &str| vec!["f:data".to_string(), format!("f:{s}")];
        assert!(c.modified.0.contains(&p("A")));
        assert!(c.added.0.contains(&p("C")));
        assert!(c.removed.0.contains(&p("B")));
    }

    #[test]
    fn paths_print_like_structured_merge_diff() {
        assert_eq!(path_string(&["f:data".into(), "f:A".into()]), ".data.A");
        assert_eq!(
            path_string(&[
                "f:metadata".into(),
                "f:ownerReferences".into(),
                "k:{\"uid\":\"1\"}".into()
            ]),
            ".metadata.ownerReferences[uid=\"1\"]"
        );
    }
}
