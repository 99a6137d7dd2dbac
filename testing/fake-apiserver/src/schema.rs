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

    /// Whether objects are stored as the unstructured JSON that
    /// structured-merge-diff leaves (a custom resource), explicit nulls
    /// included, rather than converted to a Go type that drops them.
    pub fn stores_nulls(&self) -> bool {
        self.class == Class::Custom
    }

    /// Whether the object at a path of field names is a map whose keys are
    /// data (Go `map[string]…`, `additionalProperties`) rather than a struct
    /// whose keys are named fields.
    pub fn is_map(&self, path: &[String]) -> bool {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match (self.class, p.as_slice()) {
            (_, ["metadata", "labels" | "annotations"]) => true,
            (Class::Secret, ["data" | "stringData"]) => true,
            (Class::ConfigMap, ["data" | "binaryData"]) => true,
            (Class::Workload, _) => crate::apps::is_map(&without_item_steps(&p)),
            (Class::Custom, _) => self.schema.and_then(|s| schema_at(s, &p)).is_some_and(|n| {
                n.get("properties").is_none() && n["additionalProperties"].is_object()
            }),
            _ => false,
        }
    }

    /// Whether the object at a path of field names is an atomic struct
    /// (owned, compared and merged as one value).
    pub fn is_atomic_struct(&self, path: &[String]) -> bool {
        match self.class {
            Class::CoreEvent => crate::events::is_atomic_field(false, path),
            Class::EventsV1Event => crate::events::is_atomic_field(true, path),
            _ => false,
        }
    }

    /// The struct fields of the kind's Go type that are values, not
    /// pointers: kube-apiserver converts the object it compares from Go, so
    /// these are always there (as `{}` when empty), and an Update never
    /// owns them as containers (no `.` in managedFields).
    pub fn value_structs(&self) -> Value {
        match self.class {
            Class::Lease => serde_json::json!({"spec": {}}),
            Class::Namespace => serde_json::json!({"spec": {}, "status": {}}),
            Class::CoreEvent => serde_json::json!({"involvedObject": {}, "source": {}}),
            Class::EventsV1Event => serde_json::json!({"regarding": {}, "deprecatedSource": {}}),
            _ => Value::Object(Map::new()),
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
            // spec.finalizers is atomic (kube-apiserver's managedFields own
            // it as one leaf).
            Class::Namespace => match p.as_slice() {
                ["status", "conditions"] => ListType::Map(vec!["type".into()]),
                _ => ListType::Atomic,
            },
            Class::Crd => match p.as_slice() {
                ["spec", "versions"] => ListType::Map(vec!["name".into()]),
                ["status", "conditions"] => ListType::Map(vec!["type".into()]),
                _ => ListType::Atomic,
            },
            Class::Workload => crate::apps::list_map_keys(&without_item_steps(&p))
                .map(ListType::Map)
                .unwrap_or(ListType::Atomic),
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

/// Whether a value is a null the schema does not allow (`isNonNullableNull`).
fn non_nullable_null(v: &Value, schema: &Value) -> bool {
    v.is_null() && schema.is_object() && schema["nullable"] != Value::Bool(true)
}

/// Applies the schema's `default`s to a value (recursively, KEP-575 semantics:
/// defaults fill missing properties of objects that exist, and replace the
/// nulls of fields that are not nullable).
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    let default_for = |s: &Value, v: &mut Value| {
        if let Some(d) = s.get("default") {
            if non_nullable_null(v, s) {
                *v = d.clone();
            }
        }
    };
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
                        default_for(s, v);
                        apply_defaults(s, v);
                    }
                }
            } else if schema["additionalProperties"].is_object() {
                for v in map.values_mut() {
                    default_for(&schema["additionalProperties"], v);
                    apply_defaults(&schema["additionalProperties"], v);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for v in items {
                default_for(&schema["items"], v);
                apply_defaults(&schema["items"], v);
            }
        }
        _ => {}
    }
}

