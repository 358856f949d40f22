//! `livegate`: the admin CLI (keys, browser tokens, spend, doctor). Thin: see [`livegate::run`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = livegate::Args::parse();
    livegate_common::telemetry::init(&livegate_common::env::ProcessEnv);
    match livegate::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
