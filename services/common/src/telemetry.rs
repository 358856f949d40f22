//! `tracing` set-up shared by all binaries: logs, and OpenTelemetry traces when asked for.
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
//!
//! Traces ([`init_with_traces`], the services): off unless `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! or `OTEL_EXPORTER_OTLP_ENDPOINT` names an OTLP/gRPC receiver (`OTEL_SDK_DISABLED=true`
//! turns them off whatever is set). Only livegate's own spans are exported (a gateway session,
//! its turns and upstream connections), named `OTEL_SERVICE_NAME` (default: the binary's name);
//! the SDK itself reads the standard `OTEL_TRACES_SAMPLER*` and `OTEL_BSP_*` variables.

use crate::env::{Env, EnvExt};
use opentelemetry_sdk::trace::SdkTracerProvider;
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

/// OTLP/gRPC receiver for traces (wins over [`OTEL_EXPORTER_OTLP_ENDPOINT`]).
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// OTLP/gRPC receiver for all signals (livegate exports traces only).
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The exported `service.name`.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// `true` turns traces off whatever else is set (the OpenTelemetry convention).
pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";

/// Where traces go, if anywhere: the OTLP/gRPC endpoint the environment names.
///
/// ```
/// use std::collections::HashMap;
/// use livegate_common::telemetry::traces_endpoint;
/// let env = HashMap::from([("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), "http://127.0.0.1:4317".to_string())]);
/// assert_eq!(traces_endpoint(&env).as_deref(), Some("http://127.0.0.1:4317"));
/// assert_eq!(traces_endpoint(&HashMap::new()), None);
/// ```
pub fn traces_endpoint(env: &impl Env) -> Option<String> {
    if env
        .var(OTEL_SDK_DISABLED)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return None;
    }
    env.var(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
        .or_else(|| env.var(OTEL_EXPORTER_OTLP_ENDPOINT))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

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

/// Installs the global subscriber, logs only. Calling it twice is harmless (the second call
/// is a no-op), which keeps in-process tests simple.
pub fn init(env: &impl Env) {
    install(env, None);
}

/// Like [`init`], plus OpenTelemetry traces when the environment names an OTLP receiver
/// ([`traces_endpoint`]). Must run inside a tokio runtime (the exporter's gRPC channel lives
/// on it). Keep the guard until the end: [`Traces::shutdown`] sends what is still buffered.
pub fn init_with_traces(env: &impl Env, default_service_name: &str) -> Traces {
    let provider = traces_endpoint(env).and_then(|endpoint| {
        let service = env
            .var(OTEL_SERVICE_NAME)
            .unwrap_or_else(|| default_service_name.to_string());
        match provider(&endpoint, service) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("cannot set up OTLP traces to {endpoint}: {e}; traces are off");
                None
            }
        }
    });
    install(env, provider.clone());
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    Traces { provider }
}

fn provider(
    endpoint: &str,
    service: String,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// Only livegate's own spans are exported: dependencies' spans say nothing about a session,
/// and events stay in the logs.
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("livegate")
}

fn install(env: &impl Env, traces: Option<SdkTracerProvider>) {
    use opentelemetry::trace::TracerProvider as _;
    let (directive, format) = settings(env);
    let filter = filter(&directive);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let otel = traces.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("livegate"))
            .with_filter(tracing_subscriber::filter::filter_fn(exported))
    });
    let _already_set = match format {
        Format::Json => tracing_subscriber::registry()
            .with(otel)
            .with(layer.json().flatten_event(true).with_filter(filter))
            .try_init(),
        Format::Text => tracing_subscriber::registry()
            .with(otel)
            .with(layer.with_filter(filter))
            .try_init(),
    };
}

/// The trace-export side of [`init_with_traces`] (inert when traces are off).
#[must_use = "dropping it loses the spans still buffered; call shutdown at the end"]
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Traces {
    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered and stops the exporter (bounded by the SDK's export timeout).
    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            // The SDK blocks this thread until its exporter thread is done.
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
    }
}

/// The OpenTelemetry trace id of `span` (32 hex digits), when traces are on and it is sampled.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
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
