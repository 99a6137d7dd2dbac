//! Object validation with kube-apiserver's messages.

use base64::Engine;
use serde_json::{json, Value};

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

/// AM `IsDNS1123Label` (util/validation): the messages for a name that is
/// not an RFC 1123 label, in kube-apiserver's order (length first).
fn dns1123_label_errors(name: &str) -> Vec<String> {
    let mut errs = vec![];
    if name.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !is_label(name) {
        if name.split('.').all(is_label) {
            // A valid subdomain that is not a label: it has dots.
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(LABEL_MSG.to_string());
        }
    }
    errs
}

/// AM `IsDNS1123Subdomain`: the messages for a name that is not an RFC 1123
/// subdomain (length first).
fn dns1123_subdomain_errors(name: &str) -> Vec<String> {
    let mut errs = vec![];
    if name.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !name.split('.').all(is_label) {
        errs.push(SUBDOMAIN_MSG.to_string());
    }
    errs
}

/// AM `path.ValidatePathSegmentName`.
fn path_segment_errors(name: &str) -> Vec<String> {
    let mut errs = vec![];
    if name == "." || name == ".." {
        errs.push(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
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
    } else {
        // One cause per message, as ValidateObjectMetaAccessor does.
        let errs = match res.class {
            Class::Namespace => dns1123_label_errors(name),
            // core/v1 Events keep any name a URL path segment can hold
            // (the generic store's check only).
            Class::CoreEvent => path_segment_errors(name),
            _ => dns1123_subdomain_errors(name),
        };
        for msg in errs {
            causes.push(cause(
                "FieldValueInvalid",
                "metadata.name",
                format!("Invalid value: \"{name}\": {msg}"),
            ));
        }
    }
    validate_labels(obj, causes);
    validate_annotations(obj, causes);
}

/// AM `ValidateLabels`: each key as a label key, then its value.
fn validate_labels(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(labels) = obj["metadata"]["labels"].as_object() else {
        return;
    };
    let field = "metadata.labels";
    for (k, v) in labels {
        for msg in label_key_errors(k) {
            causes.push(cause(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {}: {msg}", Value::from(k.as_str())),
            ));
        }
        let msgs = match v.as_str() {
            Some(s) => label_value_errors(s),
            None => vec![LABEL_VALUE_MSG.to_string()],
        };
        for msg in msgs {
            causes.push(cause(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {v}: {msg}"),
            ));
        }
    }
}

const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// AM `content.IsLabelValue`: too long (in bytes), then the pattern.
pub fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > 63 {
        errs.push("must be no more than 63 bytes".to_string());
    }
    if !label_value_pattern(s) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// AM `ValidateAnnotations`: keys are qualified names once lower-cased, and
/// keys plus values hold at most 256 KiB.
fn validate_annotations(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(annotations) = obj["metadata"]["annotations"].as_object() else {
        return;
    };
    let field = "metadata.annotations";
    let mut size = 0;
    for (k, v) in annotations {
        for msg in label_key_errors(&k.to_lowercase()) {
            causes.push(cause(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {}: {msg}", Value::from(k.as_str())),
            ));
        }
        size += k.len() + v.as_str().map_or(0, str::len);
    }
    if size > MAX_ANNOTATIONS_BYTES {
        causes.push(cause(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"),
        ));
    }
}

/// `TotalAnnotationSizeLimitB`.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

const LABEL_KEY_PATTERN: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// AM `content.IsLabelKey` (`IsQualifiedName`): the messages for a label
/// key, annotation key or other qualified name, in kube-apiserver's order.
pub fn label_key_errors(value: &str) -> Vec<String> {
    let mut errs = vec![];
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            name
        }
        _ => {
            errs.push(format!("a valid label key {LABEL_KEY_PATTERN} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 bytes".to_string());
    }
    if name.is_empty() || !label_value_pattern(name) {
        errs.push(format!("name part {LABEL_KEY_PATTERN}"));
    }
    errs
}

fn label_value_pattern(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let b = s.as_bytes();
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
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
        Class::Lease => validate_lease(obj, causes),
        // ValidateNamespace (its update strategy keeps the stored spec).
        Class::Namespace if old.is_none() => validate_namespace_finalizers(obj, causes),
        _ => {}
    }
}

/// `validateFinalizerName` for each of a Namespace's `spec.finalizers`: a
/// qualified name, and one without a prefix must be a standard one.
fn validate_namespace_finalizers(obj: &Value, causes: &mut Vec<Cause>) {
    let field = "spec.finalizers";
    for f in obj["spec"]["finalizers"].as_array().into_iter().flatten() {
        let name = f.as_str().unwrap_or_default();
        for msg in label_key_errors(name) {
            causes.push(cause(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {f}: {msg}"),
            ));
        }
        let standard = ["kubernetes", "orphan", "foregroundDeletion"];
        if !name.contains('/') && !standard.contains(&name) {
            causes.push(cause(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {f}: name is neither a standard finalizer name nor is it fully qualified"),
            ));
        }
    }
}

