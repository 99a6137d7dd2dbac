//! HTTP endpoints on one address: `/metrics` (Prometheus text), `/healthz`
//! (liveness) and `/readyz` (readiness).
//!
//! Liveness fails (503) after [`HealthConfig::max_consecutive_timeouts`] sync
//! timeouts in a row, or when the controller has not sent a heartbeat for
//! [`HealthConfig::stall_after`]: Kubernetes then restarts the pod, as the
//! design promises for hangs. Readiness is 503 until [`Health::set_ready`].

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::metrics::{Metrics, CONTENT_TYPE};

/// Thresholds of the liveness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive sync timeouts after which `/healthz` fails. Default: 3.
    pub max_consecutive_timeouts: u32,
    /// Heartbeat age after which the controller counts as stalled and
    /// `/healthz` fails. Default: 10 minutes; the controller must beat well
    /// within it (its loop beats independently of running syncs).
    pub stall_after: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            max_consecutive_timeouts: 3,
            stall_after: Duration::from_secs(600),
        }
    }
}

#[derive(Debug)]
struct HealthState {
    consecutive_timeouts: u32,
    last_heartbeat: Instant,
    ready: bool,
}

/// Health of the operator, fed by the controller, read by the probes.
/// Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Health {
    config: HealthConfig,
    state: Arc<Mutex<HealthState>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(HealthConfig::default())
    }
}

impl Health {
    /// A live, not yet ready state; the stall clock starts now.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            state: Arc::new(Mutex::new(HealthState {
                consecutive_timeouts: 0,
                last_heartbeat: Instant::now(),
                ready: false,
            })),
        }
    }

    /// The thresholds in use.
    pub fn config(&self) -> HealthConfig {
        self.config
    }

    /// A sync was cancelled after its timeout.
    pub fn record_sync_timeout(&self) {
        let mut state = self.lock();
        state.consecutive_timeouts = state.consecutive_timeouts.saturating_add(1);
    }

    /// A sync finished (successfully or not, but without timing out): the
    /// run of consecutive timeouts is over.
    pub fn record_sync_completed(&self) {
        self.lock().consecutive_timeouts = 0;
    }

    /// The controller loop is alive.
    pub fn controller_heartbeat(&self) {
        self.lock().last_heartbeat = Instant::now();
    }

    /// Marks the operator ready (caches synced, controller running) or not.
    pub fn set_ready(&self, ready: bool) {
        self.lock().ready = ready;
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.lock().ready
    }

    /// `Ok` when live, else why not (the `/healthz` body).
    pub fn liveness(&self) -> Result<(), String> {
        self.liveness_at(Instant::now())
    }

    fn liveness_at(&self, now: Instant) -> Result<(), String> {
        let state = self.lock();
        let max = self.config.max_consecutive_timeouts;
        if state.consecutive_timeouts >= max {
            return Err(format!(
                "{} consecutive sync timeouts (limit {max})",
                state.consecutive_timeouts
            ));
        }
        let age = now.saturating_duration_since(state.last_heartbeat);
        if age > self.config.stall_after {
            return Err(format!(
                "controller stalled: no heartbeat for {}s (limit {}s)",
                age.as_secs(),
                self.config.stall_after.as_secs()
            ));
        }
        Ok(())
    }

    /// The state stays consistent even if a holder panicked (plain values).
    fn lock(&self) -> MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
    if app.health.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn health(max_timeouts: u32, stall_secs: u64) -> Health {
        Health::new(HealthConfig {
            max_consecutive_timeouts: max_timeouts,
            stall_after: Duration::from_secs(stall_secs),
        })
    }

    #[test]
    fn defaults_are_three_timeouts_and_ten_minutes() {
        let c = HealthConfig::default();
        assert_eq!(c.max_consecutive_timeouts, 3);
        assert_eq!(c.stall_after, Duration::from_secs(600));
    }

    #[tokio::test]
    async fn consecutive_timeouts_make_it_unhealthy_until_a_sync_completes() {
        let h = health(3, 600);
        assert_eq!(h.liveness(), Ok(()));
        h.record_sync_timeout();
        h.record_sync_timeout();
        assert_eq!(h.liveness(), Ok(()));
        h.record_sync_completed();
        h.record_sync_timeout();
        h.record_sync_timeout();
        assert_eq!(
            h.liveness(),
            Ok(()),
            "the run restarted after a completed sync"
        );
        h.record_sync_timeout();
        let reason = h.liveness().unwrap_err();
        assert!(reason.contains("3 consecutive sync timeouts"), "{reason}");
        h.record_sync_completed();
        assert_eq!(h.liveness(), Ok(()));
    }

    #[tokio::test]
    async fn stalled_heartbeat_makes_it_unhealthy() {
        let h = health(3, 60);
        let start = Instant::now();
        assert_eq!(h.liveness_at(start + Duration::from_secs(59)), Ok(()));
        let reason = h.liveness_at(start + Duration::from_secs(61)).unwrap_err();
        assert!(reason.contains("stalled"), "{reason}");
        h.controller_heartbeat();
        let beat = Instant::now();
        assert_eq!(h.liveness_at(beat + Duration::from_secs(59)), Ok(()));
        assert!(h.liveness_at(beat + Duration::from_secs(120)).is_err());
    }

    #[tokio::test]
    async fn clones_share_state() {
        let h = health(1, 600);
        let other = h.clone();
        other.record_sync_timeout();
        other.set_ready(true);
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
        metrics.kms_cache_hit();
        let h = health(1, 600);
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
        assert_eq!(get(addr, "/readyz").await.0, 503);
        h.set_ready(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        h.record_sync_timeout();
        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!(status, 503);
        assert!(body.contains("consecutive sync timeouts"), "{body}");
        assert_eq!(get(addr, "/nope").await.0, 404);

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops on shutdown")
            .unwrap()
            .unwrap();
    }
}
