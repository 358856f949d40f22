//! `livegate-metering`: parses configuration, sets up logging, binds, and calls [`livegate_metering::run`].

use clap::Parser;
use livegate_common::{config::FileConfig, env::ProcessEnv, shutdown, telemetry};
use std::{path::PathBuf, process::ExitCode};

/// livegate's metering service.
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
    // With the whole workspace built, rustls has two providers compiled in and cannot pick
    // one itself (a `tls://` NATS URL would panic): pick ring explicitly, as every binary does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = ProcessEnv;
    telemetry::init(&env);
    let config = match FileConfig::discover(args.config.as_deref(), &env)
        .map_err(livegate_metering::config::Error::from)
        .and_then(|file| livegate_metering::Config::load(&file, &env))
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
    match livegate_metering::run(config, listener, shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.message = %e, error.cause_chain = ?e, "livegate-metering failed");
            ExitCode::FAILURE
        }
    }
}
