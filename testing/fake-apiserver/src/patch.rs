//! Patch types: JSON merge patch (RFC 7386), strategic merge patch for the
//! built-in types served here, and JSON Patch (RFC 6902, with evanphx/json-patch
//! v4 semantics as kube-apiserver uses them).

use serde_json::{Map, Value};

use crate::errors::ApiError;

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// How a list is merged by a strategic merge patch.
#[derive(Clone, Copy)]
enum Strategy {
    Replace,
    MergePrimitive,
    MergeByKey(&'static str),
}

impl Strategy {
    fn merges(self) -> bool {
        !matches!(self, Strategy::Replace)
    }

    /// The `patchMergeKey` (`""` for lists of primitives).
    fn key(self) -> &'static str {
        match self {
            Strategy::MergeByKey(k) => k,
            _ => "",
        }
    }
}

fn strategy(path: &[String], kind: &str) -> Strategy {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match (kind, p.as_slice()) {
        (_, ["metadata", "finalizers"]) => Strategy::MergePrimitive,
        (_, ["metadata", "ownerReferences"]) => Strategy::MergeByKey("uid"),
        ("Namespace", ["status", "conditions"]) => Strategy::MergeByKey("type"),
        ("ServiceAccount", ["secrets"]) => Strategy::MergeByKey("name"),
        ("Deployment" | "StatefulSet" | "DaemonSet", p) => crate::apps::merge_key(p)
            .map(Strategy::MergeByKey)
            .unwrap_or(Strategy::Replace),
        _ => Strategy::Replace,
    }
}

/// The name of a JSON value's type as Go's encoding/json words it.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

/// Go's `%v` of a decoded JSON value (maps with sorted keys).
fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_fmt).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_fmt(&m[k.as_str()])))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
    }
}

/// An error the strategic merge library returns as a plain Go error: the
/// patch handler passes it on, and it is answered as a 500 without reason.
fn smp_error(message: String) -> ApiError {
    ApiError::new(500, "", message)
}

/// `mergepatch.ErrNoMergeKey`.
fn no_merge_key(m: &Map<String, Value>, key: &str) -> ApiError {
    smp_error(format!(
        "map: {} does not contain declared merge key: {key}",
        go_fmt(&Value::Object(m.clone()))
    ))
}

/// Strategic merge patch for the built-in kinds served here: a port of
/// apimachinery's `strategicpatch.StrategicMergeMapPatch` as the patch
/// handler runs it (`MergeParallelList`, `IgnoreUnmatchedNulls`), with the
/// merge keys of the types served, including its list order (items new to
/// the list come before the ones only the server had; `$setElementOrder`
/// sets the order). `$`-directives left in the result are dropped, as
/// decoding into the typed object drops them.
pub fn strategic_merge_patch(target: &Value, patch: &Value, kind: &str) -> Result<Value, ApiError> {
    let Value::Object(p) = patch else {
        return Err(ApiError::bad_request(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_type(patch)
        )));
    };
    let original = target.as_object().cloned().unwrap_or_default();
    let merged = merge_map(original, p.clone(), kind, &mut vec![])?;
    Ok(strip_directives(&Value::Object(merged)))
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    kind: &str,
    path: &mut Vec<String>,
) -> Result<Map<String, Value>, ApiError> {
    if let Some(directive) = patch.get("$patch") {
        return match directive.as_str() {
            Some("replace") => {
                patch.remove("$patch");
                Ok(patch)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(smp_error(format!(
                "unknown patch type: {} in map: {}",
                go_fmt(directive),
                go_fmt(&Value::Object(patch.clone()))
            ))),
        };
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_order(&mut original, &mut patch, kind, path)?;
    for (k, patch_v) in patch {
        let (key, is_delete_list) = match k.strip_prefix("$deleteFromPrimitiveList/") {
            Some(field) => (field.to_string(), true),
            None if k.starts_with("$deleteFromPrimitiveList") => {
                return Err(ApiError::bad_request(
                    "invalid patch format of primitive list",
                ));
            }
            None => (k, false),
        };
        if patch_v.is_null() {
            original.remove(&key);
            continue;
        }
        let merged = match (original.get(&key), &patch_v) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                path.push(key.clone());
                let m = merge_map(o.clone(), p.clone(), kind, path);
                path.pop();
                Some(Value::Object(m?))
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                path.push(key.clone());
                let strat = strategy(path, kind);
                let m =
                    merge_slice_handler(o.clone(), p.clone(), strat, is_delete_list, kind, path);
                path.pop();
                Some(Value::Array(m?))
            }
            (Some(o), p) if std::mem::discriminant(o) == std::mem::discriminant(p) => {
                remove_directives(patch_v.clone())
            }
            // Absent, or of another type: the patch value, without nulls.
            _ if is_delete_list => continue,
            _ => {
                let mut v = patch_v.clone();
                discard_nulls(&mut v);
                remove_directives(v)
            }
        };
        match merged {
            Some(v) => {
                original.insert(key, v);
            }
            None => {
                original.remove(&key);
            }
        }
    }
    Ok(original)
}