/// The schema coercer's `PruneNonNullableNullsWithoutDefaults`: drops the
/// nulls of fields that are neither nullable nor defaulted (those with a
/// default are defaulted later).
pub fn prune_nulls_without_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let field = |k: &str| {
                schema["properties"]
                    .get(k)
                    .or_else(|| Some(&schema["additionalProperties"]).filter(|a| a.is_object()))
            };
            map.retain(|k, v| {
                !field(k).is_some_and(|s| non_nullable_null(v, s) && s.get("default").is_none())
            });
            for (k, v) in map.iter_mut() {
                if let Some(s) = field(k) {
                    prune_nulls_without_defaults(s, v);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for v in items {
                prune_nulls_without_defaults(&schema["items"], v);
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

/// What structured-merge-diff refuses when it types an apply configuration
/// against a structural schema (`ObjectToTyped`): a field the schema does
/// not declare, and a value of the wrong shape (a string for a boolean, a
/// scalar for a map or list). Nulls are always accepted. Each entry is
/// `.path: why`.
pub fn typed_errors(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null()
        || (schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
            && schema["properties"].is_null())
    {
        return;
    }
    let t = schema["type"].as_str().unwrap_or_default();
    let int_or_string = schema["x-kubernetes-int-or-string"] == Value::Bool(true);
    match (t, value) {
        ("object", Value::Object(map)) | ("", Value::Object(map))
            if t == "object" || !schema["properties"].is_null() =>
        {
            for (k, v) in map {
                let child = format!("{path}.{k}");
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(s) = schema["properties"].get(k) {
                    typed_errors(s, v, &child, out);
                } else if schema["additionalProperties"].is_object() {
                    typed_errors(&schema["additionalProperties"], v, &child, out);
                } else if schema["x-kubernetes-preserve-unknown-fields"] != Value::Bool(true) {
                    out.push(format!("{child}: field not declared in schema"));
                }
            }
        }
        ("object", v) => out.push(format!("{path}: expected map, got {v}")),
        ("array", Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                typed_errors(&schema["items"], v, &format!("{path}[{i}]"), out);
            }
        }
        ("array", v) => out.push(format!("{path}: expected list, got {v}")),
        (_, v) if int_or_string && (v.is_string() || v.is_number()) => {}
        ("string", v) if !v.is_string() => out.push(format!("{path}: expected string, got {v}")),
        ("boolean", v) if !v.is_boolean() => out.push(format!(
            "{path}: expected boolean, got &{{{}}}",
            v.as_str().map_or(v.to_string(), str::to_string)
        )),
        ("integer" | "number", v) if !v.is_number() => out.push(format!(
            "{path}: expected numeric (int or float), got {}",
            type_name(v)
        )),
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

/// Validates a value against a structural schema the way apiextensions-apiserver
/// does (kube-openapi's `validate` package, converted to field errors by
/// `kubeOpenAPIResultToFieldErrors`): types, string lengths, `pattern`, the
/// formats kube-apiserver checks, numeric bounds, `multipleOf`, item and
/// property counts, `enum` and `required` (422 causes).
///
/// Validators run in kube-openapi's order: type, string, format, number,
/// array, enum, object. A string reports only its first failure (maxLength,
/// minLength, pattern); an object that fails min/maxProperties is not looked
/// into further.
pub fn validate(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    if value.is_null() && schema["nullable"] == Value::Bool(true) {
        return;
    }
    if let Some(t) = schema["type"].as_str() {
        if !type_ok(t, value) && schema["x-kubernetes-int-or-string"] != Value::Bool(true) {
            // A kept format on a non-string, non-array value is reported as a
            // format mismatch with the value's inferred Go format.
            let (expected, actual) = match checked_format(schema) {
                Some(f) if !value.is_string() && !value.is_array() && !value.is_null() => {
                    (f.to_string(), inferred_format(value))
                }
                _ => (t.to_string(), type_name(value)),
            };
            causes.push(Cause {
                reason: "FieldValueTypeInvalid".into(),
                message: format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
                ),
                field: path.to_string(),
            });
            return;
        }
    }
    match value {
        Value::String(s) => {
            validate_string(schema, s, path, causes);
            validate_format(schema, s, path, causes);
        }
        Value::Number(_) => validate_number(schema, value, path, causes),
        Value::Array(items) => {
            if schema["items"].is_object() {
                for (i, v) in items.iter().enumerate() {
                    validate(&schema["items"], v, &format!("{path}[{i}]"), causes);
                }
            }
            causes.extend(count_violations(
                schema,
                "Items",
                "items",
                items.len(),
                path,
            ));
        }
        _ => {}
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
    if let Value::Object(map) = value {
        // The first violation ends the object's validation, as in kube-openapi.
        let counts = count_violations(schema, "Properties", "properties", map.len(), path);
        if let Some(first) = counts.into_iter().next() {
            causes.push(first);
            return;
        }
        for (k, v) in map {
            let child = child_path(path, k);
            if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = schema["properties"].get(k) {
                validate(s, v, &child, causes);
            } else if schema["additionalProperties"].is_object() {
                validate(&schema["additionalProperties"], v, &child, causes);
            }
        }
        for r in schema["required"].as_array().into_iter().flatten() {
            if let Some(r) = r.as_str() {
                if !map.contains_key(r) {
                    causes.push(Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value".into(),
                        field: child_path(path, r),
                    });
                }
            }
        }
    }
}

/// The path of field `key` of the object at `path`.
fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `min<Kind>` / `max<Kind>` (Items or Properties) against a count of `n`
/// `noun`: the violations, min first.
fn count_violations(schema: &Value, kind: &str, noun: &str, n: usize, path: &str) -> Vec<Cause> {
    let n = n as u64;
    let mut found = Vec::new();
    if let Some(min) = schema[format!("min{kind}")].as_u64().filter(|&min| n < min) {
        found.push(invalid(
            path,
            &n.to_string(),
            format!("{path} in body should have at least {min} {noun}"),
        ));
    }
    if let Some(max) = schema[format!("max{kind}")].as_u64().filter(|&max| n > max) {
        found.push(too_many(path, n, max));
    }
    found
}

/// `field.Invalid(path, value, detail)`: `Invalid value: <value>: <detail>`.
fn invalid(path: &str, shown_value: &str, detail: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown_value}: {detail}"),
        field: path.to_string(),
    }
}

/// `field.TooMany(path, actual, max)` (maxItems and maxProperties), 1.32 wording.
fn too_many(path: &str, actual: u64, max: u64) -> Cause {
    let items = if max == 1 { "item" } else { "items" };
    Cause {
        reason: "FieldValueTooMany".into(),
        message: format!("Too many: {actual}: must have at most {max} {items}"),
        field: path.to_string(),
    }
}

/// maxLength, minLength and pattern; only the first failure is reported.
fn validate_string(schema: &Value, s: &str, path: &str, causes: &mut Vec<Cause>) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema["maxLength"].as_u64() {
        if len > max {
            // field.TooLong (1.32): the value is omitted from the message.
            let unit = if max == 1 { "byte" } else { "bytes" };
            causes.push(Cause {
                reason: "FieldValueTooLong".into(),
                message: format!("Too long: may not be more than {max} {unit}"),
                field: path.to_string(),
            });
            return;
        }
    }
    if let Some(min) = schema["minLength"].as_u64() {
        if len < min {
            causes.push(invalid(
                path,
                &go_quote(s),
                format!("{path} in body should be at least {min} chars long"),
            ));
            return;
        }
    }
    if let Some(p) = schema["pattern"].as_str() {
        if pattern_matches(p, s) == Some(false) {
            causes.push(invalid(
                path,
                &go_quote(s),
                format!("{path} in body should match '{p}'"),
            ));
        }
    }
}

