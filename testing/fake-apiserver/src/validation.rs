//! Object validation with kube-apiserver's messages.

use base64::Engine;
use serde_json::Value;

use crate::errors::{ApiError, Cause};
use crate::resources::{Class, ResourceInfo};

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// Maximum total size of a Secret's or ConfigMap's data.
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is an RFC 1123 label of at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_label(s)
}

/// Whether `s` is an RFC 1123 subdomain of at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

/// Name and metadata checks common to all kinds.
pub fn validate_metadata(res: &ResourceInfo, obj: &Value, causes: &mut Vec<Cause>) {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        causes.push(cause(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required".into(),
        ));
    } else if res.class == Class::Namespace {
        if !is_label(name) {
            causes.push(cause(
                "FieldValueInvalid",
                "metadata.name",
                format!("Invalid value: \"{name}\": {LABEL_MSG}"),
            ));
        } else if name.len() > 63 {
            causes.push(cause(
                "FieldValueInvalid",
                "metadata.name",
                format!("Invalid value: \"{name}\": must be no more than 63 characters"),
            ));
        }
    } else if !name.split('.').all(is_label) {
        causes.push(cause(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": {SUBDOMAIN_MSG}"),
        ));
    } else if name.len() > 253 {
        causes.push(cause(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be no more than 253 characters"),
        ));
    }
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            let field = "metadata.labels".to_string();
            match v.as_str() {
                Some(s) if valid_label_value(s) => {}
                _ => causes.push(cause(
                    "FieldValueInvalid",
                    &field,
                    format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
                )),
            }
            if !valid_qualified_name(k) {
                causes.push(cause("FieldValueInvalid", &field, format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")));
            }
        }
    }
}

fn valid_label_value(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let b = s.as_bytes();
    s.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn valid_qualified_name(k: &str) -> bool {
    let name = match k.rsplit_once('/') {
        Some((prefix, name)) => {
            if !is_dns1123_subdomain(prefix) {
                return false;
            }
            name
        }
        None => k,
    };
    !name.is_empty() && valid_label_value(name)
}

fn valid_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && k != "."
        && k != ".."
}

/// Decodes base64 the way Go's encoding/json does for `[]byte`.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, usize> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| match e {
            base64::DecodeError::InvalidByte(i, _) => i,
            base64::DecodeError::InvalidLength(n) => n,
            base64::DecodeError::InvalidLastSymbol(i, _) => i,
            base64::DecodeError::InvalidPadding => s.len(),
        })
}

/// Checks that every `data` value of a Secret is base64 (400 as a decode error).
pub fn check_secret_base64(obj: &Value) -> Result<(), ApiError> {
    if let Some(data) = obj["data"].as_object() {
        for v in data.values() {
            let Some(s) = v.as_str() else {
                if v.is_null() {
                    continue;
                }
                return Err(ApiError::bad_request("Secret in version \"v1\" cannot be handled as a Secret: json: cannot unmarshal data into Go struct field Secret.data of type []uint8"));
            };
            if let Err(i) = decode_base64(s) {
                return Err(ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte {i}"
                )));
            }
        }
    }
    Ok(())
}

/// Kind-specific validation (create and update).
pub fn validate_kind(
    res: &ResourceInfo,
    obj: &Value,
    old: Option<&Value>,
    causes: &mut Vec<Cause>,
) {
    match res.class {
        Class::Secret => validate_secret(obj, old, causes),
        Class::ConfigMap => validate_configmap(obj, old, causes),
        _ => {}
    }
}

fn validate_secret(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let mut total = 0usize;
    if let Some(data) = obj["data"].as_object() {
        for (k, v) in data {
            if !valid_config_key(k) {
                causes.push(cause(
                    "FieldValueInvalid",
                    &format!("data[{k}]"),
                    format!("Invalid value: \"{k}\": {CONFIG_KEY_MSG}"),
                ));
            }
            total += v
                .as_str()
                .and_then(|s| decode_base64(s).ok())
                .map(|b| b.len())
                .unwrap_or(0);
        }
    }
    if total > MAX_SECRET_SIZE {
        causes.push(cause(
            "FieldValueTooLong",
            "data",
            format!("Too long: may not be more than {MAX_SECRET_SIZE} bytes"),
        ));
    }
    let ty = obj["type"].as_str().unwrap_or("Opaque");
    if ty == "kubernetes.io/tls" {
        for k in ["tls.crt", "tls.key"] {
            if obj["data"].get(k).is_none() {
                causes.push(cause(
                    "FieldValueRequired",
                    &format!("data[{k}]"),
                    "Required value".into(),
                ));
            }
        }
    }
    if let Some(old) = old {
        let old_ty = old["type"].as_str().unwrap_or("Opaque");
        if old_ty != ty {
            causes.push(cause(
                "FieldValueInvalid",
                "type",
                format!("Invalid value: \"{ty}\": field is immutable"),
            ));
        }
        immutable_checks(obj, old, &["data"], causes);
    }
}