/// `applyRetainKeysDirective`: every key the patch sets must be listed, and
/// the original keeps only the listed keys.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let Some(retain) = patch.remove("$retainKeys") else {
        return Ok(());
    };
    let bad = || ApiError::bad_request("invalid patch format of retainKeys");
    let list = retain.as_array().ok_or_else(bad)?;
    let listed = |k: &str| list.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with("$deleteFromPrimitiveList")
            || k.starts_with("$setElementOrder")
        {
            continue;
        }
        if !listed(k) {
            return Err(bad());
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// `mergePatchIntoOriginal`: merges each list that has a
/// `$setElementOrder/<list>` directive and orders it by the directive.
fn merge_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    kind: &str,
    path: &mut Vec<String>,
) -> Result<(), ApiError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with("$setElementOrder"))
        .cloned()
        .collect();
    for directive in keys {
        let order = patch.remove(&directive).unwrap_or(Value::Null);
        let Some(list_key) = directive.strip_prefix("$setElementOrder/") else {
            return Err(ApiError::bad_request(
                "invalid patch format of setElementOrder list",
            ));
        };
        let list_key = list_key.to_string();
        let Value::Array(order) = order else {
            return Err(smp_error(format!(
                "expected a list for {directive}, but got {}",
                json_type(&order)
            )));
        };
        let as_list = |v: Option<&Value>| -> Result<Option<Vec<Value>>, ApiError> {
            match v {
                None => Ok(None),
                Some(Value::Array(a)) => Ok(Some(a.clone())),
                Some(other) => Err(smp_error(format!(
                    "expected a list for {list_key}, but got {}",
                    json_type(other)
                ))),
            }
        };
        let original_list = as_list(original.get(&list_key))?;
        let patch_list = as_list(patch.get(&list_key))?;
        path.push(list_key.clone());
        let strat = strategy(path, kind);
        let key = strat.key();
        validate_set_order(patch_list.as_deref().unwrap_or_default(), &order, key)?;
        let merged = match (&original_list, &patch_list) {
            (Some(o), None) => o.clone(),
            (None, Some(p)) => p.iter().cloned().filter_map(remove_directives).collect(),
            (Some(o), Some(p)) => {
                merge_slice_handler(o.clone(), p.clone(), strat, false, kind, path)?
            }
            (None, None) => {
                path.pop();
                continue;
            }
        };
        path.pop();
        let is_map = original_list
            .iter()
            .chain(patch_list.iter())
            .flatten()
            .any(Value::is_object);
        let (patch_items, server_only) = partition(merged, &order, key, is_map);
        let both = normalize_element_order(
            patch_items,
            server_only,
            &order,
            original_list.as_deref().unwrap_or_default(),
            key,
            is_map,
        )?;
        original.insert(list_key.clone(), Value::Array(both));
        patch.remove(&list_key);
    }
    Ok(())
}

