use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    kubestash::allocator::limit_arenas();
    let cli = kubestash::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kubestash: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(kubestash::cli::run(cli))
}
