//! HTTP endpoints on one address: `/metrics` (Prometheus text), `/healthz`
//! (liveness) and `/readyz` (readiness).
//!
//! Liveness fails (503) only when the process is stuck, so that a restart
//! helps: a reconcile has run past its deadline (its `syncTimeout` plus
//! [`HealthConfig::grace`]; the timeout should have cancelled it, so it is
//! wedged), or the controller loop has ended ([`Health::controller_stopped`]).
//! A CredstashSync whose syncs time out again and again (an unreachable
//! table) does not fail liveness: it reports `SyncTimeout` in its own status,
//! and a restart would not reach the table but would stop every other
//! CredstashSync.
//!
//! Readiness is 503 until [`Health::set_ready`] and every watch cache in
//! [`CACHES`] has finished its first list ([`Health::set_cache_synced`]);
//! the body names the caches still missing and the last watch error of each
//! resource.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::{Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::metrics::{Metrics, CONTENT_TYPE};

/// The watch caches the controller needs before it may sync, by resource.
pub const CACHES: [&str; 3] = crate::metrics::WATCHED_RESOURCES;

/// Thresholds of the liveness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// How long a reconcile may run past its own timeout before it counts as
    /// wedged and `/healthz` fails. Default: 60 s, room for the cancelled
    /// work to unwind and for a status write after it.
    pub grace: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
struct Running {
    credstashsync: String,
    started: Instant,
    deadline: Instant,
}

#[derive(Debug)]
struct WatchError {
    message: String,
    count: u64,
    at: Instant,
}

#[derive(Debug, Default)]
struct HealthState {
    running: HashMap<u64, Running>,
    next_id: u64,
    stopped: Option<String>,
    ready: bool,
    /// Caches as last reported: `true` once listed.
    caches: BTreeMap<String, bool>,
    watch_errors: BTreeMap<String, WatchError>,
}

/// Health of the operator, fed by the controller, read by the probes.
/// Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Health {
    config: HealthConfig,
    metrics: Metrics,
    state: Arc<Mutex<HealthState>>,
}

/// A reconcile in progress, from [`Health::begin_reconcile`]; dropping it
/// marks the reconcile finished (also when its future is cancelled).
#[derive(Debug)]
#[must_use = "the reconcile counts as finished when the guard is dropped"]
pub struct ReconcileGuard {
    state: Arc<Mutex<HealthState>>,
    id: u64,
}

impl Drop for ReconcileGuard {
    fn drop(&mut self) {
        self.state.lock().running.remove(&self.id);
    }
}

impl Health {
    /// A live, not yet ready state that counts watch errors in `metrics`.
    pub fn new(config: HealthConfig, metrics: Metrics) -> Self {
        Self {
            config,
            metrics,
            state: Arc::default(),
        }
    }

    /// The thresholds in use.
    pub fn config(&self) -> HealthConfig {
        self.config
    }

    /// A reconcile of `credstashsync` starts; it may run for `timeout` (its
    /// `syncTimeout`) plus [`HealthConfig::grace`] before liveness fails.
    /// Hold the guard for as long as the work runs.
    pub fn begin_reconcile(&self, credstashsync: &str, timeout: Duration) -> ReconcileGuard {
        let started = Instant::now();
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.running.insert(
            id,
            Running {
                credstashsync: credstashsync.to_owned(),
                started,
                deadline: started + timeout + self.config.grace,
            },
        );
        ReconcileGuard {
            state: self.state.clone(),
            id,
        }
    }

    /// The controller loop has ended (or a watch it cannot run without):
    /// liveness fails from now on with `reason`.
    pub fn controller_stopped(&self, reason: &str) {
        self.lock().stopped.get_or_insert_with(|| reason.to_owned());
    }

    /// Marks the operator ready (controller running) or not. Once the
    /// controller reports any cache ([`Self::set_cache_synced`]), `/readyz`
    /// also waits for every cache in [`CACHES`]; a controller that reports
    /// none is ready on this call alone.
    pub fn set_ready(&self, ready: bool) {
        self.lock().ready = ready;
    }

    /// Whether the watch cache of `resource` (one of [`CACHES`]) has finished
    /// a complete list. A completed (re)list also clears its last watch error.
    pub fn set_cache_synced(&self, resource: &str, synced: bool) {
        let mut state = self.lock();
        state.caches.insert(resource.to_owned(), synced);
        if synced {
            state.watch_errors.remove(resource);
        }
    }