/// `validatePatchWithSetOrderList`: the patch list's items (deletions aside)
/// appear in the order list, in the same relative order.
fn validate_set_order(patch_list: &[Value], order: &[Value], key: &str) -> Result<(), ApiError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = patch_list
        .iter()
        .filter(|v| key.is_empty() || v.get("$patch").and_then(Value::as_str) != Some("delete"))
        .collect();
    let (mut pi, mut si) = (0, 0);
    while pi < non_delete.len() && si < order.len() {
        if non_delete[pi].get("$patch").is_some() {
            pi += 1;
            continue;
        }
        let equal = if key.is_empty() {
            non_delete[pi] == &order[si]
        } else {
            match (non_delete[pi], &order[si]) {
                (Value::Object(l), Value::Object(r)) => {
                    let lv = l.get(key).ok_or_else(|| no_merge_key(l, key))?;
                    let rv = r.get(key).ok_or_else(|| no_merge_key(r, key))?;
                    lv == rv
                }
                _ => false,
            }
        };
        if equal {
            pi += 1;
        }
        si += 1;
    }
    if pi < non_delete.len() && si >= order.len() {
        return Err(smp_error(format!(
            "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
            go_fmt(&Value::Array(patch_list.to_vec())),
            go_fmt(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

fn merge_slice_handler(
    original: Vec<Value>,
    patch: Vec<Value>,
    strat: Strategy,
    is_delete_list: bool,
    kind: &str,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, ApiError> {
    if strat.merges() || is_delete_list {
        merge_slice(original, patch, strat.key(), is_delete_list, kind, path)
    } else {
        Ok(patch)
    }
}

/// `mergeSlice`.
fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    is_delete_list: bool,
    kind: &str,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, ApiError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let all = || original.iter().chain(patch.iter());
    if all().any(Value::is_array) {
        return Err(ApiError::new(422, "", "lists of lists are not supported"));
    }
    let is_map = all().any(Value::is_object);
    if is_map && !all().all(Value::is_object) {
        return Err(smp_error(format!(
            "{} has values of more than one type",
            path.join(".")
        )));
    }
    if !is_map {
        if is_delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.contains(v))
                .collect());
        }
        let mut merged: Vec<Value> = vec![];
        for v in original.iter().chain(patch.iter()) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (patch_items, server_only) = partition(merged, &patch, key, false);
        return normalize_element_order(patch_items, server_only, &patch, &original, key, false);
    }
    if key.is_empty() {
        return Err(smp_error(format!(
            "cannot merge lists without merge key for {}",
            path.join(".")
        )));
    }
    let (original, patch) = merge_slice_with_special_elements(original, patch, key)?;
    let mut merged = original.clone();
    for item in &patch {
        let Value::Object(p) = item else { continue };
        let value = p.get(key).ok_or_else(|| no_merge_key(p, key))?;
        match merged.iter().position(|o| o.get(key) == Some(value)) {
            Some(i) => {
                let o = merged[i].as_object().cloned().unwrap_or_default();
                merged[i] = Value::Object(merge_map(o, p.clone(), kind, path)?);
            }
            None => merged.push(item.clone()),
        }
    }
    let (patch_items, server_only) = partition(merged, &patch, key, true);
    normalize_element_order(patch_items, server_only, &patch, &original, key, true)
}

/// `mergeSliceWithSpecialElements`: applies `$patch: delete` items to the
/// original and `$patch: replace` to the whole list.
fn merge_slice_with_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let mut plain = vec![];
    let mut replace = false;
    for item in patch {
        let Value::Object(m) = &item else {
            plain.push(item);
            continue;
        };
        match m.get("$patch") {
            None => plain.push(item),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let value = m.get(key).ok_or_else(|| no_merge_key(m, key))?;
                    original.retain(|o| o.get(key) != Some(value));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(smp_error(
                        "merging lists cannot yet be specified in the patch".into(),
                    ));
                }
                _ => {
                    return Err(smp_error(format!(
                        "unknown patch type: {} in map: {}",
                        go_fmt(d),
                        go_fmt(&item)
                    )));
                }
            },
        }
    }
    if replace {
        return Ok((plain, vec![]));
    }
    Ok((original, plain))
}

/// The value an item is ordered and matched by: its merge key, or itself.
fn order_value<'v>(item: &'v Value, key: &str, is_map: bool) -> Option<&'v Value> {
    if is_map {
        item.get(key)
    } else {
        Some(item)
    }
}

/// `index`: the position of the first item of `list` with `item`'s value.
fn index_of(list: &[Value], item: &Value, key: &str, is_map: bool) -> Option<usize> {
    let wanted = order_value(item, key, is_map);
    list.iter()
        .position(|v| order_value(v, key, is_map) == wanted)
}