/// The string formats kube-apiserver 1.30–1.32 keeps in CRD schemas
/// (apiextensions-apiserver `supportedFormats`; dashes are ignored, so
/// `date-time` is `datetime`). Other formats, and `int32`/`int64`/`float`/
/// `double`, are stripped and never checked.
const SUPPORTED_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
];

/// The schema's format if kube-apiserver keeps it.
fn checked_format(schema: &Value) -> Option<&str> {
    let f = schema["format"].as_str()?;
    SUPPORTED_FORMATS
        .contains(&f.replace('-', "").as_str())
        .then_some(f)
}

/// The Go format kube-openapi infers for a decoded JSON value.
fn inferred_format(v: &Value) -> &'static str {
    match v {
        Value::Number(n) if n.is_i64() => "int64",
        Value::Number(n) if n.is_u64() => "uint64",
        Value::Number(_) => "float64",
        _ => "",
    }
}

fn validate_format(schema: &Value, s: &str, path: &str, causes: &mut Vec<Cause>) {
    let Some(f) = checked_format(schema) else {
        return;
    };
    if format_valid(&f.replace('-', ""), s) == Some(false) {
        let q = go_quote(s);
        causes.push(Cause {
            reason: "FieldValueTypeInvalid".into(),
            message: format!("Invalid value: {q}: {path} in body must be of type {f}: {q}"),
            field: path.to_string(),
        });
    }
}

