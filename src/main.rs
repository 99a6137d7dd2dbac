use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    kubestash::cli::run(kubestash::cli::Cli::parse()).await
}
