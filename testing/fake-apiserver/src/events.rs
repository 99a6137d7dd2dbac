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

/// The fields a core/v1 Event always shows (no `omitempty` in its Go type)
/// and their zero values: its value structs, times and reporter strings.
/// A field and its zero value.
type Zero = (&'static str, fn() -> Value);

const CORE_ALWAYS: &[Zero] = &[
    ("involvedObject", || json!({})),
    ("source", || json!({})),
    ("firstTimestamp", || Value::Null),
    ("lastTimestamp", || Value::Null),
    ("eventTime", || Value::Null),
    ("reportingComponent", || json!("")),
    ("reportingInstance", || json!("")),
];

/// The fields an events.k8s.io/v1 Event always shows.
const V1_ALWAYS: &[Zero] = &[
    ("eventTime", || Value::Null),
    ("regarding", || json!({})),
    ("deprecatedSource", || json!({})),
    ("deprecatedFirstTimestamp", || Value::Null),
    ("deprecatedLastTimestamp", || Value::Null),
];

/// A stored core/v1 Event as kube-apiserver encodes it: the fields its Go
/// type always has are there, at their zero values when unset.
pub fn core_view(core: &Value) -> Value {
    let mut out = core.clone();
    if let Some(m) = out.as_object_mut() {
        for (k, zero) in CORE_ALWAYS {
            if m.get(*k).is_none() {
                m.insert((*k).into(), zero());
            }
        }
    }
    out
}

/// The fields of a core/v1 Event its Go type leaves out at their zero
/// values (`omitempty`).
const CORE_OMITEMPTY: &[&str] = &[
    "reason", "message", "type", "action", "count", "series", "related",
];

/// A core/v1 Event as decoded into its Go type and stored: the fields left
/// out at their zero values are gone, and so are the always-shown ones at
/// theirs ([`core_view`] shows those again).
pub fn without_zeros(core: &Value) -> Value {
    let mut out = core.clone();
    if let Some(m) = out.as_object_mut() {
        for (k, zero) in CORE_ALWAYS {
            if m.get(*k).is_some_and(|v| *v == zero() || v.is_null()) {
                m.remove(*k);
            }
        }
        for k in CORE_OMITEMPTY {
            if m.get(*k).is_some_and(is_empty) {
                m.remove(*k);
            }
        }
    }
    out
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
    for (k, zero) in V1_ALWAYS {
        if out.get(*k).is_none() {
            out.insert((*k).into(), zero());
        }
    }
    Value::Object(out)
}

/// The objects referenced by an Event, which its type marks atomic: owned,
/// compared and merged as one value (`+structType=atomic`).
pub fn is_atomic_field(events_v1: bool, path: &[String]) -> bool {
    match path {
        [f] => match f.as_str() {
            "related" => true,
            "involvedObject" => !events_v1,
            "regarding" => events_v1,
            _ => false,
        },
        _ => false,
    }
}

/// The MicroTime fields of an Event as an API shows it.
pub const MICRO_TIMES: &[&[&str]] = &[&["eventTime"], &["series", "lastObservedTime"]];

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
