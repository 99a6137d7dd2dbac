//! `meta.k8s.io/v1` Table rendering for `kubectl get` (built-in printers and CRD
//! `additionalPrinterColumns`).

use serde_json::{json, Value};

use crate::resources::{Class, Column, ResourceInfo};
use crate::util::{age, human_duration, parse_time};

/// What the row's `object` holds (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// PartialObjectMetadata (the default).
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query value.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn col(name: &str, ty: &str, format: &str, description: &str, priority: i64) -> Column {
    Column {
        name: name.into(),
        type_: ty.into(),
        format: format.into(),
        description: description.into(),
        priority,
        json_path: String::new(),
    }
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The columns of a resource's Table.
pub fn columns(res: &ResourceInfo) -> Vec<Column> {
    let name = col("Name", "string", "name", NAME_DESC, 0);
    let age_col = col("Age", "string", "", AGE_DESC, 0);
    match res.class {
        Class::Namespace => vec![
            name,
            col("Status", "string", "", "The status of the namespace", 0),
            age_col,
        ],
        Class::Secret => vec![
            name,
            col("Type", "string", "", "The type of the secret", 0),
            col(
                "Data",
                "string",
                "",
                "The number of entries in the secret",
                0,
            ),
            age_col,
        ],
        Class::ConfigMap => vec![
            name,
            col(
                "Data",
                "string",
                "",
                "The number of entries in the configmap",
                0,
            ),
            age_col,
        ],
        Class::CoreEvent | Class::EventsV1Event => vec![
            col(
                "Last Seen",
                "string",
                "",
                "Time when last event occurred",
                0,
            ),
            col(
                "Type",
                "string",
                "",
                "Type of this event (Normal, Warning), new types could be added in the future.",
                0,
            ),
            col(
                "Reason",
                "string",
                "",
                "Reason is why the action was taken.",
                0,
            ),
            col("Object", "string", "", "The object this Event is about.", 0),
            col(
                "Subobject",
                "string",
                "",
                "The field of the object this Event is about.",
                1,
            ),
            col(
                "Source",
                "string",
                "",
                "The component reporting this event.",
                1,
            ),
            col(
                "Message",
                "string",
                "",
                "A human-readable description of the status of this operation.",
                0,
            ),
            col(
                "First Seen",
                "string",
                "",
                "The first time this event was observed.",
                1,
            ),
            col(
                "Count",
                "string",
                "",
                "The number of times this event has occurred.",
                1,
            ),
            col("Name", "string", "name", NAME_DESC, 1),
        ],
        Class::Lease => vec![
            name,
            col("Holder", "string", "", "The holder of the lease", 0),
            age_col,
        ],
        Class::Crd => vec![name, col("Created At", "date", "", AGE_DESC, 0)],
        Class::Workload => crate::apps::columns(&res.kind),
        Class::Custom => {
            let mut cols = vec![name];
            if res.columns.is_empty() {
                let mut a = age_col;
                a.type_ = "date".into();
                a.json_path = ".metadata.creationTimestamp".into();
                cols.push(a);
            } else {
                cols.extend(res.columns.iter().cloned());
            }
            cols
        }
        _ => vec![name, age_col],
    }
}

fn count_entries(obj: &Value, fields: &[&str]) -> i64 {
    fields
        .iter()
        .map(|f| obj[*f].as_object().map(|m| m.len()).unwrap_or(0) as i64)
        .sum()
}

/// Evaluates a simple JSONPath (`.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`).
pub fn json_path<'v>(obj: &'v Value, path: &str) -> Option<&'v Value> {
    let p = path.trim().trim_start_matches('{').trim_end_matches('}');
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut node = obj;
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            node = node.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (k, v) = filter.split_once("==")?;
                let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                node = node
                    .as_array()?
                    .iter()
                    .find(|it| it.get(k.trim()).and_then(Value::as_str) == Some(v))?;
            } else {
                node = node.as_array()?.get(inner.parse::<usize>().ok()?)?;
            }
        } else {
            return None;
        }
    }
    Some(node)
}

