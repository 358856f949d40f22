//! `livegate-gateway`: parses configuration, sets up logging, binds, and calls [`livegate_gateway::run`].

use clap::Parser;
use livegate_common::{config::FileConfig, env::ProcessEnv, shutdown, telemetry};
use std::{path::PathBuf, process::ExitCode};

/// livegate's Live API gateway.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// YAML config file (LiteLLM keys accepted); also `LIVEGATE_CONFIG`.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// sysexits' EX_USAGE: the configuration is wrong.
const EX_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Each session holds two sockets: use the hard open-files limit, not the soft one.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // google-cloud-auth and tonic pull different rustls providers: pick one explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = ProcessEnv;
    telemetry::init(&env);
    let config = match FileConfig::discover(args.config.as_deref(), &env)
        .map_err(livegate_gateway::config::Error::from)
        .and_then(|file| livegate_gateway::Config::load(&file, &env))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error.message = %e, "invalid configuration");
            return ExitCode::from(EX_USAGE);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error.message = %e, addr = %config.listen, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    match livegate_gateway::run(config, listener, shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.message = %e, error.cause_chain = ?e, "livegate-gateway failed");
            ExitCode::FAILURE
        }
    }
}
