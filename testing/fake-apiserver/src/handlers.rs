//! HTTP routing and the resource verbs (get, list, create, update, patch,
//! delete, deletecollection); watches live in [`crate::watch`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{json, Value};

use crate::discovery;
use crate::errors::{ApiError, Cause};
use crate::faults::FaultAction;
use crate::managed::{self, Scope};
use crate::patch;
use crate::protobuf;
use crate::resources::{Class, ResourceInfo};
use crate::schema::TypeInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{Inner, Shared, Snapshot};
use crate::table::{self, IncludeObject};
use crate::util::{now_rfc3339, parse_query};
use crate::validation;
use crate::write::{self, external, internal, DeleteOpts, Deleted, Ownership, WriteCtx};

/// Largest accepted request body (kube-apiserver's 3 MiB limit).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// The router serving every path.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// A parsed request.
#[derive(Debug)]
pub struct Req {
    /// HTTP method.
    pub method: Method,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Req {
    /// A query parameter.
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    /// A boolean query parameter (`true`/`1`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true") | Some("1") | Some("True"))
    }

    /// A header as text.
    pub fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A request on a resource.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub res: ResourceInfo,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// Subresource from the path.
    pub subresource: Option<String>,
    /// `/watch/` path prefix.
    pub watch_prefix: bool,
}

impl Target {
    /// The resource label used by counters and faults (`secrets`, `widgets/status`).
    pub fn label(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{s}", self.res.plural),
            None => self.res.plural.clone(),
        }
    }
}

/// Serialises JSON with a status code.
pub fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Renders an error as kube-apiserver does.
pub fn error_response(e: &ApiError) -> Response {
    let mut resp = match &e.plain_text {
        Some(text) => {
            let mut r = Response::new(Body::from(text.clone()));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        None => json_response(e.code, &e.to_status()),
    };
    *resp.status_mut() = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(s) = e.retry_after {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

fn respond(result: Result<(u16, Value), ApiError>) -> Response {
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let log = shared
        .config
        .log_requests
        .then(|| format!("{} {}", parts.method, parts.uri));
    let resp = handle_parts(&shared, parts, body).await;
    if let Some(line) = log {
        eprintln!("{line} -> {}", resp.status().as_u16());
    }
    resp
}

async fn handle_parts(shared: &Arc<Shared>, parts: http::request::Parts, body: Body) -> Response {
    let shared = shared.clone();
    let body = match axum::body::to_bytes(body, MAX_BODY + 1).await {
        Ok(b) if b.len() <= MAX_BODY => b,
        _ => {
            return error_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("Request entity too large: limit is {MAX_BODY}"),
            ));
        }
    };
    let r = Req {
        method: parts.method,
        query: parse_query(parts.uri.query()),
        headers: parts.headers,
        body,
    };
    let segments: Vec<String> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    if let Some(resp) = non_resource(&shared, &r, &segs) {
        return resp;
    }
    let target = match resolve(&shared, &segs) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let verb = verb_of(&r, &target);
    let label = target.label();
    let agent = r.header("user-agent").to_owned();
    shared.arrived(verb, &label);
    match shared.take_fault(verb, &label, &agent) {
        Some(FaultAction::Status(code)) => {
            shared.record(verb, &label, code, &agent);
            return error_response(&ApiError::for_code(code));
        }
        Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let resp = if verb == "watch" {
        crate::watch::watch(shared.clone(), &target, &r)
    } else {
        let resp = serve(&shared, &target, &r, verb);
        let pending = !shared.inner().pending_namespace_cleanups.is_empty();
        if pending {
            let s = shared.clone();
            tokio::spawn(async move {
                s.inner().run_namespace_controller();
            });
        }
        resp
    };
    shared.record(verb, &label, resp.status().as_u16(), &agent);
    resp
}

fn non_resource(shared: &Shared, r: &Req, segs: &[&str]) -> Option<Response> {
    let get = r.method == Method::GET;
    let accept = r.header("accept");
    let resp = match segs {
        ["version"] if get => json_response(200, &discovery::version()),
        ["healthz"] | ["readyz"] | ["livez"] if get => {
            let mut resp = Response::new(Body::from("ok"));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp
        }
        ["api"] if get => {
            if discovery::wants_aggregated(accept) {
                let mut resp =
                    json_response(200, &discovery::aggregated(&shared.inner().registry, true));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
                );
                resp
            } else {
                json_response(200, &discovery::api_versions())
            }
        }
        ["apis"] if get => {
            let inner = shared.inner();
            if discovery::wants_aggregated(accept) {
                let mut resp = json_response(200, &discovery::aggregated(&inner.registry, false));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
                );
                resp
            } else {
                json_response(200, &discovery::api_group_list(&inner.registry))
            }
        }
        ["apis", group] if get => {
            let inner = shared.inner();
            let list = discovery::api_group_list(&inner.registry);
            match list["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|g| g["name"] == *group))
            {
                Some(g) => {
                    let mut g = g.clone();
                    g["kind"] = json!("APIGroup");
                    g["apiVersion"] = json!("v1");
                    json_response(200, &g)
                }
                None => error_response(&ApiError::page_not_found()),
            }
        }
        ["api", version] if get => gv_resources(shared, "", version),
        ["apis", group, version] if get => gv_resources(shared, group, version),
        ["openapi", "v3"] if get => {
            json_response(200, &discovery::openapi_v3_root(&shared.inner().registry))
        }
        ["openapi", "v3", "api", version] if get => openapi_doc(shared, "", version),
        ["openapi", "v3", "apis", group, version] if get => openapi_doc(shared, group, version),
        ["openapi", ..] => error_response(&ApiError::page_not_found()),
        ["api", _, ..] | ["apis", _, _, _, ..] => return None,
        _ => error_response(&ApiError::page_not_found()),
    };
    Some(resp)
}

fn gv_resources(shared: &Shared, group: &str, version: &str) -> Response {
    match discovery::resource_list(&shared.inner().registry, group, version) {
        Some(v) => json_response(200, &v),
        None => error_response(&ApiError::page_not_found()),
    }
}

fn openapi_doc(shared: &Shared, group: &str, version: &str) -> Response {
    match discovery::openapi_v3_doc(&shared.inner().registry, group, version) {
        Some(v) => json_response(200, &v),
        None => error_response(&ApiError::page_not_found()),
    }
}

fn not_found_resource() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// Resolves `/api/v1/...` and `/apis/g/v/...` to a resource target.
fn resolve(shared: &Shared, segs: &[&str]) -> Result<Target, ApiError> {
    let (group, version, mut rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::page_not_found()),
    };
    let inner = shared.inner();
    if !inner.registry.has_group_version(group, version) {
        return Err(ApiError::page_not_found());
    }
    let mut watch_prefix = false;
    if rest.first() == Some(&"watch") {
        watch_prefix = true;
        rest = &rest[1..];
    }
    let mut namespace = None;
    if rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && !(group.is_empty() && rest.len() == 3 && matches!(rest[2], "status" | "finalize"))
    {
        namespace = Some(rest[1].to_string());
        rest = &rest[2..];
    }
    if rest.is_empty() || rest.len() > 3 {
        return Err(not_found_resource());
    }
    let res = inner
        .registry
        .find(group, version, rest[0])
        .cloned()
        .ok_or_else(not_found_resource)?;
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    if let Some(sub) = &subresource {
        let ok = (sub == "status" && res.status_subresource)
            || (sub == "finalize" && res.class == Class::Namespace);
        if !ok {
            return Err(not_found_resource());
        }
    }
    if namespace.is_some() && !res.namespaced {
        return Err(not_found_resource());
    }
    if res.namespaced && namespace.is_none() && name.is_some() {
        return Err(not_found_resource());
    }
    Ok(Target {
        res,
        namespace,
        name,
        subresource,
        watch_prefix,
    })
}

