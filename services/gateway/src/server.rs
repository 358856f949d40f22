//! The client-facing HTTP server. This file: one HTTP/1.1 connection per accepted socket
//! ([`serve_connection`]), its routing table, and the small endpoints (`/healthz`, `/readyz`,
//! `/metrics`). Its parts:
//! - `accept`: the accept loop (plain or TLS), handing connections to relay threads when on.
//! - `tls`: the rustls acceptor from the configured PEM files.
//! - `tokens`: `POST /v1/live/tokens`, browser tokens minted by auth.
//! - `upgrade`: the WebSocket upgrade that hands the socket to a session.

mod accept;
pub mod tls;
mod tokens;
mod upgrade;

pub use accept::accept_until;

use crate::state::App;
use crate::ws::upstream::ApiVersion;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// The WebSocket paths (DESIGN.md, "Client-facing contract").
pub const WS_PATHS: [&str; 5] = [
    "/v1/vertex-ai/live",
    "/vertex-ai/live",
    "/vertex_ai/live",
    "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent",
    "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent",
];

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves one accepted connection (already TLS-terminated when TLS is on).
async fn serve_connection<I>(app: App, io: I, peer: SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(route(app, peer, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error.message = %e, "HTTP connection ended with an error");
    }
}

/// Dispatches a request: the WebSocket paths upgrade, the rest are plain endpoints.
async fn route(app: App, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if let Some(i) = WS_PATHS.iter().position(|p| *p == path) {
        let version = if i == 4 {
            ApiVersion::V1Beta1
        } else {
            ApiVersion::V1
        };
        return upgrade::upgrade(app, peer, req, version);
    }
    match (req.method(), path) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(&app).await,
        (&Method::GET, "/metrics") => {
            let mut r = text(StatusCode::OK, app.metrics.render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (&Method::POST, "/v1/live/tokens") => tokens::mint_token(app, req).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// 200 when this replica can take sessions (not draining, both NATS connections up, auth
/// serving), else 503; the body says which part is missing.
async fn readyz(app: &App) -> Response<Body> {
    let draining = app.draining.load(Ordering::Relaxed);
    let nats = app.nats.connection_state() == async_nats::connection::State::Connected;
    let publisher = app.bus.connected();
    let auth = app.auth.ready().await;
    let ok = !draining && nats && publisher && auth;
    json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &serde_json::json!({
            "ready": ok,
            "nats": nats,
            "nats_publisher": publisher,
            "auth": auth,
            "draining": draining,
        }),
    )
}
