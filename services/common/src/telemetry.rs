//! `tracing` set-up shared by all binaries.
//!
//! - `LIVEGATE_LOG`: an `EnvFilter` directive (`debug`, `livegate_gateway=trace,info`, …);
//!   default `info`.
//! - `LITELLM_LOG=DEBUG` (LiteLLM's switch) is honoured when `LIVEGATE_LOG` is unset.
//! - `LIVEGATE_LOG_FORMAT`: `text` (default) or `json` (one object per line, for k8s).
//!
//! Logs go to stderr so that stdout stays free for command output (the CLI, the emulator's
//! "listening on" line).

use crate::env::{Env, EnvExt};
use tracing_subscriber::EnvFilter;

/// Log filter variable.
pub const LIVEGATE_LOG: &str = "LIVEGATE_LOG";
/// LiteLLM's log switch, honoured for drop-in compatibility.
pub const LITELLM_LOG: &str = "LITELLM_LOG";
/// `text` or `json`.
pub const LIVEGATE_LOG_FORMAT: &str = "LIVEGATE_LOG_FORMAT";

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The filter directive and format the environment asks for.
///
/// ```
/// use std::collections::HashMap;
/// use livegate_common::telemetry::{settings, Format};
/// let env = HashMap::from([("LITELLM_LOG".to_string(), "DEBUG".to_string())]);
/// assert_eq!(settings(&env), ("debug".to_string(), Format::Text));
/// ```
pub fn settings(env: &impl Env) -> (String, Format) {
    let directive = env
        .var(LIVEGATE_LOG)
        .or_else(|| env.var(LITELLM_LOG).map(|v| v.to_ascii_lowercase()))
        .unwrap_or_else(|| "info".to_string());
    let format = match env.var(LIVEGATE_LOG_FORMAT).as_deref() {
        Some(f) if f.eq_ignore_ascii_case("json") => Format::Json,
        _ => Format::Text,
    };
    (directive, format)
}

/// Installs the global subscriber. Calling it twice is harmless (the second call is a no-op),
/// which keeps in-process tests simple.
pub fn init(env: &impl Env) {
    let (directive, format) = settings(env);
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|e| {
        eprintln!("{LIVEGATE_LOG}={directive:?} is not a valid filter ({e}); using info");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        Format::Json => builder.json().flatten_event(true).try_init(),
        Format::Text => builder.try_init(),
    };
}