/// The kube-apiserver verb of a request.
pub fn verb_of(r: &Req, t: &Target) -> &'static str {
    let watch = t.watch_prefix || r.flag("watch");
    verb(&r.method, t.name.is_some(), watch).unwrap_or("unknown")
}

/// The kube-apiserver verb of a request with `method` on a path that names
/// an object (`named`) or not, asking to `watch` or not; `None` for a
/// method kube-apiserver has no verb for.
pub fn verb(method: &Method, named: bool, watch: bool) -> Option<&'static str> {
    Some(match (method, named) {
        (&Method::GET, _) if watch => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return None,
    })
}

fn serve(shared: &Shared, t: &Target, r: &Req, verb: &str) -> Response {
    if matches!(verb, "update" | "patch") && t.name.is_none() {
        let m = if verb == "update" { "PUT" } else { "PATCH" };
        return error_response(&ApiError::method_not_allowed(m, &t.res.gr()));
    }
    let mut inner = shared.inner();
    match verb {
        "get" => respond(get(&inner, t, r)),
        "list" => respond(list(&mut inner, t, r)),
        "create" => respond(create(&mut inner, t, r)),
        "update" => respond(update(&mut inner, t, r)),
        "patch" => respond(patch_object(&mut inner, t, r)),
        "delete" => respond(delete(&mut inner, t, r)),
        "deletecollection" => respond(delete_collection(&mut inner, t, r)),
        _ => error_response(&ApiError::method_not_allowed(
            r.method.as_str(),
            &t.res.gr(),
        )),
    }
}

/// How the client wants objects rendered (from Accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// Plain JSON objects.
    Json,
    /// meta.k8s.io Table.
    Table(IncludeObject),
    /// PartialObjectMetadata(List).
    Partial,
}

/// Parses the Accept header.
pub fn render_mode(r: &Req) -> Render {
    let accept = r.header("accept").replace(' ', "");
    let first = accept.split(',').next().unwrap_or_default();
    if first.contains("as=Table") {
        Render::Table(IncludeObject::parse(r.q("includeObject")))
    } else if first.contains("as=PartialObjectMetadata") {
        Render::Partial
    } else {
        Render::Json
    }
}

fn ns_str(t: &Target) -> &str {
    t.namespace.as_deref().unwrap_or_default()
}

fn get(inner: &Inner, t: &Target, r: &Req) -> Result<(u16, Value), ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    let obj = inner
        .store
        .get(&t.res.storage, ns_str(t), name)
        .ok_or_else(|| ApiError::not_found(&t.res.gr(), name))?;
    let ext = external(&t.res, obj);
    let rv = ext["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((
        200,
        match render_mode(r) {
            Render::Json => ext,
            Render::Partial => table::partial_metadata(&ext),
            Render::Table(inc) => {
                table::table(&t.res, &[ext], &rv, inc, true, &|o| core_view(&t.res, o))
            }
        },
    ))
}

/// Events are printed from their core/v1 form.
pub fn core_view(res: &ResourceInfo, o: &Value) -> Value {
    if res.class == Class::EventsV1Event {
        crate::events::to_core(o)
    } else {
        o.clone()
    }
}

/// Label + field + namespace filter of list and watch.
pub struct Filter {
    /// Namespace, if namespaced request.
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Filter {
    /// Builds the filter from the request.
    pub fn from_request(t: &Target, r: &Req) -> Result<Filter, ApiError> {
        let labels = LabelSelector::parse(r.q("labelSelector").unwrap_or_default())?;
        let mut fs = r.q("fieldSelector").unwrap_or_default().to_string();
        if let Some(name) = &t.name {
            if !fs.is_empty() {
                fs.push(',');
            }
            fs.push_str(&format!("metadata.name={name}"));
        }
        let fields = FieldSelector::parse(&fs, &t.res)?;
        Ok(Filter {
            namespace: t.namespace.clone(),
            labels,
            fields,
        })
    }

    /// Whether an object (external form) passes.
    pub fn matches(&self, ext: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if ext["metadata"]["namespace"].as_str() != Some(ns) {
                return false;
            }
        }
        self.labels.matches_object(ext) && self.fields.matches_object(ext)
    }
}

