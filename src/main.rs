use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before the runtime starts its threads (see the allocator module).
    kubestash::allocator::configure();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("kubestash: could not start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(kubestash::cli::run(kubestash::cli::Cli::parse()))
}
