//! Decoding of the protobuf request bodies kubectl's typed clients send
//! (`application/vnd.kubernetes.protobuf`: `k8s\0` + `runtime.Unknown`).

use base64::Engine;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{json, Map, Value};

use crate::errors::ApiError;

/// The protobuf media type.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("unable to decode protobuf body: {e}"))
}

fn time(t: &Option<meta::Time>) -> Option<Value> {
    let secs = t.as_ref()?.seconds?;
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| json!(d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
}

fn string_map(m: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

fn object_meta(m: &meta::ObjectMeta) -> Value {
    let mut o = Map::new();
    let mut put = |k: &str, v: Option<Value>| match v {
        Some(Value::String(s)) if s.is_empty() => {}
        Some(v) => {
            o.insert(k.to_string(), v);
        }
        None => {}
    };
    put("name", m.name.clone().map(Value::from));
    put("generateName", m.generate_name.clone().map(Value::from));
    put("namespace", m.namespace.clone().map(Value::from));
    put("uid", m.uid.clone().map(Value::from));
    put(
        "resourceVersion",
        m.resource_version.clone().map(Value::from),
    );
    put("generation", m.generation.map(Value::from));
    put("creationTimestamp", time(&m.creation_timestamp));
    put("deletionTimestamp", time(&m.deletion_timestamp));
    put(
        "deletionGracePeriodSeconds",
        m.deletion_grace_period_seconds.map(Value::from),
    );
    put(
        "labels",
        (!m.labels.is_empty()).then(|| string_map(&m.labels)),
    );
    put(
        "annotations",
        (!m.annotations.is_empty()).then(|| string_map(&m.annotations)),
    );
    put(
        "ownerReferences",
        (!m.owner_references.is_empty()).then(|| {
            Value::Array(
                m.owner_references
                    .iter()
                    .map(|r| {
                        let mut v = json!({
                            "apiVersion": r.api_version.clone().unwrap_or_default(),
                            "kind": r.kind.clone().unwrap_or_default(),
                            "name": r.name.clone().unwrap_or_default(),
                            "uid": r.uid.clone().unwrap_or_default(),
                        });
                        if let Some(c) = r.controller {
                            v["controller"] = json!(c);
                        }
                        if let Some(b) = r.block_owner_deletion {
                            v["blockOwnerDeletion"] = json!(b);
                        }
                        v
                    })
                    .collect(),
            )
        }),
    );
    put(
        "finalizers",
        (!m.finalizers.is_empty()).then(|| json!(m.finalizers)),
    );
    Value::Object(o)
}

fn b64(bytes: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn secret(raw: &[u8]) -> Result<Value, ApiError> {
    let s = core::Secret::decode(raw).map_err(bad)?;
    let mut v = json!({"apiVersion": "v1", "kind": "Secret", "metadata": s.metadata.as_ref().map(object_meta).unwrap_or_else(|| json!({}))});
    if !s.data.is_empty() {
        v["data"] = Value::Object(s.data.iter().map(|(k, b)| (k.clone(), b64(b))).collect());
    }
    if !s.string_data.is_empty() {
        v["stringData"] = string_map(&s.string_data);
    }
    if let Some(t) = s.r#type {
        v["type"] = json!(t);
    }
    if let Some(i) = s.immutable {
        v["immutable"] = json!(i);
    }
    Ok(v)
}

fn configmap(raw: &[u8]) -> Result<Value, ApiError> {
    let c = core::ConfigMap::decode(raw).map_err(bad)?;
    let mut v = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": c.metadata.as_ref().map(object_meta).unwrap_or_else(|| json!({}))});
    if !c.data.is_empty() {
        v["data"] = string_map(&c.data);
    }
    if !c.binary_data.is_empty() {
        v["binaryData"] = Value::Object(
            c.binary_data
                .iter()
                .map(|(k, b)| (k.clone(), b64(b)))
                .collect(),
        );
    }
    if let Some(i) = c.immutable {
        v["immutable"] = json!(i);
    }
    Ok(v)
}

fn namespace(raw: &[u8]) -> Result<Value, ApiError> {
    let n = core::Namespace::decode(raw).map_err(bad)?;
    let mut v = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": n.metadata.as_ref().map(object_meta).unwrap_or_else(|| json!({}))});
    if let Some(spec) = &n.spec {
        if !spec.finalizers.is_empty() {
            v["spec"] = json!({"finalizers": spec.finalizers});
        }
    }
    Ok(v)
}

/// Decodes a protobuf body into the JSON form of the object (Secret, ConfigMap, Namespace).
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let payload = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing k8s magic prefix"))?;
    let unknown = Unknown::decode(payload).map_err(bad)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut v = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => secret(&raw)?,
        ("v1", "ConfigMap") => configmap(&raw)?,
        ("v1", "Namespace") => namespace(&raw)?,
        _ => {
            return Err(ApiError::unsupported_media_type(&[
                "application/json",
                "application/yaml",
            ]))
        }
    };
    if v["metadata"].as_object().is_some_and(|m| m.is_empty()) {
        v["metadata"] = json!({});
    }
    Ok(v)
}