/// apimachinery's `ValidateListOptions` (internalversion/validation) for a
/// list (`watch` false) or a watch: 422 `ListOptions.meta.k8s.io "" is
/// invalid`, one cause per rule broken.
pub fn validate_list_options(r: &Req, watch: bool) -> Result<(), ApiError> {
    let rv = r.q("resourceVersion").unwrap_or_default();
    let rvm = r.q("resourceVersionMatch").unwrap_or_default();
    let continued = r.q("continue").is_some_and(|c| !c.is_empty());
    let send_initial = r.q("sendInitialEvents").is_some();
    let forbidden = |field: &str, detail: &str| Cause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {detail}"),
        field: field.into(),
    };
    let not_supported = |supported: &str| Cause {
        reason: "FieldValueNotSupported".into(),
        message: format!("Unsupported value: \"{rvm}\": supported values: {supported}"),
        field: "resourceVersionMatch".into(),
    };
    let mut causes = vec![];
    if watch {
        if send_initial && rvm != "NotOlderThan" {
            causes.push(forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !rvm.is_empty() {
            if !send_initial {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if rvm != "NotOlderThan" {
                causes.push(not_supported("\"NotOlderThan\""));
            }
            if continued {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
    } else {
        if !rvm.is_empty() {
            if rv.is_empty() {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if continued {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if rvm != "Exact" && rvm != "NotOlderThan" {
                causes.push(not_supported("\"Exact\", \"NotOlderThan\", \"\""));
            }
            if rvm == "Exact" && rv == "0" {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if send_initial {
            causes.push(forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::options_invalid("ListOptions", causes))
}

fn expired_continue() -> ApiError {
    ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
}

/// A continue token in kube-apiserver's shape (`storage.EncodeContinue`:
/// unpadded base64url of `{"v","rv","start"}`), whose start key names the
/// fake's snapshot and offset.
fn encode_continue(rv: u64, id: u64, offset: usize) -> String {
    use base64::Engine;
    let tok = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{id}:{offset}")});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok.to_string())
}

/// Reads a continue token with `storage.DecodeContinue`'s errors (a 400
/// `invalid continue token: …`); a well-formed token the fake did not issue
/// is as good as expired.
fn decode_continue(s: &str) -> Result<(u64, usize), ApiError> {
    use base64::Engine;
    let invalid = |why: String| ApiError::bad_request(format!("invalid continue token: {why}"));
    let generic = |why: String| invalid(format!("continue key is not valid: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| {
            let at = match e {
                base64::DecodeError::InvalidByte(i, _)
                | base64::DecodeError::InvalidLastSymbol(i, _) => i,
                base64::DecodeError::InvalidLength(n) => n.saturating_sub(1),
                base64::DecodeError::InvalidPadding => s.len(),
            };
            generic(format!("illegal base64 data at input byte {at}"))
        })?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| generic(e.to_string()))?;
    match v["v"].as_str().unwrap_or_default() {
        "meta.k8s.io/v1" => {}
        other => {
            return Err(invalid(format!(
                "continue key is not valid: server does not recognize this encoded version {other}"
            )))
        }
    }
    if v["rv"].as_i64().unwrap_or(0) == 0 {
        return Err(invalid("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)".into()));
    }
    let start = v["start"].as_str().unwrap_or_default();
    if start.is_empty() {
        return Err(invalid(
            "continue key is not valid: encoded start key empty (version meta.k8s.io/v1)".into(),
        ));
    }
    let parsed = start
        .split_once(':')
        .and_then(|(id, off)| Some((id.parse().ok()?, off.parse().ok()?)));
    parsed.ok_or_else(expired_continue)
}

fn list(inner: &mut Inner, t: &Target, r: &Req) -> Result<(u16, Value), ApiError> {
    validate_list_options(r, false)?;
    if let Some(rv) = r.q("resourceVersion").filter(|v| !v.is_empty()) {
        parse_resource_version(rv)
            .map_err(|e| ApiError::bad_request(format!("invalid resource version: {e}")))?;
    }
    let filter = Filter::from_request(t, r)?;
    let limit: usize = r.q("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let (rv, items, offset) = match r.q("continue").filter(|c| !c.is_empty()) {
        Some(tok) => {
            let (id, offset) = decode_continue(tok)?;
            let snap = inner
                .snapshots
                .get(&id)
                .cloned()
                .ok_or_else(expired_continue)?;
            (snap.rv, snap.items, offset)
        }
        None => {
            let ns = t.namespace.as_deref();
            let items: Vec<Value> = inner
                .store
                .list(&t.res.storage, ns)
                .iter()
                .map(|o| external(&t.res, o))
                .collect();
            (inner.store.current_rv(), items, 0)
        }
    };
    // The storage pages through every key of the range and filters as it
    // goes: a page ends after `limit` matches, and continues when any key,
    // matching or not, follows (none when the selector names one object,
    // which is read as that one key).
    let mut page: Vec<Value> = Vec::new();
    let mut end = offset;
    for item in items.iter().skip(offset) {
        if limit > 0 && page.len() >= limit {
            break;
        }
        end += 1;
        if filter.matches(item) {
            page.push(item.clone());
        }
    }
    let end = end.min(items.len());
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if end < items.len() && !filter.fields.selects_one_name() {
        let remaining = items.len() - end;
        let id = inner.save_snapshot(Snapshot {
            rv,
            items: items.clone(),
        });
        metadata["continue"] = json!(encode_continue(rv, id, end));
        if filter.labels.is_empty() && filter.fields.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let rvs = rv.to_string();
    let out = match render_mode(r) {
        Render::Table(inc) => {
            let mut tbl = table::table(&t.res, &page, &rvs, inc, true, &|o| core_view(&t.res, o));
            tbl["metadata"] = metadata;
            tbl
        }
        Render::Partial => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": page.iter().map(table::partial_metadata).collect::<Vec<_>>(),
        }),
        Render::Json => {
            let custom = t.res.class == Class::Custom;
            // An unstructured list (a custom resource's) always says where
            // it continues, "" on the last page.
            if custom && metadata.get("continue").is_none() {
                metadata["continue"] = json!("");
            }
            let items: Vec<Value> = page
                .into_iter()
                .map(|mut o| {
                    if !custom {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("kind");
                            m.remove("apiVersion");
                        }
                    }
                    o
                })
                .collect();
            json!({"kind": t.res.list_kind(), "apiVersion": t.res.api_version(), "metadata": metadata, "items": items})
        }
    };
    Ok((200, out))
}

fn content_type(r: &Req) -> String {
    r.header("content-type")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_lowercase()
}

/// Decodes a create/update body (JSON, YAML or protobuf).
fn decode_body(r: &Req, t: &Target) -> Result<Value, ApiError> {
    let ct = content_type(r);
    let v: Value = match ct.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(&r.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        "application/yaml" => serde_yaml::from_slice(&r.body)
            .map_err(|e| ApiError::bad_request(format!("yaml: {e}")))?,
        protobuf::PROTOBUF => protobuf::decode(&r.body)?,
        _ => {
            return Err(ApiError::unsupported_media_type(&[
                "application/json",
                "application/yaml",
                protobuf::PROTOBUF,
            ]))
        }
    };
    validation::check_shape(&v, &t.res.kind, &t.res.api_version())?;
    check_type_meta(&v, t)?;
    // Strict decoding refuses unknown fields before anything looks at the
    // object (its resourceVersion, whether it exists).
    if let (Class::Custom, Some(schema), Some("Strict")) =
        (t.res.class, t.res.schema.as_ref(), r.q("fieldValidation"))
    {
        let mut unknown = vec![];
        crate::schema::prune(schema, &mut v.clone(), "", true, &mut unknown);
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect();
            let version = t.res.api_version();
            let version = version.rsplit('/').next().unwrap_or_default();
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                list.join(", "),
                kind = t.res.kind
            )));
        }
    }
    if t.res.class == Class::Secret {
        validation::check_secret_base64(&v)?;
    }
    let mut v = v;
    if t.res.class == Class::Lease {
        validation::normalize_lease_times(&mut v)?;
    }
    if matches!(t.res.class, Class::CoreEvent | Class::EventsV1Event) {
        validation::normalize_micro_times(&mut v, t.res.class).map_err(|why| {
            ApiError::bad_request(format!(
                "Event in version \"v1\" cannot be handled as a Event: {why}"
            ))
        })?;
    }
    Ok(v)
}

fn check_type_meta(v: &Value, t: &Target) -> Result<(), ApiError> {
    // A custom resource is decoded as unstructured JSON, which needs both;
    // a built-in kind takes them from the URL.
    if t.res.class == Class::Custom {
        let shown = v.to_string();
        if v["kind"].as_str().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {}): Object 'Kind' is missing in '{shown}'",
                t.res.kind
            )));
        }
        if v["apiVersion"].as_str().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data () does not match the expected API version ({})",
                t.res.api_version()
            )));
        }
    }
    if let Some(av) = v["apiVersion"].as_str().filter(|s| !s.is_empty()) {
        if av != t.res.api_version() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                t.res.api_version()
            )));
        }
    }
    if let Some(k) = v["kind"].as_str().filter(|s| !s.is_empty()) {
        if k != t.res.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                t.res.kind
            )));
        }
    }
    Ok(())
}

