//! `fake-apiserver --listen 127.0.0.1:PORT --kubeconfig PATH`: runs the fake
//! server until interrupted and writes a kubeconfig for kubectl and kubestash.

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
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
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
