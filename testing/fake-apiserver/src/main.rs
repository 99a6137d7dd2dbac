//! `fake-apiserver --listen 127.0.0.1:PORT --kubeconfig PATH`: runs the fake
//! server until interrupted and writes a kubeconfig for kubectl and kubestash.
//! With `--proxy-to KUBECONFIG` it serves no fake: it is the fault proxy
//! (plain HTTP on `--listen`) in front of the cluster of that kubeconfig,
//! with its credentials, for tools that speak plain HTTP to either backend.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// A fake Kubernetes API server for tests.
#[derive(Debug, Parser)]
#[command(name = "fake-apiserver", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write a kubeconfig pointing at the server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Log every request (method, path, status) to stderr.
    #[arg(long, env = "FAKE_APISERVER_LOG")]
    log_requests: bool,
    /// Proxy to the cluster of this kubeconfig instead of serving the fake.
    #[arg(long)]
    proxy_to: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(upstream) = &args.proxy_to {
        return proxy(upstream, &args).await;
    }
    let config = fake_apiserver::Config {
        addr: args.listen,
        log_requests: args.log_requests,
        ..Default::default()
    };
    let server = fake_apiserver::FakeApiServer::start_with(config).await?;
    if let Some(path) = &args.kubeconfig {
        server.write_kubeconfig(path)?;
    }
    println!("fake-apiserver listening on {}", server.url());
    tokio::signal::ctrl_c().await?;
    server.stop().await;
    Ok(())
}

async fn proxy(upstream: &std::path::Path, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let kubeconfig = kube::config::Kubeconfig::read_from(upstream)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let proxy = fake_apiserver::FaultProxy::start_on(args.listen, client).await?;
    if let Some(path) = &args.kubeconfig {
        proxy.write_kubeconfig(path)?;
    }
    println!(
        "fake-apiserver listening on {} (proxy to {})",
        proxy.url(),
        upstream.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