/// Whether a string is valid for a (normalized) format; None for the
/// formats the fake does not check (uri, email, mac, isbn*, creditcard, ssn,
/// rgbcolor, bsonobjectid, duration).
fn format_valid(format: &str, s: &str) -> Option<bool> {
    const UUID: &str = r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$";
    const UUID3: &str = r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$";
    const UUID4: &str =
        r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$";
    const UUID5: &str =
        r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$";
    const BASE64: &str =
        r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$";
    const HEXCOLOR: &str = r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$";
    const HOSTNAME: &str = r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z0-9\p{S}\p{L}])(-?[a-zA-Z0-9\p{S}\p{L}]){1,62})$";
    match format {
        "datetime" => Some(is_date_time(s)),
        "date" => Some(is_date(s)),
        "uuid" => pattern_matches(UUID, s),
        "uuid3" => pattern_matches(UUID3, s),
        "uuid4" => pattern_matches(UUID4, s),
        "uuid5" => pattern_matches(UUID5, s),
        "ipv4" => Some(s.parse::<std::net::IpAddr>().is_ok() && s.contains('.')),
        "ipv6" => Some(s.parse::<std::net::IpAddr>().is_ok() && s.contains(':')),
        "cidr" => Some(is_cidr(s)),
        "byte" => pattern_matches(BASE64, s),
        "hexcolor" => pattern_matches(HEXCOLOR, s),
        "hostname" => Some(
            pattern_matches(HOSTNAME, s) == Some(true)
                && s.len() <= 255
                && s.split('.').all(|p| p.len() <= 63),
        ),
        "password" => Some(true),
        _ => None,
    }
}

/// Go `time.Parse("2006-01-02", s)`.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    match (num(0..4), num(5..7), num(8..10)) {
        (Some(y), Some(m), Some(d)) => chrono::NaiveDate::from_ymd_opt(y as i32, m, d).is_some(),
        _ => false,
    }
}

/// kube-openapi `strfmt.IsDateTime`: a date, `T` (any case), then
/// `hh:mm:ss[.frac](Z|±hh:mm)`.
fn is_date_time(s: &str) -> bool {
    const TIME: &str = r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$";
    if s.len() < 4 {
        return false;
    }
    let lower = s.to_lowercase();
    let parts: Vec<&str> = lower.split('t').collect();
    if parts.len() < 2 || !is_date(parts[0]) {
        return false;
    }
    let t = parts[1];
    if pattern_matches(TIME, t) != Some(true) {
        return false;
    }
    &t[0..2] <= "23" && &t[3..5] <= "59" && &t[6..8] <= "59"
}

/// Go `net.ParseCIDR`.
fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    if bits.is_empty() || !bits.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u32>().is_ok_and(|b| b <= max)
}

