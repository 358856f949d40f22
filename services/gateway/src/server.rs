//! The client-facing HTTP server. This file: one HTTP/1.1 connection per accepted socket
//! ([`serve_connection`], its request head time-boxed and size-capped), its routing table, and
//! the small endpoints (`/healthz`, `/readyz`, `/metrics`). Its parts:
//! - `accept`: the accept loop (plain or TLS), the connection caps, handing connections to
//!   relay threads when on.
//! - `tls`: the rustls acceptor from the configured PEM files.
//! - `paths`: the Live WebSocket paths of every current client, normalised and classified.
//! - `tokens`: `POST /v1/live/tokens`, browser tokens minted by auth.
//! - `upgrade`: the WebSocket upgrade that hands the socket to a session.

mod accept;
pub mod paths;
pub mod tls;
mod tokens;
mod upgrade;

pub use accept::accept_until;

use crate::limits::Connection;
use crate::metrics::PhaseLabel;
use crate::state::App;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// hyper's read buffer limit per connection, which bounds a request head (hyper's default,
/// about 400 KiB, times every connection allowed is memory an unauthenticated client can
/// pin). hyper checks it between reads, and one read may add up to the limit again, so a
/// head is refused once the buffer holds this much without a complete head; the buffer stays
/// under twice this. A WebSocket upgrade or token request head is well under 8 KiB; 64 KiB
/// leaves room for large cookies on a shared domain.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

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

/// Serves one accepted connection (already TLS-terminated when TLS is on). Each request head
/// must arrive within `GATEWAY_HEADER_TIMEOUT` (the first one from accept, later ones on a
/// keep-alive connection from the previous response) and fit in [`MAX_HEAD_BYTES`]. `conn`,
/// the connection's place under the caps, is shared with a WebSocket session the connection
/// upgrades to, so it is released when the socket is, not when HTTP hands it over.
async fn serve_connection<I>(app: App, io: I, peer: SocketAddr, conn: Connection)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let metrics = app.metrics.clone();
    let header_timeout = app.config.header_timeout;
    let service = hyper::service::service_fn(move |req| {
        let app = app.clone();
        let conn = conn.clone();
        async move { Ok::<_, std::convert::Infallible>(route(app, peer, conn, req).await) }
    });
    // Without a timer hyper's header read timeout is silently off.
    let http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = http.await {
        if e.is_timeout() {
            metrics
                .preauth_timeouts
                .get_or_create(&PhaseLabel {
                    phase: "request_head",
                })
                .inc();
        }
        tracing::debug!(%peer, error.message = %e, "HTTP connection ended with an error");
    }
}

/// Dispatches a request: the WebSocket paths upgrade, the rest are plain endpoints.
async fn route(
    app: App,
    peer: SocketAddr,
    conn: Arc<Connection>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path();
    if let Some(live) = paths::classify(path) {
        let upstream = live.upstream(app.config.gemini_api_key.is_some());
        return upgrade::upgrade(app, peer, conn, req, upstream);
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
