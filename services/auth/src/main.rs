//! `livegate-auth`: parses configuration, sets up logging, binds, and calls [`livegate_auth::run`].

use clap::Parser;
use livegate_common::{config::FileConfig, service};
use std::{path::PathBuf, process::ExitCode};

/// livegate's auth service.
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
    // google-cloud-auth pulls rustls with aws-lc-rs, tonic with ring: pick one explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Boxed: the whole service's future is large, and main's stack should not hold it.
    Box::pin(service::main(
        "livegate-auth",
        |env| {
            FileConfig::discover(args.config.as_deref(), env)
                .map_err(livegate_auth::config::Error::from)
                .and_then(|file| livegate_auth::Config::load(&file, env))
        },
        |config| config.listen,
        livegate_auth::run,
    ))
    .await
}
