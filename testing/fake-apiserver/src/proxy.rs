//! A fault-injecting proxy in front of a real kube-apiserver.
//!
//! The fake serves faults itself; a real API server does not, so tests on the
//! real control plane put this proxy between the client under test and
//! kube-apiserver. It counts requests and injects faults with the same
//! [`Fault`]s and [`RequestCounters`] as the fake, and it can end every
//! open watch at once, as a dropped connection or an API server restart
//! would. The client behind it speaks plain HTTP to 127.0.0.1; the proxy
//! forwards each request over TLS with the credentials of the kubeconfig it
//! was started with, so the real authorizer judges that identity.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use futures::StreamExt;
use http::{HeaderValue, Method};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::errors::ApiError;
use crate::faults::{Fault, FaultAction, FaultInjection, Faults, RequestCounters};
use crate::handlers::error_response;
use crate::server::Error;

/// Largest request body forwarded (kube-apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Headers a hop-by-hop proxy must not forward, and the credentials the
/// upstream client sets itself.
const NOT_FORWARDED: [&str; 7] = [
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "authorization",
];

struct ProxyState {
    upstream: kube::Client,
    faults: Mutex<Faults>,
    counters: Mutex<RequestCounters>,
    /// Bumped to end every open watch.
    watch_generation: watch::Sender<u64>,
    /// Watches being streamed now.
    open_watches: Arc<AtomicUsize>,
    /// How many watch requests to come are answered as expired.
    expiring: AtomicUsize,
}

/// Counts a watch as open while its response body lives.
struct OpenWatch(Arc<AtomicUsize>);

