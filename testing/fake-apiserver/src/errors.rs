//! `Status` error builders with the reasons, codes and messages kube-apiserver uses.

use serde_json::{json, Value};

/// A Kubernetes API error, rendered as a `Status` object (or plain text where the
/// real server answers plain text, e.g. 429 from max-in-flight and unknown paths).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (e.g. `NotFound`).
    pub reason: String,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, if any.
    pub details: Option<Value>,
    /// Answer with this plain-text body instead of a `Status`.
    pub plain_text: Option<String>,
    /// `Retry-After` header in seconds.
    pub retry_after: Option<u32>,
}

/// `group` + `resource` as kube-apiserver prints them (`secrets`, `widgets.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupResource {
    /// API group; empty for the core group.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// Builds a group-resource pair.
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// One entry of `Status.details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// e.g. `FieldValueInvalid`, `FieldValueRequired`, `FieldManagerConflict`.
    pub reason: String,
    /// Human message.
    pub message: String,
    /// Field path such as `metadata.name`.
    pub field: String,
}

fn name_details(gr: &GroupResource, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": gr.resource});
    if !gr.group.is_empty() {
        d["group"] = json!(gr.group);
    }
    d
}

impl ApiError {
    /// A generic error with no details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
            plain_text: None,
            retry_after: None,
        }
    }

    /// 404 `<resource> "<name>" not found`.
    pub fn not_found(gr: &GroupResource, name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("{gr} \"{name}\" not found"));
        e.details = Some(name_details(gr, name));
        e
    }

    /// 409 `<resource> "<name>" already exists`.
    pub fn already_exists(gr: &GroupResource, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{gr} \"{name}\" already exists"),
        );
        e.details = Some(name_details(gr, name));
        e
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn conflict_modified(gr: &GroupResource, name: &str) -> Self {
        Self::conflict(gr, name, "the object has been modified; please apply your changes to the latest version and try again")
    }

    /// 409 `Operation cannot be fulfilled on <gr> "<name>": <why>`.
    pub fn conflict(gr: &GroupResource, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}"),
        );
        e.details = Some(name_details(gr, name));
        e
    }

    /// 422 `<Kind> "<name>" is invalid: <causes>`.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let msgs: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let joined = if msgs.len() == 1 {
            msgs[0].clone()
        } else {
            format!("[{}]", msgs.join(", "))
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {joined}"),
        );
        let mut d = json!({"name": name, "kind": kind, "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>()});
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        e.details = Some(d);
        e
    }

    /// 400 BadRequest with free text.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(verb: &str, gr: &GroupResource) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{gr}\""),
        )
    }

    /// 410 Expired.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 403 Forbidden.
    pub fn forbidden(gr: &GroupResource, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            403,
            "Forbidden",
            format!("{gr} \"{name}\" is forbidden: {why}"),
        );
        e.details = Some(name_details(gr, name));
        e
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        let m = message.into();
        let mut e = Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {m}"),
        );
        e.details = Some(json!({"causes": [{"message": m}]}));
        e
    }

    /// 429 as max-in-flight answers it: plain text with `Retry-After: 1`.
    pub fn too_many_requests() -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        e.plain_text = Some("Too many requests, please try again later.\n".to_string());
        e.retry_after = Some(1);
        e
    }

    /// Unknown path: text/plain `404 page not found`.
    pub fn page_not_found() -> Self {
        let mut e = Self::new(404, "NotFound", "404 page not found");
        e.plain_text = Some("404 page not found\n".to_string());
        e
    }

    /// The same kind of error kube-apiserver returns for the given status code
    /// (used by fault injection).
    pub fn for_code(code: u16) -> Self {
        match code {
            429 => Self::too_many_requests(),
            409 => Self::new(
                409,
                "Conflict",
                "Operation cannot be fulfilled: injected conflict",
            ),
            500 => Self::internal("injected fault"),
            503 => Self::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => Self::new(
                504,
                "Timeout",
                "the server was unable to return a response in the time allotted",
            ),
            404 => Self::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
            403 => Self::new(403, "Forbidden", "forbidden: injected fault"),
            401 => Self::new(401, "Unauthorized", "Unauthorized"),
            410 => Self::expired("injected: the resourceVersion is too old"),
            400 => Self::bad_request("injected bad request"),
            422 => Self::new(422, "Invalid", "injected: the object is invalid"),
            c => Self::new(c, "", format!("injected fault with status {c}")),
        }
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl ApiError {
    /// 422 `<Kind>.meta.k8s.io "" is invalid: …` for request options
    /// (`CreateOptions`, `ListOptions`, …), whose details carry no name.
    pub fn options_invalid(kind: &str, causes: Vec<Cause>) -> Self {
        let mut e = ApiError::invalid(kind, "meta.k8s.io", "", causes);
        if let Some(d) = e.details.as_mut().and_then(Value::as_object_mut) {
            d.remove("name");
        }
        e
    }
}

/// Shorthand for a single-cause 422.
pub fn invalid_field(
    kind: &str,
    group: &str,
    name: &str,
    reason: &str,
    field: &str,
    message: String,
) -> ApiError {
    ApiError::invalid(
        kind,
        group,
        name,
        vec![Cause {
            reason: reason.to_string(),
            message,
            field: field.to_string(),
        }],
    )
}