    /// A watch or list of `resource` failed (RBAC denied, API down...): shown
    /// in the `/readyz` body until the cache lists again, and counted in
    /// `kubestash_watch_errors_total{resource}`.
    pub fn record_watch_error(&self, resource: &str, message: &str) {
        self.metrics.record_watch_error(resource);
        let now = Instant::now();
        let mut state = self.lock();
        let entry = state
            .watch_errors
            .entry(resource.to_owned())
            .or_insert_with(|| WatchError {
                message: String::new(),
                count: 0,
                at: now,
            });
        entry.message = message.to_owned();
        entry.count += 1;
        entry.at = now;
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// `Ok` with notes (the watch errors, may be empty) when ready, else why
    /// not: the `/readyz` body.
    pub fn readiness(&self) -> Result<String, String> {
        let state = self.lock();
        let now = Instant::now();
        let mut notes = String::new();
        for (resource, error) in &state.watch_errors {
            notes.push_str(&format!(
                "watch error on {resource} ({} in a row, last {}s ago): {}\n",
                error.count,
                now.saturating_duration_since(error.at).as_secs(),
                error.message
            ));
        }
        let missing: Vec<&str> = CACHES
            .into_iter()
            .filter(|c| state.caches.get(*c) != Some(&true))
            .collect();
        let caches_reported = !state.caches.is_empty();
        if state.ready && (missing.is_empty() || !caches_reported) {
            return Ok(notes);
        }
        if missing.is_empty() {
            return Err(format!("the controller is not running yet\n{notes}"));
        }
        Err(format!(
            "waiting for the first complete list of: {}\n{notes}",
            missing.join(", ")
        ))
    }

    /// `Ok` when live, else why not (the `/healthz` body).
    pub fn liveness(&self) -> Result<(), String> {
        self.liveness_at(Instant::now())
    }

    fn liveness_at(&self, now: Instant) -> Result<(), String> {
        let state = self.lock();
        if let Some(reason) = &state.stopped {
            return Err(format!("the controller stopped: {reason}"));
        }
        let wedged = state
            .running
            .values()
            .filter(|r| now > r.deadline)
            .min_by_key(|r| r.started);
        match wedged {
            Some(r) => Err(format!(
                "the reconcile of CredstashSync {} has run for {}s, {}s past its deadline (syncTimeout + {}s grace): it is wedged",
                r.credstashsync,
                now.saturating_duration_since(r.started).as_secs(),
                now.saturating_duration_since(r.deadline).as_secs(),
                self.config.grace.as_secs()
            )),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HealthState> {
        self.state.lock()
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Health,
}

/// The router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .route("/readyz", get(readyz_handler))
        .with_state(AppState { metrics, health })
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_handler(State(app): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], app.metrics.encode()).into_response()
}

async fn healthz_handler(State(app): State<AppState>) -> Response {
    match app.health.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "liveness check failing");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: {reason}\n"),
            )
                .into_response()
        }
    }
}