/// `ValidateLeaseSpec`: positive duration, non-negative transitions.
fn validate_lease(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    if let Some(n) = spec["leaseDurationSeconds"].as_i64().filter(|n| *n <= 0) {
        causes.push(cause(
            "FieldValueInvalid",
            "spec.leaseDurationSeconds",
            format!("Invalid value: {n}: must be greater than 0"),
        ));
    }
    if let Some(n) = spec["leaseTransitions"].as_i64().filter(|n| *n < 0) {
        causes.push(cause(
            "FieldValueInvalid",
            "spec.leaseTransitions",
            format!("Invalid value: {n}: must be greater than or equal to 0"),
        ));
    }
}

/// Go's layout for `metav1.MicroTime`, which demands exactly six
/// fractional digits.
const MICRO_TIME_LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";

/// Decodes a Lease's MicroTime fields as kube-apiserver does (400 when one
/// is not RFC 3339 with exactly six fractional digits) and stores them in
/// UTC, as it re-encodes them.
pub fn normalize_lease_times(obj: &mut Value) -> Result<(), ApiError> {
    normalize_micro_times(obj, Class::Lease).map_err(|why| {
        ApiError::bad_request(format!(
            "Lease in version \"v1\" cannot be handled as a Lease: {why}"
        ))
    })
}

/// The MicroTime fields of a kind (as its API shows them).
fn micro_time_paths(class: Class) -> &'static [&'static [&'static str]] {
    match class {
        Class::Lease => &[&["spec", "acquireTime"], &["spec", "renewTime"]],
        Class::CoreEvent | Class::EventsV1Event => crate::events::MICRO_TIMES,
        _ => &[],
    }
}

/// Decodes the MicroTime fields of an object of `class` (RFC 3339 with
/// exactly six fractional digits) and rewrites them in UTC, as
/// kube-apiserver re-encodes them; Go's parse error when one does not decode.
pub fn normalize_micro_times(obj: &mut Value, class: Class) -> Result<(), String> {
    for path in micro_time_paths(class) {
        let Some(slot) = path.iter().try_fold(&mut *obj, |n, k| n.get_mut(*k)) else {
            continue;
        };
        let Some(text) = slot.as_str() else {
            continue;
        };
        let utc = parse_micro_time(text).map_err(|rest| {
            format!(
                "parsing time \"{text}\" as \"{MICRO_TIME_LAYOUT}\": cannot parse \"{rest}\" as \".000000\""
            )
        })?;
        *slot = Value::String(utc);
    }
    Ok(())
}

/// The time in UTC with six fractional digits, or the text after the
/// seconds that does not fit the layout.
fn parse_micro_time(text: &str) -> Result<String, String> {
    let cut = text.len().min(19);
    if !text.is_char_boundary(cut) {
        return Err(text.to_string());
    }
    let (head, rest) = text.split_at(cut);
    let fraction_ok = rest.len() > 7
        && rest.as_bytes()[0] == b'.'
        && rest.as_bytes()[1..7].iter().all(u8::is_ascii_digit)
        && !rest.as_bytes()[7].is_ascii_digit();
    if !fraction_ok {
        return Err(rest.to_string());
    }
    chrono::DateTime::parse_from_rfc3339(&format!("{head}{rest}"))
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
        })
        .map_err(|_| rest.to_string())
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
    if ty == "kubernetes.io/dockerconfigjson" {
        validate_docker_config_json(obj, causes);
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

/// kube-apiserver's check of a `kubernetes.io/dockerconfigjson` Secret:
/// `.dockerconfigjson` is required and must unmarshal into a Go
/// `map[string]interface{}` (a JSON object, or `null`). The value is never
/// echoed: the real server says `<secret contents redacted>`; the reason
/// after it is Go's JSON error, approximated here.
fn validate_docker_config_json(obj: &Value, causes: &mut Vec<Cause>) {
    const KEY: &str = "data[.dockerconfigjson]";
    let Some(encoded) = obj["data"].get(".dockerconfigjson") else {
        causes.push(cause("FieldValueRequired", KEY, "Required value".into()));
        return;
    };
    let bytes = encoded
        .as_str()
        .and_then(|s| decode_base64(s).ok())
        .unwrap_or_default();
    let problem = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(_) | Value::Null) => return,
        Ok(other) => {
            let kind = match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "bool",
            };
            format!("json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}")
        }
        Err(error) if error.is_eof() => "unexpected end of JSON input".to_owned(),
        Err(_) => "invalid character in JSON".to_owned(),
    };
    causes.push(cause(
        "FieldValueInvalid",
        KEY,
        format!("Invalid value: \"<secret contents redacted>\": {problem}"),
    ));
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

