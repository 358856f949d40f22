//! `tracing` set-up shared by all binaries.
//!
//! - `LIVEGATE_LOG`: an `EnvFilter` directive (`debug`, `livegate_gateway=trace,info`, …);
//!   default `info`.
//! - `LITELLM_LOG=DEBUG` (LiteLLM's switch) is honoured when `LIVEGATE_LOG` is unset.
//! - `LIVEGATE_LOG_FORMAT`: `text` (default) or `json` (one object per line, for k8s).
//!
//! Whatever the filter, dependencies log at most `info` ([`DEPENDENCY_LOG_CAP`]): several
//! of them log raw requests and frames, secrets included, at `debug`/`trace`.
//!
//! Logs go to stderr so that stdout stays free for command output (the CLI, the emulator's
//! "listening on" line).

use crate::env::{Env, EnvExt};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::combinator::And;
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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

/// The most any target outside livegate's own crates may log, whatever `LIVEGATE_LOG` says.
///
/// Dependencies log what passes through them at `debug` and `trace`: tungstenite the whole
/// upstream handshake request (with the Google access token) and every frame, h2 and hyper
/// headers (API keys, the internal token), async-nats message payloads (key records). A
/// gateway holds other people's credentials, so those levels are cut off at the source;
/// livegate's own targets (`livegate…`) keep every level and never log a secret.
pub const DEPENDENCY_LOG_CAP: LevelFilter = LevelFilter::INFO;

/// The filter that enforces [`DEPENDENCY_LOG_CAP`].
///
/// ```
/// use livegate_common::telemetry::dependency_cap;
/// use tracing::Level;
/// let cap = dependency_cap();
/// assert!(cap.would_enable("livegate_gateway::ws", &Level::TRACE));
/// assert!(!cap.would_enable("tungstenite::handshake::client", &Level::TRACE));
/// assert!(!cap.would_enable("h2::codec", &Level::DEBUG));
/// assert!(cap.would_enable("async_nats", &Level::INFO));
/// ```
pub fn dependency_cap() -> Targets {
    Targets::new()
        .with_default(DEPENDENCY_LOG_CAP)
        .with_target("livegate", LevelFilter::TRACE)
}

/// The filter [`init`] installs: `directive` (`info` when it does not parse) and, whatever it
/// says, [`dependency_cap`].
pub fn filter<S>(directive: &str) -> And<EnvFilter, Targets, S> {
    let filter = EnvFilter::try_new(directive).unwrap_or_else(|e| {
        eprintln!("{LIVEGATE_LOG}={directive:?} is not a valid filter ({e}); using info");
        EnvFilter::new("info")
    });
    filter.and(dependency_cap())
}

/// Installs the global subscriber. Calling it twice is harmless (the second call is a no-op),
/// which keeps in-process tests simple.
pub fn init(env: &impl Env) {
    let (directive, format) = settings(env);
    let filter = filter(&directive);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _already_set = match format {
        Format::Json => tracing_subscriber::registry()
            .with(layer.json().flatten_event(true).with_filter(filter))
            .try_init(),
        Format::Text => tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn trace_for_everything_still_caps_dependencies_at_info() {
        for directive in ["trace", "tungstenite=trace,h2=trace,trace", "debug"] {
            let out = Capture::default();
            let writer = out.clone();
            let subscriber = tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || writer.clone())
                    .with_filter(filter(directive)),
            );
            tracing::subscriber::with_default(subscriber, || {
                tracing::trace!(target: "tungstenite::handshake::client", "authorization: Bearer secret-1");
                tracing::debug!(target: "h2::codec", "secret-2");
                tracing::debug!(target: "async_nats", "secret-3");
                tracing::info!(target: "async_nats", "dependency info");
                tracing::debug!(target: "livegate_gateway::ws", "livegate debug");
            });
            let out = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            assert!(!out.contains("secret-"), "{directive}: {out}");
            assert!(out.contains("dependency info"), "{directive}: {out}");
            assert!(out.contains("livegate debug"), "{directive}: {out}");
        }
    }
}
