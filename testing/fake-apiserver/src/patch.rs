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
enum Strategy {
    Replace,
    MergePrimitive,
    MergeByKey(&'static str),
}

fn strategy(path: &[String], kind: &str) -> Strategy {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match (kind, p.as_slice()) {
        (_, ["metadata", "finalizers"]) => Strategy::MergePrimitive,
        (_, ["metadata", "ownerReferences"]) => Strategy::MergeByKey("uid"),
        ("Namespace", ["status", "conditions"]) => Strategy::MergeByKey("type"),
        ("Deployment" | "StatefulSet" | "DaemonSet", p) => crate::apps::merge_key(p)
            .map(Strategy::MergeByKey)
            .unwrap_or(Strategy::Replace),
        _ => Strategy::Replace,
    }
}

/// Strategic merge patch for the built-in kinds served here.
pub fn strategic_merge_patch(target: &Value, patch: &Value, kind: &str) -> Result<Value, ApiError> {
    smp(target, patch, kind, &mut vec![])
}

fn smp(
    target: &Value,
    patch: &Value,
    kind: &str,
    path: &mut Vec<String>,
) -> Result<Value, ApiError> {
    let Value::Object(p) = patch else {
        return Ok(patch.clone());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(Value::Null),
        Some("replace") => {
            let mut r = p.clone();
            r.remove("$patch");
            return Ok(Value::Object(r));
        }
        Some(other) if other != "merge" => {
            return Err(ApiError::bad_request(format!(
                "unknown patch type: {other}"
            )));
        }
        _ => {}
    }
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (out.get_mut(field), v) {
                list.retain(|it| !del.contains(it));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        path.push(k.clone());
        let merged = match (out.get(k), v) {
            (Some(Value::Array(cur)), Value::Array(items)) => {
                merge_list(cur, items, strategy(path, kind), kind, path)?
            }
            (Some(cur), Value::Object(_)) => smp(cur, v, kind, path)?,
            (None, Value::Object(_)) => smp(&Value::Null, v, kind, path)?,
            (_, other) => strip_directives(other),
        };
        path.pop();
        if merged.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), merged);
        }
    }
    Ok(Value::Object(out))
}

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

fn merge_list(
    cur: &[Value],
    items: &[Value],
    strat: Strategy,
    kind: &str,
    path: &mut Vec<String>,
) -> Result<Value, ApiError> {
    match strat {
        Strategy::Replace => Ok(Value::Array(items.iter().map(strip_directives).collect())),
        Strategy::MergePrimitive => {
            let mut out = cur.to_vec();
            for it in items {
                if !out.contains(it) {
                    out.push(it.clone());
                }
            }
            Ok(Value::Array(out))
        }
        Strategy::MergeByKey(key) => {
            let mut out = cur.to_vec();
            for it in items {
                let directive = it.get("$patch").and_then(Value::as_str);
                let pos = out
                    .iter()
                    .position(|o| o.get(key).is_some() && o.get(key) == it.get(key));
                match (pos, directive) {
                    (Some(i), Some("delete")) => {
                        out.remove(i);
                    }
                    (None, Some("delete")) => {}
                    (Some(i), _) => {
                        let m = smp(&out[i], it, kind, path)?;
                        out[i] = m;
                    }
                    (None, _) => out.push(strip_directives(it)),
                }
            }
            Ok(Value::Array(out))
        }
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
            let slot = m.get_mut(last).ok_or_else(json_patch_failed)?;
            *slot = value;
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
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
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
}
