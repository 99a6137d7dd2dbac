//! Watches: replay from the event log, initial events, bookmarks, label/field
//! filtering with ADDED/DELETED transitions, Table rendering, timeouts and the
//! `410 Expired` ERROR event for too-old resourceVersions.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::errors::ApiError;
use crate::handlers::{core_view, error_response, render_mode, Filter, Render, Req, Target};
use crate::resources::Class;
use crate::server::Shared;
use crate::store::{EventType, LogEntry};
use crate::table;
use crate::write::external;

/// Parameters of one watch.
struct WatchSpec {
    target: Target,
    filter: Filter,
    bookmarks: bool,
    send_initial: bool,
    timeout: Duration,
    render: Render,
}

enum Start {
    Initial(Vec<Value>),
    Backlog(Vec<Arc<LogEntry>>),
    TooOld(u64, u64),
}

/// Serves a watch request as a stream of JSON lines.
pub fn watch(shared: Arc<Shared>, t: &Target, r: &Req) -> Response {
    match prepare(&shared, t, r) {
        Ok((spec, start, start_rv, rx)) => {
            let (tx, out) = mpsc::channel::<Result<Bytes, Infallible>>(256);
            let ends = Ends {
                shutdown: shared.shutdown.clone(),
                dropped: shared.watch_drops.subscribe(),
            };
            let interval = shared.config.bookmark_interval;
            tokio::spawn(run(spec, start, start_rv, rx, tx, ends, interval));
            let stream = futures::stream::unfold(out, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            let mut resp = Response::new(Body::from_stream(stream));
            *resp.status_mut() = StatusCode::OK;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => error_response(&e),
    }
}

type Prepared = (WatchSpec, Start, u64, broadcast::Receiver<Arc<LogEntry>>);

fn prepare(shared: &Shared, t: &Target, r: &Req) -> Result<Prepared, ApiError> {
    let send_initial = r.q("sendInitialEvents").is_some_and(|v| v == "true");
    let bookmarks = r.flag("allowWatchBookmarks");
    crate::handlers::validate_list_options(r, true)?;
    let filter = Filter::from_request(t, r)?;
    let timeout = match r.q("timeoutSeconds").filter(|s| !s.is_empty()) {
        Some(s) => Duration::from_secs(s.parse::<u64>().map_err(|_| {
            // Decoding the query into ListOptions (Go's strconv).
            ApiError::bad_request(format!("strconv.ParseInt: parsing \"{s}\": invalid syntax"))
        })?),
        None => shared.config.default_watch_timeout,
    };
    let rv_param = r.q("resourceVersion").unwrap_or_default();
    let inner = shared.inner();
    let current = inner.store.current_rv();
    let start = if send_initial || rv_param.is_empty() || rv_param == "0" {
        let items = inner
            .store
            .list(&t.res.storage, t.namespace.as_deref())
            .iter()
            .map(|o| external(&t.res, o))
            .filter(|o| filter.matches(o))
            .collect();
        (Start::Initial(items), current)
    } else {
        // The watch cache's parse error reaches the client as a 500.
        let rv = crate::handlers::parse_resource_version(rv_param)
            .map_err(|e| ApiError::new(500, "", e))?;
        match inner.store.events_since(rv) {
            Some(backlog) => (Start::Backlog(backlog), rv),
            // The watch cache names the oldest resourceVersion it can
            // still watch from.
            None => (Start::TooOld(rv, inner.store.compacted_rv()), rv),
        }
    };
    let rx = inner.store.subscribe();
    let spec = WatchSpec {
        target: t.clone(),
        filter,
        bookmarks,
        send_initial,
        timeout,
        render: render_mode(r),
    };
    Ok((spec, start.0, start.1, rx))
}

struct Emitter {
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    headers_sent: bool,
}

impl Emitter {
    async fn line(&mut self, v: Value) -> bool {
        let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
        bytes.push(b'\n');
        self.tx.send(Ok(Bytes::from(bytes))).await.is_ok()
    }

    async fn event(&mut self, spec: &WatchSpec, kind: &str, obj: Value) -> bool {
        let object = match spec.render {
            Render::Table(inc) => {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let res = &spec.target.res;
                let t = table::table(res, &[obj], &rv, inc, !self.headers_sent, &|o| {
                    core_view(res, o)
                });
                self.headers_sent = true;
                t
            }
            Render::Partial => table::partial_metadata(&obj),
            Render::Json => obj,
        };
        self.line(json!({"type": kind, "object": object})).await
    }

    async fn bookmark(&mut self, spec: &WatchSpec, rv: u64, initial_end: bool) -> bool {
        let res = &spec.target.res;
        let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.line(json!({"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta}})).await
    }
}

/// The event a watcher sees for a log entry, after filtering.
fn view(spec: &WatchSpec, e: &LogEntry) -> Option<(&'static str, Value)> {
    let res = &spec.target.res;
    if e.storage != res.storage {
        return None;
    }
    let new = external(res, &e.object);
    let new_ok = spec.filter.matches(&new);
    let old_ok = e
        .old
        .as_ref()
        .map(|o| spec.filter.matches(&external(res, o)))
        .unwrap_or(false);
    match e.kind {
        EventType::Added => new_ok.then_some(("ADDED", new)),
        EventType::Deleted => new_ok.then_some(("DELETED", new)),
        EventType::Modified => match (old_ok, new_ok) {
            (true, true) => Some(("MODIFIED", new)),
            (false, true) => Some(("ADDED", new)),
            (true, false) => {
                let mut old = e.old.as_ref().map(|o| external(res, o)).unwrap_or(new);
                old["metadata"]["resourceVersion"] = json!(e.rv.to_string());
                Some(("DELETED", old))
            }
            (false, false) => None,
        },
    }
}

/// What ends a watch besides its timeout and its client.
struct Ends {
    /// The server stops.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// [`crate::FakeApiServer::drop_watches`] was called.
    dropped: tokio::sync::watch::Receiver<u64>,
}

async fn run(
    spec: WatchSpec,
    start: Start,
    start_rv: u64,
    mut rx: broadcast::Receiver<Arc<LogEntry>>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    mut ends: Ends,
    interval: Duration,
) {
    if *ends.shutdown.borrow() {
        return;
    }
    let mut em = Emitter {
        tx,
        headers_sent: false,
    };
    let mut last_rv = start_rv;
    match start {
        Start::TooOld(requested, oldest) => {
            // Events have no watch cache in kube-apiserver: their watches
            // read etcd, which words it differently from the watch cache.
            let message = if matches!(
                spec.target.res.class,
                Class::CoreEvent | Class::EventsV1Event
            ) {
                "The resourceVersion for the provided watch is too old.".to_string()
            } else {
                format!("too old resource version: {requested} ({oldest})")
            };
            let status = ApiError::expired(message).to_status();
            em.line(json!({"type": "ERROR", "object": status})).await;
            return;
        }
        Start::Initial(items) => {
            for o in items {
                if !em.event(&spec, "ADDED", o).await {
                    return;
                }
            }
            if spec.send_initial && spec.bookmarks && !em.bookmark(&spec, start_rv, true).await {
                return;
            }
        }
        Start::Backlog(entries) => {
            for e in entries {
                last_rv = last_rv.max(e.rv);
                if let Some((kind, obj)) = view(&spec, &e) {
                    if !em.event(&spec, kind, obj).await {
                        return;
                    }
                }
            }
        }
    }
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = ends.shutdown.changed() => break,
            _ = ends.dropped.changed() => break,
            _ = ticker.tick(), if spec.bookmarks => {
                if !em.bookmark(&spec, last_rv, false).await {
                    break;
                }
            }
            msg = rx.recv() => match msg {
                Ok(e) => {
                    if e.rv <= last_rv {
                        continue;
                    }
                    last_rv = e.rv;
                    if let Some((kind, obj)) = view(&spec, &e) {
                        if !em.event(&spec, kind, obj).await {
                            break;
                        }
                    }
                }
                Err(_) => break,
            },
            _ = em.tx.closed() => break,
        }
    }
}
