//! `livegate-gateway`: parses configuration, sets up logging, binds, and calls [`livegate_gateway::run`].

use clap::Parser;
use livegate_common::{config::FileConfig, service};
use std::{path::PathBuf, process::ExitCode};

/// livegate's Live API gateway.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// YAML config file (LiteLLM keys accepted); also `LIVEGATE_CONFIG`.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Each session holds two sockets: use the hard open-files limit, not the soft one.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // google-cloud-auth and tonic pull different rustls providers: pick one explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Boxed: the whole service's future is large, and main's stack should not hold it.
    Box::pin(service::main(
        "livegate-gateway",
        |env| {
            FileConfig::discover(args.config.as_deref(), env)
                .map_err(livegate_gateway::config::Error::from)
                .and_then(|file| livegate_gateway::Config::load(&file, env))
        },
        |config| config.listen,
        livegate_gateway::run,
    ))
    .await
}
