//! The Live API gateway's configuration: defaults, then the YAML file, then the environment.

use livegate_common::config::{ConfigError, FileConfig};
use livegate_common::env::{Env, EnvError, EnvExt};
use std::net::SocketAddr;

/// Address to listen on.
pub const LISTEN: &str = "GATEWAY_LISTEN";
/// Default for [`LISTEN`].
pub const DEFAULT_LISTEN: &str = "0.0.0.0:4000";

/// Why the configuration is unusable (the binary exits with `EX_USAGE`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable is set but invalid.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The YAML file is unreadable or invalid.
    #[error(transparent)]
    File(#[from] ConfigError),
}

/// Everything the Live API gateway needs, loaded once in `main` and passed down.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`GATEWAY_LISTEN`; port 0 binds an ephemeral port).
    pub listen: SocketAddr,
}

impl Config {
    /// Builds the configuration from the file and the environment (env wins).
    ///
    /// # Errors
    /// [`Error`] when a value is present but invalid.
    pub fn load(_file: &FileConfig, env: &impl Env) -> Result<Self, Error> {
        let listen = match env.parse::<SocketAddr>(LISTEN)? {
            Some(a) => a,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|e: std::net::AddrParseError| EnvError {
                    name: LISTEN.to_string(),
                    value: DEFAULT_LISTEN.to_string(),
                    reason: e.to_string(),
                })?,
        };
        Ok(Self { listen })
    }
}