/// multipleOf, minimum/exclusiveMinimum, maximum/exclusiveMaximum (in that
/// order). Integers are compared with the bounds truncated to integers, as
/// kube-openapi does (`MinimumInt(…, int64(min), …)`).
fn validate_number(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    let int = value.as_i64();
    let data = value.as_f64().unwrap_or_default();
    let shown = match int {
        Some(i) => i.to_string(),
        None => go_float(data),
    };
    if let Some(factor) = schema["multipleOf"].as_f64().filter(|f| *f > 0.0) {
        let failed = match int {
            Some(i) => {
                let f = factor as i64;
                (f != 0 && i % f != 0).then(|| f.to_string())
            }
            None => {
                let mult = if factor < 1.0 {
                    1.0 / factor * data
                } else {
                    data / factor
                };
                (!is_json_integer(mult)).then(|| go_float(factor))
            }
        };
        if let Some(f) = failed {
            causes.push(invalid(
                path,
                &shown,
                format!("{path} in body should be a multiple of {f}"),
            ));
        }
    }
    for (key, excl_key, lower) in [
        ("minimum", "exclusiveMinimum", true),
        ("maximum", "exclusiveMaximum", false),
    ] {
        let Some(bound) = schema[key].as_f64() else {
            continue;
        };
        let exclusive = schema[excl_key] == Value::Bool(true);
        let (fails, shown_bound) = match int {
            Some(i) => {
                let b = bound as i64;
                let fails = match (lower, exclusive) {
                    (true, false) => i < b,
                    (true, true) => i <= b,
                    (false, false) => i > b,
                    (false, true) => i >= b,
                };
                (fails, b.to_string())
            }
            None => {
                let fails = match (lower, exclusive) {
                    (true, false) => data < bound,
                    (true, true) => data <= bound,
                    (false, false) => data > bound,
                    (false, true) => data >= bound,
                };
                (fails, go_float(bound))
            }
        };
        if fails {
            let rel = match (lower, exclusive) {
                (true, false) => "greater than or equal to",
                (true, true) => "greater than",
                (false, false) => "less than or equal to",
                (false, true) => "less than",
            };
            causes.push(invalid(
                path,
                &shown,
                format!("{path} in body should be {rel} {shown_bound}"),
            ));
        }
    }
}

/// go-openapi `swag.IsFloat64AJSONInteger`.
fn is_json_integer(f: f64) -> bool {
    const MAX_JSON_FLOAT: f64 = 9_007_199_254_740_991.0; // 1<<53 - 1
    if !f.is_finite() || !(-MAX_JSON_FLOAT..=MAX_JSON_FLOAT).contains(&f) {
        return false;
    }
    let g = f.trunc();
    if f == g {
        return true;
    }
    let diff = (f - g).abs();
    if g == 0.0 {
        return false;
    }
    diff / (f.abs() + g.abs()) < 1e-9
}

/// Whether `s` matches a Go (RE2) regular expression, unanchored; None when
/// the pattern does not compile. Compiled patterns are cached.
fn pattern_matches(pattern: &str, s: &str) -> Option<bool> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let re = cache
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(&ascii_perl_classes(pattern)).ok());
    re.as_ref().map(|re| re.is_match(s))
}

/// Rewrites `\d`, `\s`, `\w` and their negations to the ASCII classes they
/// are in Go's RE2 (the `regex` crate makes them Unicode-aware). Valid inside
/// brackets too: the crate accepts nested classes.
fn ascii_perl_classes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str("[0-9]"),
            Some('D') => out.push_str("[^0-9]"),
            Some('s') => out.push_str(r"[\t\n\f\r ]"),
            Some('S') => out.push_str(r"[^\t\n\f\r ]"),
            Some('w') => out.push_str("[0-9A-Za-z_]"),
            Some('W') => out.push_str("[^0-9A-Za-z_]"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Go's `%q` of a string (`strconv.Quote`).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%v` of a float64: `%g` with the shortest representation, in `%e`
/// form when the exponent is below -4 or at least 6 (`1e+06`, `1.5`).
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if mant.starts_with('-') { "-" } else { "" };
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    if !(-4..6).contains(&exp) {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    } else if exp < 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
    } else {
        let e = exp as usize;
        if digits.len() <= e + 1 {
            format!("{sign}{digits}{}", "0".repeat(e + 1 - digits.len()))
        } else {
            format!("{sign}{}.{}", &digits[..=e], &digits[e + 1..])
        }
    }
}

