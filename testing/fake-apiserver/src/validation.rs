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
        let errs = if res.class == Class::Namespace {
            dns1123_label_errors(name)
        } else {
            dns1123_subdomain_errors(name)
        };
        for msg in errs {
            causes.push(cause(
                "FieldValueInvalid",
                "metadata.name",
                format!("Invalid value: \"{name}\": {msg}"),
            ));
        }
    }
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            let field = "metadata.labels".to_string();
            match v.as_str() {
                Some(s) => {
                    for msg in label_value_errors(s) {
                        causes.push(cause(
                            "FieldValueInvalid",
                            &field,
                            format!("Invalid value: {v}: {msg}"),
                        ));
                    }
                }
                None => causes.push(cause(
                    "FieldValueInvalid",
                    &field,
                    format!("Invalid value: {v}: {LABEL_VALUE_MSG}"),
                )),
            }
            if !valid_qualified_name(k) {
                causes.push(qualified_name_cause(&field, k));
            }
        }
    }
    validate_annotations(obj, causes);
}

const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// AM `content.IsLabelValue`: too long (in bytes), then the pattern.
fn label_value_errors(s: &str) -> Vec<String> {
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
        if !valid_qualified_name(&k.to_lowercase()) {
            causes.push(qualified_name_cause(field, k));
        }
        size += k.len() + v.as_str().map_or(0, str::len);
    }
    if size > MAX_ANNOTATIONS_BYTES {
        causes.push(cause(
            "FieldValueTooLong",
            field,
            format!("Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"),
        ));
    }
}

/// `TotalAnnotationSizeLimitB`.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn qualified_name_cause(field: &str, key: &str) -> Cause {
    cause("FieldValueInvalid", field, format!("Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"))
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

fn valid_label_value(s: &str) -> bool {
    s.len() <= 63 && label_value_pattern(s)
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
        Class::Lease => validate_lease(obj, causes),
        _ => {}
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
    for field in ["acquireTime", "renewTime"] {
        let Some(text) = obj["spec"][field].as_str() else {
            continue;
        };
        let utc = parse_micro_time(text).map_err(|rest| {
            ApiError::bad_request(format!(
                "Lease in version \"v1\" cannot be handled as a Lease: parsing time \"{text}\" as \"{MICRO_TIME_LAYOUT}\": cannot parse \"{rest}\" as \".000000\""
            ))
        })?;
        obj["spec"][field] = Value::String(utc);
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

/// Length limits kube-apiserver 1.32 puts on an Event that has an
/// `eventTime` (every events.k8s.io/v1 Event, and core/v1 ones that set it),
/// on its stored (core/v1) fields, in order. Counted in bytes (Go's `len`)
/// although the message says characters (pkg/apis/core/validation/events.go
/// `legacyValidateEvent`: `field.Invalid(path, "", "can have at most N
/// characters")`; events.k8s.io/v1 `note` is `message` there).
const EVENT_LENGTH_LIMITS: [(&str, usize); 4] = [
    ("reportingInstance", 128),
    ("action", 128),
    ("reason", 128),
    ("message", 1024),
];

/// The length checks of an Event in its stored (core/v1) form.
pub fn validate_event_lengths(obj: &Value, causes: &mut Vec<Cause>) {
    if obj["eventTime"].is_null() {
        return;
    }
    for (field, limit) in EVENT_LENGTH_LIMITS {
        if obj[field].as_str().is_some_and(|v| v.len() > limit) {
            causes.push(cause(
                "FieldValueInvalid",
                field,
                format!("Invalid value: \"\": can have at most {limit} characters"),
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
