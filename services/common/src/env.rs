//! Environment access behind a trait, so configuration code is testable without `set_var`.
//!
//! ```
//! use std::collections::HashMap;
//! use livegate_common::env::{Env, EnvExt};
//! let env = HashMap::from([("NATS_URL".to_string(), "nats://127.0.0.1:4333".to_string())]);
//! assert_eq!(env.var("NATS_URL").as_deref(), Some("nats://127.0.0.1:4333"));
//! assert_eq!(env.var_or("AUTH_URL", "http://127.0.0.1:50051"), "http://127.0.0.1:50051");
//! ```

use std::collections::HashMap;
use std::str::FromStr;

/// Shared variable names (each service's own live in its `config.rs`; NATS credentials and
/// TLS in [`crate::nats`], which also reads this one).
pub const NATS_URL: &str = "NATS_URL";
/// Default for [`NATS_URL`].
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Path of the optional YAML config file.
pub const LIVEGATE_CONFIG: &str = "LIVEGATE_CONFIG";

/// A source of environment variables.
pub trait Env {
    /// The raw value, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place that reads the process environment"
    )]
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// A variable that is set but does not parse.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct EnvError {
    /// Variable name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Convenience readers on any [`Env`].
pub trait EnvExt: Env {
    /// The value, with empty strings treated as unset.
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }

    /// The value or a default.
    fn var_or(&self, name: &str, default: &str) -> String {
        self.var(name).unwrap_or_else(|| default.to_string())
    }

    /// Parses the value with [`FromStr`].
    ///
    /// # Errors
    /// [`EnvError`] when the variable is set but does not parse.
    fn parse<T>(&self, name: &str) -> Result<Option<T>, EnvError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.var(name) {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse()
                .map(Some)
                .map_err(|e: T::Err| EnvError {
                    name: name.to_string(),
                    reason: e.to_string(),
                    value,
                }),
        }
    }

    /// Parses a human duration (`10s`, `5m`, `1h 30m`), or returns `default` when unset.
    ///
    /// # Errors
    /// [`EnvError`] when the variable is set but is not a duration.
    fn duration(
        &self,
        name: &str,
        default: std::time::Duration,
    ) -> Result<std::time::Duration, EnvError> {
        match self.var(name) {
            None => Ok(default),
            Some(value) => humantime::parse_duration(value.trim()).map_err(|e| EnvError {
                name: name.to_string(),
                reason: e.to_string(),
                value,
            }),
        }
    }
}

impl<E: Env + ?Sized> EnvExt for E {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reports_name_and_value() {
        let env = HashMap::from([("N".to_string(), "x".to_string())]);
        let err = env.parse::<u32>("N").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("environment variable N=\"x\" is invalid: invalid digit found in string")
        );
        assert_eq!(env.parse::<u32>("M").ok(), Some(None));
    }

    #[test]
    fn empty_is_unset() {
        let env = HashMap::from([("E".to_string(), "  ".to_string())]);
        assert_eq!(env.var("E"), None);
    }
}
