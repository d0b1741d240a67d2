//! The `pulse-account` binary: parses the command line, sets up logging, and runs the command.
//! Everything else lives in the library (`src/lib.rs`) so that tests drive the same code.

use clap::Parser;
use pulse_account::cli::{run, Cli};
use std::process::ExitCode;

/// mimalloc: the service allocates and frees small JSON values for every event it reads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    pulse_account::telemetry::init(cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