/// Whether an Event field holds a value (Go's zero values are absent).
fn event_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Object(m) => !m.is_empty(),
        _ => true,
    }
}

fn event_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj[field].as_str().unwrap_or_default()
}

/// `field.Invalid`'s rendering of a value: numbers and booleans as they
/// are, strings quoted, the rest as JSON (apimachinery 1.37).
fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        _ => v.to_string(),
    }
}

/// kube-apiserver's Event validation (pkg/apis/core/validation/events.go,
/// 1.37), on the stored (core/v1) form of the Event. `events_v1` is a write
/// through events.k8s.io/v1, which adds the strict checks; core/v1 writes
/// get only the legacy ones (no name format either). Field paths are the
/// core/v1 names (`message` for a `note`, `involvedObject` for `regarding`),
/// except that the reporting controller is `reportingComponent` through
/// core/v1. Lengths are bytes although the messages say characters.
pub fn validate_event(
    res: &ResourceInfo,
    obj: &Value,
    old: Option<&Value>,
    causes: &mut Vec<Cause>,
) {
    let events_v1 = res.class == Class::EventsV1Event;
    let invalid = |field: &str, value: &Value, detail: &str| {
        cause(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {}: {detail}", go_value(value)),
        )
    };
    let required = |field: &str| cause("FieldValueRequired", field, "Required value".into());
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let io_ns = obj["involvedObject"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let no_match = |causes: &mut Vec<Cause>| {
        causes.push(invalid(
            "involvedObject.namespace",
            &Value::from(io_ns),
            "does not match event.namespace",
        ))
    };
    // legacyValidateEvent
    if !event_set(&obj["eventTime"]) {
        if io_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                no_match(causes);
            }
        } else if ns != io_ns {
            no_match(causes);
        }
    } else {
        if io_ns.is_empty() && ns != "default" && ns != "kube-system" {
            no_match(causes);
        }
        let controller = if events_v1 {
            "reportingController"
        } else {
            "reportingComponent"
        };
        let reporter = event_str(obj, "reportingComponent");
        if reporter.is_empty() {
            causes.push(required(controller));
        }
        for msg in label_key_errors(reporter) {
            causes.push(invalid(controller, &Value::from(reporter), &msg));
        }
        for (field, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            let v = event_str(obj, field);
            if v.is_empty() {
                causes.push(required(field));
            }
            if v.len() > limit {
                causes.push(invalid(
                    field,
                    &json!(""),
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
        if event_str(obj, "message").len() > 1024 {
            causes.push(invalid(
                "message",
                &json!(""),
                "can have at most 1024 characters",
            ));
        }
    }
    if !events_v1 {
        // The generic store's ObjectMeta checks come only once the
        // strategy found nothing.
        if causes.is_empty() {
            validate_metadata(res, obj, causes);
        }
        return;
    }
    validate_metadata(res, obj, causes);
    let series_changed = old.is_none_or(|o| o["series"] != obj["series"]);
    if series_changed && event_set(&obj["series"]) {
        if obj["series"]["count"].as_i64().unwrap_or(0) < 2 {
            causes.push(invalid("series.count", &json!(""), "should be at least 2"));
        }
        if !event_set(&obj["series"]["lastObservedTime"]) {
            causes.push(required("series.lastObservedTime"));
        }
    }
    match old {
        None => {
            if !event_set(&obj["eventTime"]) {
                causes.push(required("eventTime"));
            }
            let ty = event_str(obj, "type");
            if ty != "Normal" && ty != "Warning" {
                causes.push(invalid(
                    "type",
                    &json!(""),
                    &format!("has invalid value: {ty}"),
                ));
            }
            for field in ["firstTimestamp", "lastTimestamp", "count"] {
                if event_set(&obj[field]) {
                    causes.push(invalid(field, &json!(""), "needs to be unset"));
                }
            }
            if event_set(&obj["source"]["component"]) || event_set(&obj["source"]["host"]) {
                causes.push(invalid("source", &json!(""), "needs to be unset"));
            }
        }
        Some(old) => {
            let immutable = [
                ("involvedObject", "involvedObject"),
                ("reason", "reason"),
                ("message", "message"),
                ("source", "source"),
                ("firstTimestamp", "firstTimestamp"),
                ("lastTimestamp", "lastTimestamp"),
                ("count", "count"),
                // (ValidateEventUpdate checks the reason twice; the two
                // identical errors are reported once.)
                ("type", "type"),
                ("eventTime", "eventTime"),
                ("action", "action"),
                ("related", "related"),
                ("reportingComponent", "reportingController"),
                ("reportingInstance", "reportingInstance"),
            ];
            for (stored, field) in immutable {
                let (new_v, old_v) = (&obj[stored], &old[stored]);
                if event_set(new_v) != event_set(old_v) || (event_set(new_v) && new_v != old_v) {
                    causes.push(invalid(field, new_v, "field is immutable"));
                }
            }
        }
    }
}

/// The 422 for a list of causes on an object.
pub fn to_error(res: &ResourceInfo, obj: &Value, causes: Vec<Cause>) -> Result<(), ApiError> {
    if causes.is_empty() {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    // Events of either API are validated as the internal core Event, whose
    // kind has no group: events.k8s.io/v1 errors say `Event "x"`.
    let group = if res.class == Class::EventsV1Event {
        ""
    } else {
        &res.group
    };
    Err(ApiError::invalid(&res.kind, group, name, causes))
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

#[cfg(test)]
mod metadata_tests {
    use super::*;
    use serde_json::json;

    fn causes_of(metadata: Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_annotations(&json!({"metadata": metadata}), &mut causes);
        causes
    }

    #[test]
    fn annotation_keys_are_qualified_names_in_any_case_and_their_size_is_bounded() {
        let fine = causes_of(json!({"annotations": {
            "Example.COM/Note": "x", "reloader.stakater.com/match": "true", "plain": ""
        }}));
        assert!(fine.is_empty(), "{fine:?}");
        let bad = causes_of(json!({"annotations": {"bad key": "x", "a/b/c": "x"}}));
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad.iter().all(|c| c.field == "metadata.annotations"));
        assert!(
            bad[0].message.contains("Invalid value: \"a/b/c\""),
            "{bad:?}"
        );
        let big = "x".repeat(MAX_ANNOTATIONS_BYTES);
        let too_big = causes_of(json!({"annotations": {"k": big}}));
        assert_eq!(too_big.len(), 1);
        assert_eq!(too_big[0].reason, "FieldValueTooLong");
    }

    /// The causes kube-apiserver 1.37 gives for names (checked on the real
    /// server): length first, then the pattern, one cause each; a namespace
    /// name that is a subdomain but not a label "must not contain dots"; the
    /// namespace's `kubernetes.io/metadata.name` label is checked as a label
    /// value (in bytes).
    #[test]
    fn names_get_one_cause_per_message_as_on_kube_apiserver() {
        let ns = crate::resources::builtins()
            .into_iter()
            .find(|r| r.class == Class::Namespace)
            .unwrap();
        let check = |name: &str| {
            let mut causes = Vec::new();
            let obj = json!({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}});
            validate_metadata(&ns, &obj, &mut causes);
            causes
                .into_iter()
                .map(|c| (c.field, c.message))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            check("a.b"),
            [(
                "metadata.name".to_string(),
                "Invalid value: \"a.b\": must not contain dots".to_string()
            )]
        );
        let long = "A".repeat(64);
        let got = check(&long);
        let messages: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(messages.len(), 3, "{got:?}");
        assert!(messages[0].ends_with("\": must be no more than 63 characters"));
        assert!(messages[1].contains("\": a lowercase RFC 1123 label must consist of"));
        assert!(messages[2].ends_with("\": must be no more than 63 bytes"));
        assert_eq!(got[2].0, "metadata.labels");
    }
}

#[cfg(test)]
mod lease_tests {
    use super::*;

    #[test]
    fn micro_times_need_six_fractional_digits_and_are_stored_in_utc() {
        assert_eq!(
            parse_micro_time("2025-01-02T03:04:05.123456Z").as_deref(),
            Ok("2025-01-02T03:04:05.123456Z")
        );
        assert_eq!(
            parse_micro_time("2025-01-02T05:04:05.000001+02:00").as_deref(),
            Ok("2025-01-02T03:04:05.000001Z")
        );
        assert_eq!(parse_micro_time("2025-01-02T03:04:05Z"), Err("Z".into()));
        assert_eq!(
            parse_micro_time("2025-01-02T03:04:05.123456789Z"),
            Err(".123456789Z".into())
        );
        assert_eq!(
            parse_micro_time("2025-01-02T03:04:05.123Z"),
            Err(".123Z".into())
        );
        assert!(parse_micro_time("2025-01-02T03:04:0\u{e9}").is_err());
    }

    #[test]
    fn lease_durations_must_be_positive_and_transitions_not_negative() {
        let mut causes = Vec::new();
        let lease =
            serde_json::json!({"spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}});
        validate_lease(&lease, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.leaseDurationSeconds", "spec.leaseTransitions"]
        );
        assert_eq!(
            causes[0].message,
            "Invalid value: 0: must be greater than 0"
        );
        causes.clear();
        validate_lease(
            &serde_json::json!({"spec": {"leaseDurationSeconds": 15}}),
            &mut causes,
        );
        assert!(causes.is_empty());
    }
}
