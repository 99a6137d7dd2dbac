//! `kubestash run`: the HTTP server and the controller, together until shutdown.

use std::future::Future;
use std::net::SocketAddr;

use crate::controller::{self, Settings};
use crate::metrics::Metrics;
use crate::server::{self, Health};

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
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen` and runs the
/// controller until `shutdown` resolves.
pub async fn run(
    listen: SocketAddr,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), RunError> {
    let metrics = Metrics::new()?;
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: listen,
            source,
        })?;
    tracing::info!(%listen, "serving /metrics, /healthz and /readyz");
    let client = crate::kube_client::client(metrics.clone()).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server_stop = wait_for(stop_rx.clone());
    let server = tokio::spawn(server::serve(
        listener,
        metrics.clone(),
        health.clone(),
        server_stop,
    ));
    controller::run(client, metrics, health, settings, shutdown).await;
    let _ = stop_tx.send(true);
    match server.await {
        Ok(result) => result.map_err(RunError::Serve),
        Err(join) => Err(RunError::Serve(std::io::Error::other(join))),
    }
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