impl OpenWatch {
    fn new(open: &Arc<AtomicUsize>) -> OpenWatch {
        open.fetch_add(1, Ordering::SeqCst);
        OpenWatch(open.clone())
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running fault proxy; stops when dropped.
pub struct FaultProxy {
    state: Arc<ProxyState>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FaultProxy {
    /// Starts on a free 127.0.0.1 port, forwarding to `upstream`.
    pub async fn start(upstream: kube::Client) -> Result<FaultProxy, Error> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await
    }

    /// Starts on `addr`, forwarding to `upstream`.
    pub async fn start_on(addr: SocketAddr, upstream: kube::Client) -> Result<FaultProxy, Error> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (watch_generation, _) = watch::channel(0);
        let state = Arc::new(ProxyState {
            upstream,
            faults: Mutex::new(Faults::default()),
            counters: Mutex::new(RequestCounters::default()),
            watch_generation,
            open_watches: Arc::default(),
            expiring: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(forward).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FaultProxy { state, addr, task })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig that reaches the API server through this proxy.
    pub fn kubeconfig_yaml(&self) -> String {
        crate::kubeconfig::kubeconfig_yaml(&self.url())
    }

    /// Writes [`FaultProxy::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> RequestCounters {
        self.state.counters.lock().clone()
    }

    /// Zeroes the request counters.
    pub fn reset_counters(&self) {
        *self.state.counters.lock() = RequestCounters::default();
    }

    /// Makes the next `fault.count` matching requests fail or wait.
    pub fn inject_fault(&self, fault: Fault) {
        self.state.faults.lock().push(fault);
    }

    /// Drops all pending faults.
    pub fn clear_faults(&self) {
        self.state.faults.lock().clear();
    }

    /// Ends every watch that is open now, as a dropped connection would.
    pub fn drop_watches(&self) {
        self.state.watch_generation.send_modify(|g| *g += 1);
    }

    /// Ends every open watch and answers as many watch requests after it
    /// as kube-apiserver answers a watch resumed from a resourceVersion that
    /// etcd has compacted (200, then one ERROR event with a `410 Expired`
    /// Status): the clients must list again.
    pub fn expire_watches(&self) {
        let open = self.state.open_watches.load(Ordering::SeqCst);
        self.state.expiring.fetch_add(open, Ordering::SeqCst);
        self.drop_watches();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultInjection for FaultProxy {
    fn inject_fault(&self, fault: Fault) {
        FaultProxy::inject_fault(self, fault);
    }

    fn clear_faults(&self) {
        FaultProxy::clear_faults(self);
    }

    fn counters(&self) -> RequestCounters {
        FaultProxy::counters(self)
    }

    fn reset_counters(&self) {
        FaultProxy::reset_counters(self);
    }

    fn drop_watches(&self) {
        FaultProxy::drop_watches(self);
    }

    fn expire_watches(&self) {
        FaultProxy::expire_watches(self);
    }
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let kind = RequestKind::of(&parts.method, &parts.uri);
    let agent = parts
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Some(kind) = &kind {
        state.counters.lock().arrived(kind.verb, &kind.resource);
        let fault = state.faults.lock().take(kind.verb, &kind.resource, &agent);
        match fault {
            Some(FaultAction::Status(code)) => {
                state
                    .counters
                    .lock()
                    .record(kind.verb, &kind.resource, code, &agent);
                return error_response(&ApiError::for_code(code));
            }
            Some(FaultAction::Delay(delay)) => tokio::time::sleep(delay).await,
            None => {}
        }
        if kind.verb == "watch" && take_one(&state.expiring) {
            state
                .counters
                .lock()
                .record(kind.verb, &kind.resource, 200, &agent);
            return expired_watch();
        }
    }
    let response = match send(&state, parts, body).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    };
    if let Some(kind) = &kind {
        state.counters.lock().record(
            kind.verb,
            &kind.resource,
            response.status().as_u16(),
            &agent,
        );
        if kind.verb == "watch" {
            return until_watches_dropped(&state, response);
        }
    }
    response
}

async fn send(
    state: &ProxyState,
    parts: http::request::Parts,
    body: Body,
) -> Result<Response, ApiError> {
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| ApiError::new(413, "RequestEntityTooLarge", e.to_string()))?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut upstream = http::Request::builder()
        .method(parts.method.clone())
        .uri(path);
    for (name, value) in &parts.headers {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(body.to_vec())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let response = state
        .upstream
        .send(upstream.map(Into::into))
        .await
        .map_err(|e| ApiError::new(502, "BadGateway", format!("proxy: {e}")))?;
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Takes one from `counter` if it is not zero.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// A watch from a compacted resourceVersion, as kube-apiserver answers it.
fn expired_watch() -> Response {
    let status = ApiError::expired("too old resource version: expired by the fault proxy");
    let event = serde_json::json!({"type": "ERROR", "object": status.to_status()});
    let mut line = serde_json::to_vec(&event).unwrap_or_default();
    line.push(b'\n');
    let mut response = Response::new(Body::from(line));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The response, whose body ends when [`FaultProxy::drop_watches`] is called.
fn until_watches_dropped(state: &ProxyState, response: Response) -> Response {
    let mut generation = state.watch_generation.subscribe();
    generation.mark_unchanged();
    let dropped = async move {
        let _ = generation.changed().await;
    };
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts
        .headers
        .insert("x-kubestash-proxy", HeaderValue::from_static("watch"));
    let open = OpenWatch::new(&state.open_watches);
    let stream = body
        .into_data_stream()
        .take_until(dropped)
        // The watch counts as open for as long as its body streams.
        .inspect(move |_| {
            let _ = &open;
        });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// A request's verb and resource as kube-apiserver names them, read from its
/// method and path alone (`secrets`, `widgets/status`).
#[derive(Debug, Clone, PartialEq)]
struct RequestKind {
    verb: &'static str,
    resource: String,
}

impl RequestKind {
    /// `None` for paths that name no resource (discovery, `/version`,
    /// `/readyz`).
    fn of(method: &Method, uri: &http::Uri) -> Option<RequestKind> {
        let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
        let (core, mut rest) = match segments.as_slice() {
            ["api", _version, rest @ ..] => (true, rest),
            ["apis", _group, _version, rest @ ..] => (false, rest),
            _ => return None,
        };
        let mut watch_prefix = false;
        if rest.first() == Some(&"watch") {
            watch_prefix = true;
            rest = &rest[1..];
        }
        let namespace_status = core && rest.len() == 3 && matches!(rest[2], "status" | "finalize");
        if rest.first() == Some(&"namespaces") && rest.len() >= 3 && !namespace_status {
            rest = &rest[2..];
        }
        let (plural, name, subresource) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(*name), None),
            [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
            _ => return None,
        };
        let watch = watch_prefix
            || uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let verb = crate::handlers::verb(method, name.is_some(), watch)?;
        let resource = match subresource {
            Some(sub) => format!("{plural}/{sub}"),
            None => plural.to_owned(),
        };
        Some(RequestKind { verb, resource })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(method: Method, uri: &str) -> Option<(&'static str, String)> {
        RequestKind::of(&method, &uri.parse().unwrap()).map(|k| (k.verb, k.resource))
    }

    #[test]
    fn requests_are_named_as_kube_apiserver_names_them() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces",
                Some(("list", "namespaces")),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a",
                Some(("get", "namespaces")),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/a/finalize",
                Some(("update", "namespaces/finalize")),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/secrets",
                Some(("list", "secrets")),
            ),
            (
                Method::GET,
                "/api/v1/secrets?watch=true&x=1",
                Some(("watch", "secrets")),
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/a/secrets",
                Some(("watch", "secrets")),
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/a/secrets/s",
                Some(("patch", "secrets")),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/secrets",
                Some(("deletecollection", "secrets")),
            ),
            (
                Method::PATCH,
                "/apis/kubestash.io/v1alpha1/credstashsyncs/x/status",
                Some(("patch", "credstashsyncs/status")),
            ),
            (
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/k/leases",
                Some(("create", "leases")),
            ),
            (Method::GET, "/apis/apps/v1", None),
            (Method::GET, "/version", None),
        ];
        for (method, uri, expected) in cases {
            let expected = expected.map(|(v, r)| (v, r.to_owned()));
            assert_eq!(kind(method.clone(), uri), expected, "{method} {uri}");
        }
    }
}