/// An empty JSON object.
pub fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// A path of field names without its `[]` list-item steps.
fn without_item_steps<'p>(path: &[&'p str]) -> Vec<&'p str> {
    path.iter().copied().filter(|s| *s != "[]").collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        let nbsp = "\u{a0}";
        assert_eq!(pattern_matches(r"^\s*x$", &format!("{nbsp}x")), Some(false));
        assert_eq!(pattern_matches(r"^\s*x$", "\t x"), Some(true));
        assert_eq!(pattern_matches(r"^\S+$", nbsp), Some(true));
        assert_eq!(pattern_matches(r"^\d+$", "\u{661}\u{662}"), Some(false));
        assert_eq!(pattern_matches(r"^\d+$", "12"), Some(true));
        assert_eq!(pattern_matches(r"^\w+$", "é"), Some(false));
        assert_eq!(pattern_matches(r"^[\s,]+$", " ,\n"), Some(true));
        assert_eq!(pattern_matches(r"^[^\d]$", "7"), Some(false));
        assert_eq!(
            pattern_matches(r"^\\s$", r"\s"),
            Some(true),
            "an escaped backslash"
        );
        assert_eq!(pattern_matches(r"^\\s$", " "), Some(false));
    }

    fn run(schema: Value, value: Value) -> Vec<Cause> {
        let mut causes = vec![];
        validate(&schema, &value, "spec.x", &mut causes);
        causes
    }

    fn one(schema: Value, value: Value) -> (String, String) {
        let c = run(schema, value);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].field, "spec.x");
        (c[0].reason.clone(), c[0].message.clone())
    }

    #[test]
    fn go_formatting() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(2.0), "2");
        assert_eq!(go_float(100000.0), "100000");
        assert_eq!(go_float(1000000.0), "1e+06");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(-0.25), "-0.25");
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
    }

    #[test]
    fn string_checks() {
        let s = json!({"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"});
        assert!(run(s.clone(), json!("1h30m")).is_empty());
        assert_eq!(
            one(s, json!("10x")),
            (
                "FieldValueInvalid".into(),
                "Invalid value: \"10x\": spec.x in body should match '^([0-9]+(ms|s|m|h))+$'"
                    .into()
            )
        );
        // Unanchored unless the pattern anchors it.
        assert!(run(
            json!({"type": "string", "pattern": "^arn:"}),
            json!("arn:aws:x")
        )
        .is_empty());
        assert!(run(json!({"type": "string", "pattern": "b"}), json!("abc")).is_empty());
        // Lengths count characters; only the first string failure is reported.
        let s = json!({"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^a"});
        assert!(run(s.clone(), json!("aöü")).is_empty());
        assert_eq!(
            one(s.clone(), json!("zzzz")),
            (
                "FieldValueTooLong".into(),
                "Too long: may not be more than 3 bytes".into()
            )
        );
        assert_eq!(
            one(s.clone(), json!("z")).1,
            "Invalid value: \"z\": spec.x in body should be at least 2 chars long"
        );
        assert_eq!(
            one(s, json!("zz")).1,
            "Invalid value: \"zz\": spec.x in body should match '^a'"
        );
    }

    #[test]
    fn number_checks() {
        let s = json!({"type": "integer", "minimum": 1, "maximum": 10, "multipleOf": 3});
        assert!(run(s.clone(), json!(3)).is_empty());
        assert_eq!(
            one(s.clone(), json!(0)).1,
            "Invalid value: 0: spec.x in body should be greater than or equal to 1"
        );
        let c = run(s, json!(11));
        let msgs: Vec<&str> = c.iter().map(|c| c.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "Invalid value: 11: spec.x in body should be a multiple of 3",
                "Invalid value: 11: spec.x in body should be less than or equal to 10"
            ]
        );
        let s = json!({"type": "number", "minimum": 0.5, "exclusiveMinimum": true,
            "maximum": 2.5, "exclusiveMaximum": true, "multipleOf": 0.1});
        assert!(run(s.clone(), json!(0.7)).is_empty());
        assert_eq!(
            one(s.clone(), json!(0.5)).1,
            "Invalid value: 0.5: spec.x in body should be greater than 0.5"
        );
        assert_eq!(
            one(s.clone(), json!(2.5)).1,
            "Invalid value: 2.5: spec.x in body should be less than 2.5"
        );
        assert_eq!(
            one(s, json!(1.25)).1,
            "Invalid value: 1.25: spec.x in body should be a multiple of 0.1"
        );
        // Integers meet truncated bounds.
        assert!(run(json!({"type": "integer", "minimum": 1.5}), json!(1)).is_empty());
    }

    #[test]
    fn array_and_object_counts() {
        let s = json!({"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string", "maxLength": 1}});
        assert_eq!(
            one(s.clone(), json!([])),
            (
                "FieldValueInvalid".into(),
                "Invalid value: 0: spec.x in body should have at least 1 items".into()
            )
        );
        assert_eq!(
            one(s.clone(), json!(["a", "b", "c"])),
            (
                "FieldValueTooMany".into(),
                "Too many: 3: must have at most 2 items".into()
            )
        );
        let c = run(s, json!(["a", "bb"]));
        assert_eq!(c[0].field, "spec.x[1]");
        assert_eq!(c[0].reason, "FieldValueTooLong");
        let s = json!({"type": "object", "minProperties": 1, "maxProperties": 1,
            "additionalProperties": {"type": "string"}, "required": ["a"]});
        assert_eq!(
            one(s.clone(), json!({})).1,
            "Invalid value: 0: spec.x in body should have at least 1 properties"
        );
        // A count failure stops the object's other checks.
        assert_eq!(
            one(s.clone(), json!({"a": "1", "b": 2})),
            (
                "FieldValueTooMany".into(),
                "Too many: 2: must have at most 1 item".into()
            )
        );
        assert_eq!(run(s, json!({"b": "1"}))[0].field, "spec.x.a");
    }

    #[test]
    fn formats() {
        let dt = json!({"type": "string", "format": "date-time"});
        for ok in ["2024-02-29T10:00:00Z", "2024-01-15t23:59:59.123+01:00"] {
            assert!(run(dt.clone(), json!(ok)).is_empty(), "{ok}");
        }
        for bad in [
            "2024-01-15",
            "2023-02-29T10:00:00Z",
            "2024-01-15T24:00:00Z",
            "now",
        ] {
            assert_eq!(
                one(dt.clone(), json!(bad)),
                (
                    "FieldValueTypeInvalid".into(),
                    format!("Invalid value: \"{bad}\": spec.x in body must be of type date-time: \"{bad}\"")
                ),
            );
        }
        // A non-string value under a kept format reports its Go format.
        assert_eq!(
            one(dt, json!(5)).1,
            "Invalid value: \"int64\": spec.x in body must be of type date-time: \"int64\""
        );
        let f = |format: &str, v: &str| {
            run(json!({"type": "string", "format": format}), json!(v)).is_empty()
        };
        assert!(f("uuid", "0f8fad5b-d9cb-469f-a165-70867728950e") && !f("uuid", "nope"));
        assert!(f("ipv4", "10.0.0.1") && !f("ipv4", "::1") && f("ipv6", "::1"));
        assert!(f("cidr", "10.0.0.0/8") && !f("cidr", "10.0.0.0/33"));
        assert!(f("byte", "aGk=") && !f("byte", "aGk"));
        assert!(f("date", "2024-12-31") && !f("date", "2024-13-01"));
        // Unknown formats and integer formats are not checked.
        assert!(f("k8s-short-name", "Not_A_Name") && f("uri", "::"));
        assert!(run(
            json!({"type": "integer", "format": "int32"}),
            json!(1i64 << 40)
        )
        .is_empty());
        assert_eq!(
            one(json!({"type": "integer", "format": "int32"}), json!("1")).1,
            "Invalid value: \"string\": spec.x in body must be of type integer: \"string\""
        );
    }
}