/// A cause of an options error.
fn option_cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

/// apimachinery's `ValidateDryRun` of a list of dryRun values.
fn dry_run_causes(values: &[&str]) -> Vec<Cause> {
    if values.iter().all(|v| *v == "All") {
        return vec![];
    }
    vec![option_cause(
        "FieldValueNotSupported",
        "dryRun",
        format!(
            "Unsupported value: {}: supported values: \"All\"",
            json!(values)
        ),
    )]
}

/// The dryRun query parameter (empty means none).
fn dry_run_values(r: &Req) -> Vec<&str> {
    r.q("dryRun")
        .filter(|v| !v.is_empty())
        .into_iter()
        .collect()
}

/// The checks `ValidateCreateOptions`, `ValidateUpdateOptions` and
/// `ValidatePatchOptions` share: fieldManager, dryRun, fieldValidation.
fn common_option_causes(r: &Req) -> Vec<Cause> {
    let mut causes = vec![];
    let manager = r.q("fieldManager").unwrap_or_default();
    if manager.len() > 128 {
        causes.push(option_cause(
            "FieldValueTooLong",
            "fieldManager",
            "Too long: may not be more than 128 bytes".into(),
        ));
    }
    for (pos, c) in manager.char_indices() {
        if c.is_control() {
            causes.push(option_cause(
                "FieldValueInvalid",
                "fieldManager",
                format!(
                    "Invalid value: {}: invalid character U+{:04X} (at position {pos})",
                    Value::from(manager),
                    c as u32
                ),
            ));
        }
    }
    causes.extend(dry_run_causes(&dry_run_values(r)));
    let validation = r.q("fieldValidation").unwrap_or_default();
    if !matches!(validation, "" | "Ignore" | "Strict" | "Warn") {
        causes.push(option_cause(
            "FieldValueNotSupported",
            "fieldValidation",
            format!("Unsupported value: \"{validation}\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""),
        ));
    }
    causes
}

/// The field manager of a write: `fieldManager`, else the User-Agent's
/// first word.
fn field_manager(r: &Req) -> String {
    if let Some(m) = r.q("fieldManager").filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    let ua = r.header("user-agent");
    let prefix = ua.split('/').next().unwrap_or_default();
    if prefix.is_empty() {
        "unknown".to_string()
    } else {
        prefix.to_string()
    }
}

/// The context of a create, update or patch, after its options are checked
/// (`kind` is `CreateOptions`, `UpdateOptions` or `PatchOptions`; `causes`
/// holds the checks of that kind that come first).
fn ctx(t: &Target, r: &Req, kind: &str, mut causes: Vec<Cause>) -> Result<WriteCtx, ApiError> {
    causes.extend(common_option_causes(r));
    if !causes.is_empty() {
        return Err(ApiError::options_invalid(kind, causes));
    }
    Ok(WriteCtx {
        res: t.res.clone(),
        subresource: t.subresource.clone(),
        dry_run: r.q("dryRun") == Some("All"),
        manager: field_manager(r),
        strict: r.q("fieldValidation") == Some("Strict"),
    })
}

fn create(inner: &mut Inner, t: &Target, r: &Req) -> Result<(u16, Value), ApiError> {
    if t.name.is_some() {
        return Err(ApiError::method_not_allowed("POST", &t.res.gr()));
    }
    if t.res.namespaced && t.namespace.is_none() {
        return Err(not_found_resource());
    }
    let c = ctx(t, r, "CreateOptions", vec![])?;
    let body = decode_body(r, t)?;
    store_new(inner, &c, t, &body)
}

/// Stores `body` as a new object (a POST, or a PUT of one that does not
/// exist) and answers 201 with it.
fn store_new(
    inner: &mut Inner,
    c: &WriteCtx,
    t: &Target,
    body: &Value,
) -> Result<(u16, Value), ApiError> {
    let stored = write::create(
        inner,
        c,
        t.namespace.as_deref(),
        internal(&t.res, body),
        Ownership::Update,
    )?;
    Ok((201, external(&t.res, &stored)))
}

fn existing(inner: &Inner, t: &Target) -> Result<Value, ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    inner
        .store
        .get(&t.res.storage, ns_str(t), name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.res.gr(), name))
}