fn validate_configmap(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let mut total = 0usize;
    for field in ["data", "binaryData"] {
        if let Some(data) = obj[field].as_object() {
            for (k, v) in data {
                if !valid_config_key(k) {
                    causes.push(cause(
                        "FieldValueInvalid",
                        &format!("{field}[{k}]"),
                        format!("Invalid value: \"{k}\": {CONFIG_KEY_MSG}"),
                    ));
                }
                total += v.as_str().map(str::len).unwrap_or(0);
            }
        }
    }
    if total > MAX_SECRET_SIZE {
        causes.push(cause(
            "FieldValueTooLong",
            "",
            format!("Too long: may not be more than {MAX_SECRET_SIZE} bytes"),
        ));
    }
    if let Some(old) = old {
        immutable_checks(obj, old, &["data", "binaryData"], causes);
    }
}

fn immutable_checks(obj: &Value, old: &Value, fields: &[&str], causes: &mut Vec<Cause>) {
    if old["immutable"] == Value::Bool(true) {
        for f in fields {
            if obj[*f] != old[*f] {
                causes.push(cause(
                    "FieldValueForbidden",
                    f,
                    "Forbidden: field is immutable when `immutable` is set".into(),
                ));
            }
        }
        if obj["immutable"] != Value::Bool(true) {
            causes.push(cause(
                "FieldValueForbidden",
                "immutable",
                "Forbidden: field is immutable when `immutable` is set".into(),
            ));
        }
    }
}

/// Length limits of an events.k8s.io/v1 Event (kube-apiserver's
/// `ValidateEventCreate`/`Update`): `note` at most 1024 bytes, `reason`,
/// `action` and `reportingInstance` at most 128. `obj` is in stored
/// (core/v1) form; causes name the events.k8s.io/v1 fields.
pub fn validate_event_lengths(obj: &Value, causes: &mut Vec<Cause>) {
    for (stored, field, max) in [
        ("message", "note", 1024),
        ("reason", "reason", 128),
        ("action", "action", 128),
        ("reportingInstance", "reportingInstance", 128),
    ] {
        if obj[stored].as_str().is_some_and(|v| v.len() > max) {
            causes.push(cause(
                "FieldValueTooLong",
                field,
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
    }
}

/// The 422 for a list of causes on an object.
pub fn to_error(res: &ResourceInfo, obj: &Value, causes: Vec<Cause>) -> Result<(), ApiError> {
    if causes.is_empty() {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    Err(ApiError::invalid(&res.kind, &res.group, name, causes))
}

/// Rejects objects whose metadata does not decode as ObjectMeta (400, as a decode error).
pub fn check_shape(obj: &Value, kind: &str, api_version: &str) -> Result<(), ApiError> {
    let fail = |field: &str, ty: &str| {
        Err(ApiError::bad_request(format!(
            "{kind} in version \"{api_version}\" cannot be handled as a {kind}: json: cannot unmarshal into Go struct field ObjectMeta.metadata.{field} of type {ty}"
        )))
    };
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            match obj { Value::Array(_) => "array", Value::String(_) => "string", Value::Number(_) => "number", Value::Bool(_) => "bool", _ => "null" }
        )));
    }
    let meta = &obj["metadata"];
    if !(meta.is_null() || meta.is_object()) {
        return fail("", "v1.ObjectMeta");
    }
    for f in ["labels", "annotations"] {
        let v = &meta[f];
        if !(v.is_null()
            || v.as_object()
                .is_some_and(|m| m.values().all(|x| x.is_string() || x.is_null())))
        {
            return fail(f, "map[string]string");
        }
    }
    for f in [
        "name",
        "namespace",
        "generateName",
        "resourceVersion",
        "uid",
    ] {
        let v = &meta[f];
        if !(v.is_null() || v.is_string()) {
            return fail(f, "string");
        }
    }
    let fz = &meta["finalizers"];
    if !(fz.is_null()
        || fz
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string)))
    {
        return fail("finalizers", "[]string");
    }
    let or = &meta["ownerReferences"];
    if !(or.is_null()
        || or
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_object)))
    {
        return fail("ownerReferences", "[]v1.OwnerReference");
    }
    for f in ["spec", "status", "data", "stringData"] {
        let v = &obj[f];
        if !(v.is_null() || v.is_object()) && kind != "Event" {
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{api_version}\" cannot be handled as a {kind}: json: cannot unmarshal into Go struct field {kind}.{f}"
            )));
        }
    }
    Ok(())
}
