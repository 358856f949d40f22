//! The HTTP side: `GET /metrics` (Prometheus text format), `GET /healthz` (the process is up)
//! and `GET /readyz` (migrations applied, NATS connected, ClickHouse answering; ready with a
//! `warning:` line while the usage stream is nearly full of unconsumed events).

use crate::metrics::Metrics;
use crate::store::Store;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long `/readyz` waits for ClickHouse.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What the routes read.
pub(crate) struct State {
    pub(crate) metrics: Metrics,
    pub(crate) store: Store,
    /// NATS, once connected.
    pub(crate) nats: std::sync::OnceLock<async_nats::Client>,
    /// Set once the migrations have been applied.
    pub(crate) migrated: AtomicBool,
    /// The usage stream's fill warning, if any (`crate::stream_fill`).
    pub(crate) stream_warning: std::sync::Mutex<Option<String>>,
}

impl State {
    pub(crate) fn set_stream_warning(&self, warning: Option<String>) {
        if let Ok(mut w) = self.stream_warning.lock() {
            *w = warning;
        }
    }

    fn stream_warning(&self) -> Option<String> {
        self.stream_warning.lock().ok().and_then(|w| w.clone())
    }
}

/// Accepts connections until `stop`, one task per connection; on `stop`, open connections
/// finish their request and close. The connection tasks live in a `JoinSet` owned by this
/// future, so dropping it stops them too.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error.message = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(route(req, &state).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error.message = %e, "HTTP connection ended with an error");
            }
        });
    }
    while conns.join_next().await.is_some() {}
}

async fn route(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.render(),
        ),
        (&Method::GET, "/healthz") => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") => match readiness(state).await {
            Ok(()) => {
                let body = match state.stream_warning() {
                    Some(w) => format!("ready\nwarning: {w}\n"),
                    None => "ready\n".into(),
                };
                respond(StatusCode::OK, "text/plain", body)
            }
            Err(why) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

async fn readiness(state: &State) -> Result<(), String> {
    if !state.migrated.load(Ordering::Acquire) {
        return Err("ClickHouse migrations not applied yet".into());
    }
    match state.nats.get() {
        Some(c) if c.connection_state() == async_nats::connection::State::Connected => {}
        _ => return Err("NATS not connected".into()),
    }
    match tokio::time::timeout(READY_PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("ClickHouse did not answer in time".into()),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