/// `partitionMapsByPresentInList` / `partitionPrimitivesByPresentInList`.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: &str,
    is_map: bool,
) -> (Vec<Value>, Vec<Value>) {
    merged
        .into_iter()
        .partition(|v| index_of(by, v, key, is_map).is_some())
}

/// `normalizeSliceOrder`: a stable sort by position in `order` (Go's
/// insertion sort, whose comparator calls an item missing from `order`
/// smaller), deletions last.
fn normalize_slice_order(
    mut items: Vec<Value>,
    order: &[Value],
    key: &str,
    is_map: bool,
) -> Result<Vec<Value>, ApiError> {
    let mut deletions = vec![];
    if is_map {
        for v in items.iter().chain(order.iter()) {
            if let Value::Object(m) = v {
                if !m.contains_key(key) {
                    return Err(no_merge_key(m, key));
                }
            }
        }
        let (keep, delete): (Vec<Value>, Vec<Value>) = items
            .into_iter()
            .partition(|v| v.get("$patch").and_then(Value::as_str) != Some("delete"));
        items = keep;
        deletions = delete;
    }
    let less = |a: &Value, b: &Value| match (
        index_of(order, a, key, is_map),
        index_of(order, b, key, is_map),
    ) {
        (Some(i), Some(j)) => i < j,
        _ => true,
    };
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 && less(&items[j], &items[j - 1]) {
            items.swap(j, j - 1);
            j -= 1;
        }
    }
    items.extend(deletions);
    Ok(items)
}

/// `normalizeElementOrder`: the patch's items in the patch order, the
/// server's own in the server order, then `mergeSortedSlice` interleaves
/// them: a server item goes first only when both are in the live list and
/// it came first there, so items new to the list come before the rest.
fn normalize_element_order(
    patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: &str,
    is_map: bool,
) -> Result<Vec<Value>, ApiError> {
    let right = normalize_slice_order(patch, patch_order, key, is_map)?;
    let left = normalize_slice_order(server_only, server_order, key, is_map)?;
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut i, mut j) = (0, 0);
    while i < left.len() || j < right.len() {
        let take_left = if i >= left.len() {
            false
        } else if j >= right.len() {
            true
        } else {
            matches!(
                (
                    index_of(server_order, &left[i], key, is_map),
                    index_of(server_order, &right[j], key, is_map),
                ),
                (Some(l), Some(r)) if l < r
            )
        };
        if take_left {
            out.push(left[i].clone());
            i += 1;
        } else {
            out.push(right[j].clone());
            j += 1;
        }
    }
    Ok(out)
}

/// `removeDirectives`: `None` for a map carrying `$patch`, else the value
/// with such maps removed from it.
fn remove_directives(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key("$patch") {
                return None;
            }
            Some(Value::Object(
                m.into_iter()
                    .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                    .collect(),
            ))
        }
        Value::Array(a) => Some(Value::Array(
            a.into_iter().filter_map(remove_directives).collect(),
        )),
        other => Some(other),
    }
}

