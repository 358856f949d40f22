//! livegate's Live API gateway.
//!
//! - [`config`]: [`Config`], loaded once by `main`.
//! - [`run`]: serves on a bound listener until the shutdown future resolves.

pub mod config;

pub use config::Config;

use std::future::Future;
use tokio::net::TcpListener;

/// Serves on `listener` until `shutdown` resolves, then stops cleanly.
///
/// # Errors
/// Fails only when the listener itself fails.
pub async fn run(
    _config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "livegate-gateway listening on {addr}");
    shutdown.await;
    tracing::info!("livegate-gateway stopped");
    Ok(())
}