fn custom_cell(c: &Column, obj: &Value) -> Value {
    let Some(v) = json_path(obj, &c.json_path) else {
        return Value::Null;
    };
    match c.type_.as_str() {
        "integer" | "number" | "boolean" => v.clone(),
        "date" => match v.as_str().and_then(parse_time) {
            Some(t) => json!(human_duration(chrono::Utc::now() - t)),
            None => Value::Null,
        },
        _ => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}

fn event_cells(obj: &Value) -> Vec<Value> {
    let last = obj["lastTimestamp"]
        .as_str()
        .or_else(|| obj["series"]["lastObservedTime"].as_str())
        .or_else(|| obj["eventTime"].as_str());
    let first = obj["firstTimestamp"]
        .as_str()
        .or_else(|| obj["eventTime"].as_str());
    let io = &obj["involvedObject"];
    let object = format!(
        "{}/{}",
        io["kind"].as_str().unwrap_or_default().to_lowercase(),
        io["name"].as_str().unwrap_or_default()
    );
    let source = obj["source"]["component"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| obj["reportingComponent"].as_str())
        .unwrap_or_default();
    let count = obj["series"]["count"]
        .as_i64()
        .or_else(|| obj["count"].as_i64())
        .unwrap_or(1);
    vec![
        json!(age(last)),
        obj["type"].clone(),
        obj["reason"].clone(),
        json!(object),
        json!(io["fieldPath"].as_str().unwrap_or_default()),
        json!(source),
        obj["message"].clone(),
        json!(age(first)),
        json!(count),
        obj["metadata"]["name"].clone(),
    ]
}

/// The cells of one row.
pub fn cells(res: &ResourceInfo, obj: &Value) -> Vec<Value> {
    let name = obj["metadata"]["name"].clone();
    let created = obj["metadata"]["creationTimestamp"].as_str();
    match res.class {
        Class::Namespace => vec![name, obj["status"]["phase"].clone(), json!(age(created))],
        Class::Secret => vec![
            name,
            json!(obj["type"].as_str().unwrap_or("Opaque")),
            json!(count_entries(obj, &["data"])),
            json!(age(created)),
        ],
        Class::ConfigMap => vec![
            name,
            json!(count_entries(obj, &["data", "binaryData"])),
            json!(age(created)),
        ],
        Class::CoreEvent | Class::EventsV1Event => event_cells(obj),
        Class::Lease => vec![
            name,
            json!(obj["spec"]["holderIdentity"].as_str().unwrap_or_default()),
            json!(age(created)),
        ],
        Class::Crd => vec![name, json!(created.unwrap_or_default())],
        Class::Workload => crate::apps::cells(&res.kind, obj),
        Class::Custom => {
            let cols = columns(res);
            let mut out = vec![name];
            for c in cols.iter().skip(1) {
                out.push(custom_cell(c, obj));
            }
            out
        }
        _ => vec![name, json!(age(created))],
    }
}

/// PartialObjectMetadata for an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"].clone()})
}

/// Renders a Table. `headers` = false omits columnDefinitions (watch events after the first).
pub fn table(
    res: &ResourceInfo,
    objects: &[Value],
    rv: &str,
    include: IncludeObject,
    headers: bool,
    event_view: &dyn Fn(&Value) -> Value,
) -> Value {
    let defs: Vec<Value> = if headers {
        columns(res)
            .iter()
            .map(|c| json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}))
            .collect()
    } else {
        vec![]
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            // Events are printed from their core/v1 form.
            let printable = event_view(o);
            let mut row = json!({"cells": cells(res, &printable)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(o),
                IncludeObject::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": defs,
        "rows": rows,
    });
    if !headers {
        t["columnDefinitions"] = Value::Null;
    }
    t
}
