//! What every service binary does between parsing its arguments and serving: logging (and
//! traces, when configured), the configuration, the listener, running until SIGTERM or SIGINT, and the exit code.

use crate::{env::ProcessEnv, shutdown, telemetry};
use std::fmt::{Debug, Display};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use tokio::net::TcpListener;

/// sysexits' EX_USAGE: the configuration is wrong.
pub const EX_USAGE: u8 = 64;

/// Resolves on SIGTERM or SIGINT ([`shutdown::signal`]).
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Sets up logging from the environment, loads the configuration with `load` (an invalid one
/// is logged and exits with [`EX_USAGE`]), binds `listen(&config)` and awaits
/// `run(config, listener, shutdown)`. A failed bind or run is logged (the run's error with its
/// cause chain, naming the binary `name`) and exits with 1.
pub async fn main<C, E, R, RE>(
    name: &str,
    load: impl FnOnce(&ProcessEnv) -> Result<C, E>,
    listen: impl FnOnce(&C) -> SocketAddr,
    run: impl FnOnce(C, TcpListener, Shutdown) -> R,
) -> ExitCode
where
    E: Display,
    R: Future<Output = Result<(), RE>>,
    RE: Display + Debug,
{
    let env = ProcessEnv;
    let traces = telemetry::init_with_traces(&env, name);
    let code = serve(load, listen, run, name, &env).await;
    traces.shutdown().await;
    code
}

async fn serve<C, E, R, RE>(
    load: impl FnOnce(&ProcessEnv) -> Result<C, E>,
    listen: impl FnOnce(&C) -> SocketAddr,
    run: impl FnOnce(C, TcpListener, Shutdown) -> R,
    name: &str,
    env: &ProcessEnv,
) -> ExitCode
where
    E: Display,
    R: Future<Output = Result<(), RE>>,
    RE: Display + Debug,
{
    let config = match load(env) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error.message = %e, "invalid configuration");
            return ExitCode::from(EX_USAGE);
        }
    };
    let addr = listen(&config);
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error.message = %e, %addr, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    match run(config, listener, Box::pin(shutdown::signal())).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.message = %e, error.cause_chain = ?e, "{name} failed");
            ExitCode::FAILURE
        }
    }
}
