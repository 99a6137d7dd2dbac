//! `kubestash run`: the HTTP server and the controller, together until
//! shutdown; with leader election, the controller only while this replica
//! leads.
//!
//! Losing the Lease (taken over, or not renewed within the renew deadline)
//! aborts the controller at once, cancelling whatever request is in flight,
//! and the process exits with an error: Kubernetes restarts it as a fresh
//! candidate, with nothing of the old leadership left (stream followers,
//! per-CredstashSync metrics that would go stale, the crate's belief that
//! it still holds the Lease). A graceful shutdown of the leader instead
//! lets the write batch in flight finish, then releases the Lease so that
//! a waiting replica takes over at once.

use std::future::Future;
use std::net::SocketAddr;

use futures::FutureExt;
use kube::Client;

use crate::controller::{self, Settings};
use crate::leader::{self, ElectionConfig, Lost, RenewalClock};
use crate::metrics::Metrics;
use crate::server::{self, Health, HealthConfig};

/// Why the operator could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("creating metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error("lost the leadership ({0}); stopped writing")]
    LostLease(Lost),
    #[error("the controller stopped while leading")]
    ControllerStopped,
}

/// Who this process is and whether it runs for leadership.
#[derive(Debug, Clone)]
pub struct Replica {
    /// Unique per process: User-Agent and Lease holder identity.
    pub identity: String,
    /// `None`: no election, this process always syncs.
    pub election: Option<ElectionConfig>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen` and runs the
/// controller (when electing, once this replica leads) until `shutdown`
/// resolves.
pub async fn run(
    listen: SocketAddr,
    settings: Settings,
    replica: Replica,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), RunError> {
    let metrics = Metrics::new()?;
    let health = Health::new(HealthConfig::default(), metrics.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: listen,
            source,
        })?;
    tracing::info!(%listen, identity = %replica.identity, "serving /metrics, /healthz and /readyz");
    let client = crate::kube_client::client(metrics.clone(), Some(&replica.identity)).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server_stop = wait_for(stop_rx.clone());
    let server = tokio::spawn(server::serve(
        listener,
        metrics.clone(),
        health.clone(),
        server_stop,
    ));
    let ran = match replica.election {
        None => {
            metrics.set_leader(true);
            controller::run(client, metrics, health, settings, shutdown).await;
            Ok(())
        }
        Some(election) => {
            let controller = Controller {
                client,
                metrics,
                health,
                settings,
            };
            run_elected(controller, election, shutdown).await
        }
    };
    let _ = stop_tx.send(true);
    let served = match server.await {
        Ok(result) => result.map_err(RunError::Serve),
        Err(join) => Err(RunError::Serve(std::io::Error::other(join))),
    };
    ran.and(served)
}

/// What the controller needs, kept until this replica leads.
struct Controller {
    client: Client,
    metrics: Metrics,
    health: Health,
    settings: Settings,
}

/// Campaigns, leads until `shutdown` or a loss, and on `shutdown` hands over.
async fn run_elected(
    controller: Controller,
    election: ElectionConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), RunError> {
    let shutdown = shutdown.shared();
    let metrics = controller.metrics.clone();
    let clock = RenewalClock::default();
    let lease_client =
        leader::lease_client(metrics.clone(), &election.identity, clock.clone()).await?;
    // A follower is ready: it serves its endpoints and can take over, and a
    // rolling update must be able to proceed while it waits.
    controller.health.set_ready(true);
    tracing::info!(identity = %election.identity, lease = %election.name, namespace = %election.namespace, "waiting to lead");
    let manager = tokio::select! {
        manager = leader::campaign(&lease_client, &election) => manager,
        () = shutdown.clone() => return Ok(()),
    };
    metrics.set_leader(true);
    tracing::info!(identity = %election.identity, lease = %election.name, "acquired the Lease: leading");
    let gate = controller.settings.write_gate.clone();
    let mut running = tokio::spawn(controller::run(
        controller.client,
        controller.metrics,
        controller.health,
        controller.settings,
        std::future::pending(),
    ));
    let timing = election.timing;
    let lost = leader::hold(&manager, &clock, &timing);
    tokio::pin!(lost);
    let outcome = tokio::select! {
        reason = &mut lost => Err(RunError::LostLease(reason)),
        _ = &mut running => Err(RunError::ControllerStopped),
        () = shutdown => {
            tracing::info!(in_flight = gate.batches_in_flight(), "stepping down: letting the write batch in flight finish");
            tokio::select! {
                reason = &mut lost => Err(RunError::LostLease(reason)),
                () = gate.close_and_drain() => Ok(()),
            }
        }
    };
    running.abort();
    let _ = running.await;
    metrics.set_leader(false);
    match &outcome {
        Err(RunError::LostLease(reason)) => {
            tracing::error!(identity = %election.identity, %reason, "lost the Lease: stopped writing; exiting so that a fresh process campaigns");
        }
        _ => match manager.release().await {
            Ok(()) => {
                tracing::info!(identity = %election.identity, lease = %election.name, "released the Lease")
            }
            Err(err) => {
                tracing::warn!(identity = %election.identity, error = %err, "could not release the Lease; another replica takes over when it expires")
            }
        },
    }
    outcome
}

async fn wait_for(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