fn check_rv(t: &Target, old: &Value, new: &Value, required: bool) -> Result<(), ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    match new["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        Some(rv) if Some(rv) != old["metadata"]["resourceVersion"].as_str() => {
            Err(ApiError::conflict_modified(&t.res.gr(), name))
        }
        // The generic store names the resource (plural) where the kind
        // would go, and 1.37 prints the uint64 0 as `0` (field.Invalid of
        // a number), older releases as `0x0`.
        None if required => Err(ApiError::invalid(
            &t.res.plural,
            &t.res.group,
            name,
            vec![crate::errors::Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: 0: must be specified for an update".into(),
                field: "metadata.resourceVersion".into(),
            }],
        )),
        _ => Ok(()),
    }
}

fn update(inner: &mut Inner, t: &Target, r: &Req) -> Result<(u16, Value), ApiError> {
    let c = ctx(t, r, "UpdateOptions", vec![])?;
    let body = decode_body(r, t)?;
    let name = t.name.as_deref().unwrap_or_default();
    // The update handler: the namespace, then the name (checkName).
    let body_ns = body["metadata"]["namespace"].as_str().unwrap_or_default();
    if let Some(ns) = t.namespace.as_deref() {
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    match body["metadata"]["name"].as_str().unwrap_or_default() {
        "" => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name} based on URL) was undeterminable: name must be provided"
            )))
        }
        bn if bn != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({bn}) does not match the name on the URL ({name})"
            )))
        }
        _ => {}
    }
    let stored_old = inner.store.get(&t.res.storage, ns_str(t), name).cloned();
    // Leases and events are created by a PUT to a missing name
    // (their strategies' AllowCreateOnUpdate); anything else is not found.
    let create_on_update = matches!(
        t.res.class,
        Class::Lease | Class::CoreEvent | Class::EventsV1Event
    );
    if stored_old.is_none() && !create_on_update {
        return Err(ApiError::not_found(&t.res.gr(), name));
    }
    // A uid in the body is a storage precondition (against no uid at all
    // when nothing is stored).
    if let Some(uid) = body["metadata"]["uid"].as_str().filter(|u| !u.is_empty()) {
        let stored = stored_old
            .as_ref()
            .and_then(|o| o["metadata"]["uid"].as_str())
            .unwrap_or_default();
        if uid != stored {
            let key = etcd_key(&t.res, t.namespace.as_deref(), name);
            return Err(ApiError::conflict(
                &t.res.gr(),
                name,
                &format!("StorageError: invalid object, Code: 4, Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: {uid}, UID in object meta: {stored}"),
            ));
        }
    }
    let old = match stored_old {
        Some(old) => old,
        None => return store_new(inner, &c, t, &body),
    };
    // Custom resources and Leases disallow unconditional updates.
    let rv_required = matches!(t.res.class, Class::Custom | Class::Lease);
    check_rv(t, &old, &body, rv_required)?;
    let stored = write::update(inner, &c, &old, internal(&t.res, &body), Ownership::Update)?;
    Ok((200, external(&t.res, &stored)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

fn patch_type(r: &Req, t: &Target) -> Result<PatchType, ApiError> {
    let accepted_custom = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    let accepted_builtin = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];
    let accepted: &[&str] = if t.res.accepts_strategic_merge() {
        &accepted_builtin
    } else {
        &accepted_custom
    };
    let pt = match content_type(r).as_str() {
        "application/json-patch+json" => PatchType::Json,
        "application/merge-patch+json" => PatchType::Merge,
        "application/strategic-merge-patch+json" if t.res.accepts_strategic_merge() => {
            PatchType::Strategic
        }
        "application/apply-patch+yaml" => PatchType::Apply,
        _ => return Err(ApiError::unsupported_media_type(accepted)),
    };
    Ok(pt)
}

/// A resourceVersion as kube-apiserver parses it (`strconv.ParseUint`), with
/// Go's error text.
pub fn parse_resource_version(s: &str) -> Result<u64, String> {
    s.parse::<u64>().map_err(|_| {
        let why = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            "value out of range"
        } else {
            "invalid syntax"
        };
        format!(
            "resourceVersion: Invalid value: \"{s}\": strconv.ParseUint: parsing \"{s}\": {why}"
        )
    })
}

