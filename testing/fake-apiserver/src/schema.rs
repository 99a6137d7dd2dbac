//! Type information the server needs: list types for field ownership and
//! merging, and CRD structural-schema defaulting, pruning and validation.

use serde_json::{Map, Value};

use crate::errors::Cause;
use crate::resources::{Class, ResourceInfo};

/// How a list is merged and tracked (`x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Set of scalars.
    Set,
    /// Map keyed by these fields.
    Map(Vec<String>),
}

/// Type information for one resource: built-in knowledge or the CRD schema.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo<'a> {
    class: Class,
    schema: Option<&'a Value>,
}

impl<'a> TypeInfo<'a> {
    /// Type information for a resource.
    pub fn new(res: &'a ResourceInfo) -> Self {
        TypeInfo {
            class: res.class,
            schema: res.schema.as_ref(),
        }
    }

    /// The list type at a path of field names (`"[]"` steps into list items).
    pub fn list_type(&self, path: &[String]) -> ListType {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["metadata", "finalizers"] => return ListType::Set,
            ["metadata", "ownerReferences"] => return ListType::Map(vec!["uid".into()]),
            ["metadata", ..] => return ListType::Atomic,
            _ => {}
        }
        match self.class {
            Class::Namespace => match p.as_slice() {
                ["status", "conditions"] => ListType::Map(vec!["type".into()]),
                ["spec", "finalizers"] => ListType::Set,
                _ => ListType::Atomic,
            },
            Class::Crd => match p.as_slice() {
                ["spec", "versions"] => ListType::Map(vec!["name".into()]),
                ["status", "conditions"] => ListType::Map(vec!["type".into()]),
                _ => ListType::Atomic,
            },
            Class::Custom => self
                .schema
                .and_then(|s| schema_at(s, &p))
                .map(|node| match node["x-kubernetes-list-type"].as_str() {
                    Some("set") => ListType::Set,
                    Some("map") => ListType::Map(
                        node["x-kubernetes-list-map-keys"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|k| k.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                    _ => ListType::Atomic,
                })
                .unwrap_or(ListType::Atomic),
            _ => ListType::Atomic,
        }
    }
}

/// The schema node at a path of field names (`"[]"` = list items).
fn schema_at<'s>(schema: &'s Value, path: &[&str]) -> Option<&'s Value> {
    let mut node = schema;
    for seg in path {
        node = if *seg == "[]" {
            node.get("items")?
        } else if let Some(p) = node.get("properties").and_then(|p| p.get(*seg)) {
            p
        } else {
            node.get("additionalProperties").filter(|a| a.is_object())?
        };
    }
    Some(node)
}

/// Applies the schema's `default`s to a value (recursively, KEP-575 semantics:
/// defaults fill missing properties of objects that exist).
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, s) in props {
                    if !map.contains_key(k) {
                        if let Some(d) = s.get("default") {
                            map.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(v) = map.get_mut(k) {
                        apply_defaults(s, v);
                    }
                }
            } else if schema["additionalProperties"].is_object() {
                for v in map.values_mut() {
                    apply_defaults(&schema["additionalProperties"], v);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for v in items {
                apply_defaults(&schema["items"], v);
            }
        }
        _ => {}
    }
}

/// Removes fields the structural schema does not know; returns their paths.
pub fn prune(schema: &Value, value: &mut Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
        && schema["properties"].is_null()
    {
        return;
    }
    match value {
        Value::Object(map) => {
            let embedded = root || schema["x-kubernetes-embedded-resource"] == Value::Bool(true);
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
            let props = schema["properties"].as_object();
            let additional = schema["additionalProperties"].is_object();
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let child_path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(&k)) {
                    if let Some(v) = map.get_mut(&k) {
                        prune(s, v, &child_path, false, unknown);
                    }
                } else if additional {
                    if let Some(v) = map.get_mut(&k) {
                        prune(
                            &schema["additionalProperties"],
                            v,
                            &child_path,
                            false,
                            unknown,
                        );
                    }
                } else if !preserve && (props.is_some() || schema["type"] == "object") {
                    map.remove(&k);
                    unknown.push(child_path);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, v) in items.iter_mut().enumerate() {
                prune(&schema["items"], v, &format!("{path}[{i}]"), false, unknown);
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(expected: &str, v: &Value) -> bool {
    let actual = type_name(v);
    actual == expected || (expected == "number" && actual == "integer")
}

/// Validates types, `required` and `enum` against the schema (422 causes).
pub fn validate(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    if value.is_null() && schema["nullable"] == Value::Bool(true) {
        return;
    }
    if let Some(t) = schema["type"].as_str() {
        if !type_ok(t, value) && schema["x-kubernetes-int-or-string"] != Value::Bool(true) {
            causes.push(Cause {
                reason: "FieldValueTypeInvalid".into(),
                message: format!(
                    "Invalid value: \"{}\": {} in body must be of type {}: \"{}\"",
                    type_name(value),
                    path,
                    t,
                    type_name(value)
                ),
                field: path.to_string(),
            });
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: {}: supported values: {}",
                    value,
                    list.join(", ")
                ),
                field: path.to_string(),
            });
        }
    }
    match value {
        Value::Object(map) => {
            for r in schema["required"].as_array().into_iter().flatten() {
                if let Some(r) = r.as_str() {
                    if !map.contains_key(r) {
                        let p = if path.is_empty() {
                            r.to_string()
                        } else {
                            format!("{path}.{r}")
                        };
                        causes.push(Cause {
                            reason: "FieldValueRequired".into(),
                            message: "Required value".into(),
                            field: p,
                        });
                    }
                }
            }
            for (k, v) in map {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(s) = schema["properties"].get(k) {
                    validate(s, v, &child, causes);
                } else if schema["additionalProperties"].is_object() {
                    validate(&schema["additionalProperties"], v, &child, causes);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, v) in items.iter().enumerate() {
                validate(&schema["items"], v, &format!("{path}[{i}]"), causes);
            }
        }
        _ => {}
    }
}

/// An empty JSON object.
pub fn empty_object() -> Value {
    Value::Object(Map::new())
}