/// `discardNullValuesFromPatch`.
fn discard_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(discard_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

/// Drops the `$`-keys decoding into a typed object would drop.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// The 422 kube-apiserver returns for any JSON patch application failure.
fn json_patch_failed() -> ApiError {
    let mut e = ApiError::new(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
    );
    e.details = Some(Value::Object(Map::new()));
    e
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, ApiError> {
    if path.is_empty() {
        return Ok(vec![]);
    }
    let rest = path.strip_prefix('/').ok_or_else(json_patch_failed)?;
    Ok(rest.split('/').map(unescape).collect())
}

fn container_mut<'v>(doc: &'v mut Value, parents: &[String]) -> Option<&'v mut Value> {
    let mut node = doc;
    for t in parents {
        node = match node {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => {
                let i: usize = t.parse().ok()?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(node)
}

fn get<'v>(doc: &'v Value, tokens: &[String]) -> Option<&'v Value> {
    let mut node = doc;
    for t in tokens {
        node = match node {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), ApiError> {
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match container_mut(doc, parents).ok_or_else(json_patch_failed)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>().map_err(|_| json_patch_failed())?
            };
            if idx > a.len() {
                return Err(json_patch_failed());
            }
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(json_patch_failed()),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, ApiError> {
    let (last, parents) = tokens.split_last().ok_or_else(json_patch_failed)?;
    match container_mut(doc, parents).ok_or_else(json_patch_failed)? {
        Value::Object(m) => m.remove(last).ok_or_else(json_patch_failed),
        Value::Array(a) => {
            let idx: usize = last.parse().map_err(|_| json_patch_failed())?;
            if idx >= a.len() {
                return Err(json_patch_failed());
            }
            Ok(a.remove(idx))
        }
        _ => Err(json_patch_failed()),
    }
}

fn replace(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), ApiError> {
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match container_mut(doc, parents).ok_or_else(json_patch_failed)? {
        Value::Object(m) => {
            // evanphx/json-patch v4 (kube-apiserver's): replacing a missing
            // key of an object adds it.
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let idx: usize = last.parse().map_err(|_| json_patch_failed())?;
            let slot = a.get_mut(idx).ok_or_else(json_patch_failed)?;
            *slot = value;
            Ok(())
        }
        _ => Err(json_patch_failed()),
    }
}

fn test(doc: &Value, tokens: &[String], value: &Value) -> Result<(), ApiError> {
    let Some((last, parents)) = tokens.split_last() else {
        return if doc == value {
            Ok(())
        } else {
            Err(json_patch_failed())
        };
    };
    let parent = get(doc, parents).ok_or_else(json_patch_failed)?;
    let actual = match parent {
        Value::Object(m) => m.get(last),
        Value::Array(a) => a.get(last.parse::<usize>().map_err(|_| json_patch_failed())?),
        _ => return Err(json_patch_failed()),
    };
    match actual {
        // evanphx/json-patch v4: a missing key equals a `null` test value.
        None if value.is_null() => Ok(()),
        Some(v) if v == value => Ok(()),
        _ => Err(json_patch_failed()),
    }
}

/// Decodes and applies an RFC 6902 JSON patch (400 if undecodable, 422 if it fails).
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    let ops = patch.as_array().ok_or_else(|| {
        ApiError::bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    })?;
    if ops.len() > 10000 {
        return Err(ApiError::new(
            422,
            "RequestEntityTooLarge",
            format!(
                "The allowed maximum operations in a JSON patch is 10000, got {}",
                ops.len()
            ),
        ));
    }
    let mut out = doc.clone();
    for op in ops {
        let kind = op["op"].as_str().unwrap_or_default();
        let path = split_pointer(op["path"].as_str().ok_or_else(json_patch_failed)?)?;
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match kind {
            "add" => add(&mut out, &path, value)?,
            "remove" => {
                remove(&mut out, &path)?;
            }
            "replace" => replace(&mut out, &path, value)?,
            "test" => test(&out, &path, &value)?,
            "move" | "copy" => {
                let from = split_pointer(op["from"].as_str().ok_or_else(json_patch_failed)?)?;
                let v = if kind == "move" {
                    remove(&mut out, &from)?
                } else {
                    get(&out, &from).cloned().ok_or_else(json_patch_failed)?
                };
                add(&mut out, &path, v)?;
            }
            _ => return Err(json_patch_failed()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_nulls_and_replaces_lists() {
        let out = merge_patch(
            &json!({"a": {"b": 1, "c": 2}, "l": [1, 2]}),
            &json!({"a": {"b": null}, "l": [3]}),
        );
        assert_eq!(out, json!({"a": {"c": 2}, "l": [3]}));
    }

    #[test]
    fn json_patch_test_of_missing_key_equals_null_but_missing_parent_fails() {
        let doc = json!({"metadata": {"name": "x"}});
        let ok = json!([{"op": "test", "path": "/metadata/finalizers", "value": null}, {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]);
        assert_eq!(
            json_patch(&doc, &ok).unwrap()["metadata"]["finalizers"],
            json!(["f"])
        );
        let bad = json!([{"op": "test", "path": "/spec/x", "value": null}]);
        assert_eq!(json_patch(&doc, &bad).unwrap_err().code, 422);
        let not_null = json!([{"op": "test", "path": "/metadata/name", "value": null}]);
        assert_eq!(json_patch(&doc, &not_null).unwrap_err().code, 422);
        assert_eq!(
            json_patch(&doc, &json!({"op": "add"})).unwrap_err().code,
            400
        );
    }

    #[test]
    fn json_patch_array_ops_follow_rfc6902() {
        let doc = json!({"l": ["a", "b"]});
        let p = json!([{"op": "add", "path": "/l/-", "value": "c"}, {"op": "remove", "path": "/l/0"}, {"op": "move", "from": "/l/0", "path": "/m"}]);
        assert_eq!(json_patch(&doc, &p).unwrap(), json!({"l": ["c"], "m": "b"}));
        let out_of_range = json!([{"op": "add", "path": "/l/5", "value": "x"}]);
        assert!(json_patch(&doc, &out_of_range).is_err());
    }

    #[test]
    fn strategic_merge_patch_merges_finalizers_and_owner_references() {
        let doc = json!({"metadata": {"finalizers": ["a"], "ownerReferences": [{"uid": "1", "name": "x"}]}, "data": {"k": "v"}});
        let p = json!({"metadata": {"finalizers": ["b"], "ownerReferences": [{"uid": "1", "name": "y"}, {"uid": "2", "name": "z"}]}, "data": {"k": null, "n": "m"}});
        let out = strategic_merge_patch(&doc, &p, "ConfigMap").unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "a"]));
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "y"}, {"uid": "2", "name": "z"}])
        );
        assert_eq!(out["data"], json!({"n": "m"}));
        let del = json!({"metadata": {"ownerReferences": [{"uid": "1", "$patch": "delete"}]}});
        let out = strategic_merge_patch(&out, &del, "ConfigMap").unwrap();
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "2", "name": "z"}])
        );
        let replace = json!({"data": {"$patch": "replace", "only": "this"}});
        assert_eq!(
            strategic_merge_patch(&out, &replace, "ConfigMap").unwrap()["data"],
            json!({"only": "this"})
        );
    }

    /// Orders kube-apiserver 1.37 produced for the same patches (finalizers
    /// `[one, two, three]` patched in turn): new items first, live items in
    /// their live order where both are live, `$setElementOrder` wins, and a
    /// deletion list applies before the merge.
    #[test]
    fn strategic_merge_patch_orders_lists_as_kube_apiserver() {
        let fin = |v: &Value| v["metadata"]["finalizers"].clone();
        let mut doc = json!({"metadata": {"finalizers": ["one", "two", "three"]}});
        let steps = [
            (
                json!({"finalizers": ["four", "two", "zero"]}),
                json!(["four", "one", "two", "zero", "three"]),
            ),
            (
                json!({"finalizers": ["three", "one"]}),
                json!(["four", "two", "zero", "three", "one"]),
            ),
            (
                json!({"$setElementOrder/finalizers": ["zero", "three", "four"], "finalizers": ["zero"]}),
                json!(["two", "zero", "three", "four", "one"]),
            ),
            (
                json!({"$deleteFromPrimitiveList/finalizers": ["zero"], "finalizers": ["new"]}),
                json!(["new", "two", "three", "four", "one"]),
            ),
        ];
        for (metadata, want) in steps {
            doc = strategic_merge_patch(&doc, &json!({"metadata": metadata}), "ConfigMap").unwrap();
            assert_eq!(fin(&doc), want);
        }
        let bad =
            json!({"metadata": {"$setElementOrder/finalizers": ["x"], "finalizers": ["one"]}});
        let e = strategic_merge_patch(&doc, &bad, "ConfigMap").unwrap_err();
        assert_eq!(e.code, 500);
        assert_eq!(
            e.message,
            "The order in patch list:\n[one]\n doesn't match $setElementOrder list:\n[x]\n"
        );
    }

    #[test]
    fn strategic_merge_patch_replace_directive_keeps_only_the_patch() {
        let out = json!({"data": {"k": "v"}});
        let replace = json!({"data": {"$patch": "replace", "only": "this"}});
        assert_eq!(
            strategic_merge_patch(&out, &replace, "ConfigMap").unwrap()["data"],
            json!({"only": "this"})
        );
    }
}
