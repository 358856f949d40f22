//! `livegate`: the admin CLI. Thin: see [`livegate::run`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = livegate::Args::parse();
    // Logs go to stderr and stay quiet unless LIVEGATE_LOG asks for more.
    livegate_common::telemetry::init(&livegate_common::env::ProcessEnv);
    let mut stdout = std::io::stdout();
    match livegate::run(args, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