fn patch_object(inner: &mut Inner, t: &Target, r: &Req) -> Result<(u16, Value), ApiError> {
    let pt = patch_type(r, t)?;
    // ValidatePatchOptions: force or the apply field manager first.
    let mut causes = vec![];
    if pt != PatchType::Apply && r.q("force").is_some() {
        causes.push(option_cause(
            "FieldValueForbidden",
            "force",
            "Forbidden: may not be specified for non-apply patch".into(),
        ));
    }
    if pt == PatchType::Apply && r.q("fieldManager").is_none_or(str::is_empty) {
        causes.push(option_cause(
            "FieldValueRequired",
            "fieldManager",
            "Required value: is required for apply patch".into(),
        ));
    }
    let c = ctx(t, r, "PatchOptions", causes)?;
    let name = t.name.as_deref().unwrap_or_default().to_string();
    if pt == PatchType::Apply {
        return apply(inner, t, r, &c, &name);
    }
    let old = existing(inner, t)?;
    let patch_doc: Value = serde_json::from_slice(&r.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let old_ext = external(&t.res, &old);
    let patched = match pt {
        PatchType::Merge => {
            if !patch_doc.is_object() {
                return Err(ApiError::bad_request(format!(
                    "error decoding patch: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                    patch::json_type(&patch_doc)
                )));
            }
            patch::merge_patch(&old_ext, &patch_doc)
        }
        PatchType::Strategic => patch::strategic_merge_patch(&old_ext, &patch_doc, &t.res.kind)?,
        _ => patch::json_patch(&old_ext, &patch_doc)?,
    };
    // The patched object is decoded: a MicroTime that does not parse makes
    // the patch invalid.
    let mut patched = patched;
    if let Err(why) = validation::normalize_micro_times(&mut patched, t.res.class) {
        return Err(patch_invalid(&patched, &why));
    }
    check_patched(t, &name, &patched, true)?;
    validation::check_shape(&patched, &t.res.kind, &t.res.api_version())?;
    // A patched custom resource is decoded strictly as a whole: an unknown
    // field makes the patch invalid (whatever endpoint it came through).
    if let (Class::Custom, Some(schema), true) = (t.res.class, t.res.schema.as_ref(), c.strict) {
        let mut unknown = vec![];
        crate::schema::prune(schema, &mut patched.clone(), "", true, &mut unknown);
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect();
            let why = format!("strict decoding error: {}", list.join(", "));
            return Err(patch_invalid(&patched, &why));
        }
    }
    if t.res.class == Class::Secret {
        validation::check_secret_base64(&patched)?;
    }
    check_rv(t, &old, &patched, false)?;
    let stored = write::update(
        inner,
        &c,
        &old,
        internal(&t.res, &patched),
        Ownership::Update,
    )?;
    Ok((200, external(&t.res, &stored)))
}

/// 422 for a patched object that does not decode: `"" is invalid: patch:
/// Invalid value: "<object>": <why>`, with no name or kind in its details.
fn patch_invalid(patched: &Value, why: &str) -> ApiError {
    let mut e = ApiError::invalid(
        "",
        "",
        "",
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {}: {why}", json!(patched.to_string())),
            field: "patch".into(),
        }],
    );
    if let Some(d) = e.details.as_mut().and_then(Value::as_object_mut) {
        d.retain(|k, _| k == "causes");
    }
    e
}

/// Where kube-apiserver keeps an object in etcd: `/registry/<resource>/…`
/// for built-in kinds (core and the groups served here, whose resources
/// keep their historical prefixes), `/registry/<group>/<resource>/…` for
/// CRDs and custom resources.
fn etcd_key(res: &ResourceInfo, ns: Option<&str>, name: &str) -> String {
    let resource = match res.class {
        Class::Custom | Class::Crd => format!("{}/{}", res.group, res.plural),
        Class::EventsV1Event => "events".to_string(),
        _ => res.plural.clone(),
    };
    match ns {
        Some(ns) => format!("/registry/{resource}/{ns}/{name}"),
        None => format!("/registry/{resource}/{name}"),
    }
}

/// The patcher's checks of a patched object (handlers/patch.go): a uid on an
/// object that does not exist yet, then the namespace, then the name.
fn check_patched(t: &Target, name: &str, patched: &Value, exists: bool) -> Result<(), ApiError> {
    let meta = &patched["metadata"];
    if !exists {
        if let Some(uid) = meta["uid"].as_str().filter(|u| !u.is_empty()) {
            return Err(ApiError::conflict(
                &t.res.gr(),
                name,
                &format!("uid mismatch: the provided object specified uid {uid}, and no existing object was found"),
            ));
        }
    }
    let object_ns = meta["namespace"].as_str().unwrap_or_default();
    if let Some(ns) = t.namespace.as_deref() {
        if !object_ns.is_empty() && object_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    match meta["name"].as_str().unwrap_or_default() {
        "" => Err(ApiError::bad_request(format!(
            "the name of the object ({name} based on URL) was undeterminable: name must be provided"
        ))),
        n if n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

/// Puts back, as "", the keys of `config`'s maps of strings that were
/// applied as explicit nulls (the merge drops them), where the endpoint
/// writes that part of the object.
fn restore_string_map_nulls(
    res: &crate::resources::ResourceInfo,
    config: &Value,
    object: &mut Value,
    status_only: bool,
) {
    if status_only {
        return;
    }
    for path in string_map_paths(res) {
        let Some(m) = path
            .iter()
            .try_fold(config, |node, k| node.get(*k))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (k, v) in m {
            if v.is_null() {
                let mut node = &mut *object;
                for p in path {
                    if !node[*p].is_object() {
                        node[*p] = json!({});
                    }
                    node = &mut node[*p];
                }
                node[k.as_str()] = json!("");
            }
        }
    }
}

fn subresource_scope(t: &Target) -> bool {
    t.subresource.is_some()
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// kube-apiserver's lastAppliedUpdater: an apply by the field manager
/// `kubectl` to an object that has (or is given) kubectl's client-side
/// last-applied annotation rewrites it to the applied configuration itself
/// (without that annotation), encoded as Go's JSON encoder does.
fn sync_last_applied(manager: &str, config: &Value, object: &mut Value) {
    if manager != "kubectl" || object["metadata"]["annotations"][LAST_APPLIED].is_null() {
        return;
    }
    let mut last = config.clone();
    if let Some(a) = last["metadata"]
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(LAST_APPLIED);
    }
    let text = go_json(&last) + "\n";
    object["metadata"]["annotations"][LAST_APPLIED] = json!(text);
}

/// JSON as Go's encoding/json writes it: map keys sorted, `<`, `>` and `&`
/// escaped.
fn go_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v)
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The maps of strings (or bytes) of a built-in kind, and the metadata's
/// of a custom resource (its ObjectMeta is a Go type too).
fn string_map_paths(res: &crate::resources::ResourceInfo) -> Vec<&'static [&'static str]> {
    let mut maps: Vec<&'static [&'static str]> =
        vec![&["metadata", "labels"], &["metadata", "annotations"]];
    match res.class {
        Class::Secret => maps.extend([&["data"][..], &["stringData"][..]]),
        Class::ConfigMap => maps.extend([&["data"][..], &["binaryData"][..]]),
        _ => {}
    }
    maps
}

