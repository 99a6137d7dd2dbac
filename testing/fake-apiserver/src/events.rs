//! Conversion between the stored (core/v1) form of events and the
//! `events.k8s.io/v1` view, as kube-apiserver converts them.

use serde_json::{json, Map, Value};

const PAIRS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("related", "related"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("source", "deprecatedSource"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("action", "action"),
    ("reason", "reason"),
    ("type", "type"),
];

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0),
        _ => false,
    }
}

/// core/v1 Event → events.k8s.io/v1 Event.
pub fn to_events_v1(core: &Value) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("Event"));
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("metadata".into(), core["metadata"].clone());
    for (c, e) in PAIRS {
        if let Some(v) = core.get(*c) {
            if !is_empty(v) {
                out.insert((*e).into(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// events.k8s.io/v1 Event → core/v1 Event.
pub fn to_core(ev: &Value) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("Event"));
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("metadata".into(), ev["metadata"].clone());
    for (c, e) in PAIRS {
        if let Some(v) = ev.get(*e) {
            if !v.is_null() {
                out.insert((*c).into(), v.clone());
            }
        }
    }
    if !out.contains_key("source") {
        out.insert("source".into(), json!({}));
    }
    Value::Object(out)
}