async fn readyz_handler(State(app): State<AppState>) -> Response {
    match app.health.readiness() {
        Ok(notes) => (StatusCode::OK, format!("ready\n{notes}")).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SYNC_TIMEOUT: Duration = Duration::from_secs(300);

    fn health() -> Health {
        Health::new(HealthConfig::default(), Metrics::new().unwrap())
    }

    fn synced_and_ready(h: &Health) {
        for cache in CACHES {
            h.set_cache_synced(cache, true);
        }
        h.set_ready(true);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_past_its_timeout_and_grace_is_wedged() {
        let h = health();
        let guard = h.begin_reconcile("slow", SYNC_TIMEOUT);
        tokio::time::advance(SYNC_TIMEOUT + Duration::from_secs(60)).await;
        assert_eq!(h.liveness(), Ok(()), "within timeout + grace");
        tokio::time::advance(Duration::from_secs(1)).await;
        let reason = h.liveness().unwrap_err();
        assert!(
            reason.contains("CredstashSync slow has run for 361s, 1s past its deadline"),
            "{reason}"
        );
        drop(guard);
        assert_eq!(h.liveness(), Ok(()), "a finished reconcile is not wedged");
    }

    #[tokio::test(start_paused = true)]
    async fn a_table_that_times_out_again_and_again_keeps_the_process_live() {
        let h = health();
        for _ in 0..20 {
            let _guard = h.begin_reconcile("unreachable", Duration::from_secs(5));
            let unreachable = std::future::pending::<()>();
            let result = tokio::time::timeout(Duration::from_secs(5), unreachable).await;
            assert!(result.is_err());
            let _other = h.begin_reconcile("healthy", Duration::from_secs(5));
            assert_eq!(h.liveness(), Ok(()));
        }
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(h.liveness(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_reconcile_counts_as_finished() {
        let h = health();
        let task = tokio::spawn({
            let h = h.clone();
            async move {
                let _guard = h.begin_reconcile("cancelled", Duration::from_secs(5));
                std::future::pending::<()>().await;
            }
        });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(h.liveness().is_err(), "running past the deadline");
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(h.liveness(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_wedged_reconcile_is_named() {
        let h = health();
        let _short = h.begin_reconcile("short", Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(60)).await;
        let _long = h.begin_reconcile("long", SYNC_TIMEOUT);
        tokio::time::advance(Duration::from_secs(11)).await;
        let reason = h.liveness().unwrap_err();
        assert!(reason.contains("CredstashSync short "), "{reason}");
        assert!(!reason.contains("long"), "{reason}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_controller_is_not_live() {
        let h = health();
        h.controller_stopped("the CredstashSync watch ended");
        h.controller_stopped("a later reason");
        assert_eq!(
            h.liveness(),
            Err("the controller stopped: the CredstashSync watch ended".into())
        );
    }

    #[tokio::test]
    async fn readiness_names_the_caches_still_missing() {
        let h = health();
        let reason = h.readiness().unwrap_err();
        assert!(
            reason.starts_with(
                "waiting for the first complete list of: namespaces, secrets, credstashsyncs"
            ),
            "{reason}"
        );
        h.set_ready(true);
        assert_eq!(
            h.readiness(),
            Ok(String::new()),
            "a controller that reports no cache is ready when it says so"
        );
        h.set_cache_synced("secrets", true);
        h.set_cache_synced("credstashsyncs", true);
        let reason = h.readiness().unwrap_err();
        assert!(
            reason.starts_with("waiting for the first complete list of: namespaces\n"),
            "{reason}"
        );
        h.set_cache_synced("namespaces", true);
        assert_eq!(h.readiness(), Ok(String::new()));
        h.set_ready(false);
        let reason = h.readiness().unwrap_err();
        assert!(reason.contains("not running"), "{reason}");
    }

    #[tokio::test(start_paused = true)]
    async fn watch_errors_are_shown_counted_and_cleared_by_a_new_list() {
        let metrics = Metrics::new().unwrap();
        let h = Health::new(HealthConfig::default(), metrics.clone());
        synced_and_ready(&h);
        h.set_cache_synced("secrets", false);
        h.record_watch_error("secrets", "secrets is forbidden: User cannot list");
        tokio::time::advance(Duration::from_secs(30)).await;
        h.record_watch_error("secrets", "secrets is forbidden: User cannot watch");
        tokio::time::advance(Duration::from_secs(12)).await;
        let reason = h.readiness().unwrap_err();
        assert!(
            reason.contains("watch error on secrets (2 in a row, last 12s ago): secrets is forbidden: User cannot watch"),
            "{reason}"
        );
        assert!(metrics
            .encode()
            .contains("kubestash_watch_errors_total{resource=\"secrets\"} 2"));
        h.record_watch_error("namespaces", "connection refused");
        let notes = h.readiness().unwrap_err();
        assert!(notes.contains("watch error on namespaces"), "{notes}");
        h.set_cache_synced("secrets", true);
        let notes = h.readiness().expect("every cache listed");
        assert!(
            !notes.contains("secrets"),
            "cleared by the new list: {notes}"
        );
        assert!(notes.contains("namespaces (1 in a row"), "{notes}");
    }

    #[tokio::test]
    async fn clones_share_state() {
        let h = health();
        let other = h.clone();
        other.controller_stopped("ended");
        synced_and_ready(&other);
        assert!(h.liveness().is_err());
        assert!(h.is_ready());
    }

    /// A minimal HTTP/1.1 GET; returns status code and body.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    #[tokio::test]
    async fn serves_the_three_paths_and_shuts_down() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new().unwrap();
        metrics.kms_cache_hits(1);
        let h = health();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics, h.clone(), async {
            let _ = stopped.await;
        }));

        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(body.contains("kubestash_kms_cache_hits_total 1"), "{body}");

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(
            body.starts_with("not ready: waiting for the first complete list of: namespaces"),
            "{body}"
        );
        synced_and_ready(&h);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ready\n"));
        h.controller_stopped("the controller loop ended");
        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!(status, 503);
        assert!(body.contains("the controller loop ended"), "{body}");
        assert_eq!(get(addr, "/nope").await.0, 404);

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops on shutdown")
            .unwrap()
            .unwrap();
    }
}