/// A `null` value in a built-in kind's `map[string]string` (labels,
/// annotations, a Secret's or ConfigMap's data) of an apply configuration:
/// kube-apiserver merges it, owns the key for the applier and stores the Go
/// zero value, `""`.
fn string_map_nulls(res: &crate::resources::ResourceInfo, config: &mut Value) {
    for path in string_map_paths(res) {
        let node = path
            .iter()
            .try_fold(&mut *config, |node, k| node.get_mut(*k));
        if let Some(m) = node.and_then(Value::as_object_mut) {
            for v in m.values_mut() {
                if v.is_null() {
                    *v = json!("");
                }
            }
        }
    }
}

fn apply(
    inner: &mut Inner,
    t: &Target,
    r: &Req,
    c: &WriteCtx,
    name: &str,
) -> Result<(u16, Value), ApiError> {
    let config: Value = serde_yaml::from_slice(&r.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    validation::check_shape(&config, &t.res.kind, &t.res.api_version())?;
    let raw_config = config.clone();
    let av = config["apiVersion"].as_str().unwrap_or_default();
    if av != t.res.api_version() {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {av}, expected: {}",
            t.res.api_version()
        )));
    }
    let kind = config["kind"].as_str().unwrap_or_default();
    if kind != t.res.kind {
        return Err(ApiError::bad_request(format!(
            "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
            t.res.kind
        )));
    }
    if !config["metadata"]["managedFields"].is_null() {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    if t.res.class == Class::Secret {
        validation::check_secret_base64(&config)?;
    }
    let old = inner.store.get(&t.res.storage, ns_str(t), name).cloned();
    // The patcher's checks, on the config merged into the live object.
    let mut probe = config.clone();
    string_map_nulls(&t.res, &mut probe);
    if let Some(live) = &old {
        for k in ["name", "uid"] {
            if probe["metadata"][k].is_null() {
                probe["metadata"][k] = live["metadata"][k].clone();
            }
        }
    }
    check_patched(t, name, &probe, old.is_some())?;
    if old.is_none() && t.subresource.is_some() {
        return Err(ApiError::not_found(&t.res.gr(), name));
    }
    let config_int = internal(&t.res, &config);
    let live = old.clone().unwrap_or_else(|| {
        let mut skel = json!({"apiVersion": config_int["apiVersion"], "kind": config_int["kind"], "metadata": {"name": name}});
        if let Some(ns) = &t.namespace {
            skel["metadata"]["namespace"] = json!(ns);
        }
        skel
    });
    if let Some(old) = &old {
        check_rv(t, old, &config, false)?;
    }
    let scope = Scope::of(&t.res, t.subresource.as_deref());
    let api_version = t.res.api_version();
    let now = now_rfc3339();
    let op = managed::Op {
        ti: TypeInfo::new(&t.res),
        scope,
        manager: &c.manager,
        api_version: &api_version,
        subresource: t.subresource.as_deref().unwrap_or_default(),
        now: &now,
    };
    // structured-merge-diff types the whole configuration (whatever the
    // endpoint and fieldValidation): a field the schema does not declare
    // is an internal error, not a pruned field.
    if let (Class::Custom, Some(schema)) = (t.res.class, t.res.schema.as_ref()) {
        let mut errors = vec![];
        crate::schema::typed_errors(schema, &config_int, "", &mut errors);
        if let Some(first) = errors.first() {
            let key = match &t.namespace {
                Some(ns) => format!("{ns}/{name}"),
                None => format!("/{name}"),
            };
            return Err(ApiError::new(
                500,
                "",
                format!(
                    "failed to create typed patch object ({key}; {api_version}, Kind={}): {first}",
                    t.res.kind
                ),
            ));
        }
    }
    let mut entries = managed::decode(&live);
    if old.is_some() && entries.is_empty() {
        entries = managed::before_first_apply(&live, &op);
    }
    // Events merge in the API's own view (their fields are named per API,
    // and so are the fields their managers own).
    let events = matches!(t.res.class, Class::CoreEvent | Class::EventsV1Event);
    let mut applied = if events {
        let live_view = match &old {
            Some(o) => external(&t.res, o),
            None => {
                let mut skel = json!({"metadata": {"name": name}});
                if let Some(ns) = &t.namespace {
                    skel["metadata"]["namespace"] = json!(ns);
                }
                external(&t.res, &skel)
            }
        };
        let mut applied = managed::apply(entries, &live_view, &config, &op, r.flag("force"))?;
        applied.object = internal(&t.res, &applied.object);
        applied
    } else {
        managed::apply(entries, &live, &config_int, &op, r.flag("force"))?
    };
    // The merged object is then converted to its Go type (after the
    // conflicts): a MicroTime that does not parse fails the apply.
    if let Err(why) = validation::normalize_micro_times(&mut config.clone(), t.res.class) {
        let key = format!("{}/{name}", t.namespace.as_deref().unwrap_or_default());
        return Err(ApiError::new(
            500,
            "",
            format!(
                "failed to convert new object ({key}; {}, Kind={}) to proper version: unable to convert unstructured object to {}, Kind={}: {why}",
                t.res.api_version(),
                t.res.kind,
                t.res.api_version(),
                t.res.kind
            ),
        ));
    }
    // The merge dropped the keys of explicit nulls; a map of strings keeps
    // them, as "" (see string_map_nulls).
    restore_string_map_nulls(
        &t.res,
        &raw_config,
        &mut applied.object,
        subresource_scope(t),
    );
    sync_last_applied(&c.manager, &raw_config, &mut applied.object);
    // A Secret's data key applied as null is stored as a nil []byte, which
    // the next write of the object re-encodes as an empty one: that write is
    // never a no-op (see write::update).
    // (A key of stringData replaces it with its own, non-nil, bytes.)
    let nil_bytes = t.res.class == Class::Secret
        && raw_config["data"].as_object().is_some_and(|d| {
            d.iter()
                .any(|(k, v)| v.is_null() && raw_config["stringData"].get(k).is_none())
        });
    // A custom resource's applied label or annotation null is stored as
    // null (and read as ""): the next write re-encodes it, as "".
    let nil_bytes = nil_bytes
        || (t.res.class == Class::Custom
            && !subresource_scope(t)
            && ["labels", "annotations"].iter().any(|k| {
                raw_config["metadata"][*k]
                    .as_object()
                    .is_some_and(|m| m.values().any(Value::is_null))
            }));
    let (code, stored) = match old {
        Some(old) => {
            let stored = write::update(
                inner,
                c,
                &old,
                applied.object,
                Ownership::Applied(applied.entries),
            )?;
            (200, stored)
        }
        None => {
            let stored = write::create(
                inner,
                c,
                t.namespace.as_deref(),
                applied.object,
                Ownership::Applied(applied.entries),
            )?;
            (201, stored)
        }
    };
    if nil_bytes && !c.dry_run {
        if let Some(uid) = stored["metadata"]["uid"].as_str() {
            inner.nil_bytes.insert(uid.to_string());
        }
    }
    Ok((code, external(&t.res, &stored)))
}

/// DeleteOptions from the body (or the query), checked as
/// `ValidateDeleteOptions` checks them.
fn delete_opts(r: &Req) -> Result<DeleteOpts, ApiError> {
    let mut opts = DeleteOpts::default();
    let mut dry_run: Vec<String> = dry_run_values(r).into_iter().map(String::from).collect();
    let mut policy = r.q("propagationPolicy").map(String::from);
    let mut orphan = r.q("orphanDependents").is_some();
    if !r.body.is_empty() {
        // With a body, kube-apiserver reads DeleteOptions from it alone:
        // the query's options are ignored.
        dry_run.clear();
        policy = None;
        orphan = false;
        let body: Value = serde_json::from_slice(&r.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        if let Some(d) = body["dryRun"].as_array() {
            dry_run = d
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
        }
        if let Some(p) = body["propagationPolicy"].as_str() {
            policy = Some(p.to_string());
        }
        orphan |= !body["orphanDependents"].is_null();
        opts.uid = body["preconditions"]["uid"].as_str().map(str::to_string);
        opts.resource_version = body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
    }
    let mut causes = vec![];
    if let Some(p) = &policy {
        if orphan {
            causes.push(option_cause(
                "FieldValueInvalid",
                "propagationPolicy",
                format!("Invalid value: \"{p}\": orphanDependents and deletionPropagation cannot be both set"),
            ));
        }
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            causes.push(option_cause(
                "FieldValueNotSupported",
                "propagationPolicy",
                format!("Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""),
            ));
        }
    }
    let values: Vec<&str> = dry_run.iter().map(String::as_str).collect();
    causes.extend(dry_run_causes(&values));
    if !causes.is_empty() {
        return Err(ApiError::options_invalid("DeleteOptions", causes));
    }
    opts.dry_run = values.contains(&"All");
    Ok(opts)
}

fn delete(inner: &mut Inner, t: &Target, r: &Req) -> Result<(u16, Value), ApiError> {
    if t.subresource.is_some() {
        return Err(ApiError::method_not_allowed("delete", &t.res.gr()));
    }
    let opts = delete_opts(r)?;
    let name = t.name.as_deref().unwrap_or_default();
    match write::delete(inner, &t.res, ns_str(t), name, &opts)? {
        Deleted::Gone(status) => Ok((200, status)),
        Deleted::Pending(obj) => Ok((200, external(&t.res, &obj))),
    }
}

fn delete_collection(inner: &mut Inner, t: &Target, r: &Req) -> Result<(u16, Value), ApiError> {
    let opts = delete_opts(r)?;
    let filter = Filter::from_request(t, r)?;
    let targets: Vec<Value> = inner
        .store
        .list(&t.res.storage, t.namespace.as_deref())
        .iter()
        .map(|o| external(&t.res, o))
        .filter(|o| filter.matches(o))
        .collect();
    let mut items = vec![];
    for o in targets {
        let (ns, name) = crate::store::object_key(&o);
        if let Ok(d) = write::delete(inner, &t.res, &ns, &name, &opts) {
            let mut obj = match d {
                Deleted::Gone(_) => o,
                Deleted::Pending(p) => external(&t.res, &p),
            };
            if t.res.class != Class::Custom {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("kind");
                    m.remove("apiVersion");
                }
            }
            items.push(obj);
        }
    }
    Ok((
        200,
        json!({"kind": t.res.list_kind(), "apiVersion": t.res.api_version(), "metadata": {"resourceVersion": inner.store.current_rv().to_string()}, "items": items}),
    ))
}
