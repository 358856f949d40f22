//! The HTTP side: accept loop (plain or TLS), routing, health and metrics endpoints, the
//! browser-token endpoint, and the WebSocket upgrade that hands sockets to sessions.

use crate::state::App;
use crate::ws::request::{self, KEY_SUBPROTOCOL_PREFIX};
use crate::ws::session;
use crate::ws::upstream::ApiVersion;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

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
pub async fn serve_connection<I>(app: App, io: I, peer: SocketAddr)
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

async fn route(app: App, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if let Some(i) = WS_PATHS.iter().position(|p| *p == path) {
        let version = if i == 4 {
            ApiVersion::V1Beta1
        } else {
            ApiVersion::V1
        };
        return upgrade(app, peer, req, version);
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
        (&Method::POST, "/v1/live/tokens") => mint_token(app, req).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

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

#[derive(serde::Deserialize, Default)]
struct TokenBody {
    #[serde(default)]
    ttl_seconds: u32,
    #[serde(default)]
    model: String,
}

async fn mint_token(app: App, req: Request<Incoming>) -> Response<Body> {
    let query = request::parse_query(req.uri().query());
    let Some(cred) = request::credential(req.headers(), &query) else {
        return json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "missing API key"}),
        );
    };
    let body = match Limited::new(req.into_body(), 4096).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({"error": "body larger than 4 KiB"}),
            );
        }
    };
    let parsed: TokenBody = if body.iter().all(u8::is_ascii_whitespace) {
        TokenBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": format!("invalid JSON body: {e}")}),
                );
            }
        }
    };
    match app
        .auth
        .mint_browser_token(&cred.value, parsed.ttl_seconds, &parsed.model)
        .await
    {
        Ok(t) => json(
            StatusCode::OK,
            &serde_json::json!({"token": t.token, "expires_at": t.expires_at.map(|e| e.seconds)}),
        ),
        Err(s) => {
            let status = match s.code() {
                tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            json(status, &serde_json::json!({"error": s.message()}))
        }
    }
}

fn header_has(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

fn upgrade(
    app: App,
    peer: SocketAddr,
    mut req: Request<Incoming>,
    version: ApiVersion,
) -> Response<Body> {
    if app.draining.load(Ordering::Relaxed) {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway draining; reconnect to another replica\n",
        );
    }
    let cap = app.config.max_sessions;
    if cap > 0 && app.tracker.len() >= cap {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("gateway at capacity ({cap} sessions); try another replica\n"),
        );
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let is_ws = header_has(&req, header::CONNECTION, "upgrade")
        && header_has(&req, header::UPGRADE, "websocket")
        && req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            == Some(b"13");
    let Some(key) = key.filter(|_| is_ws) else {
        let mut r = text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket (version 13)\n",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            http::HeaderValue::from_static("13"),
        );
        return r;
    };
    let query = request::parse_query(req.uri().query());
    let credential = request::credential(req.headers(), &query);
    let subprotocol = credential.as_ref().and_then(|c| c.subprotocol.clone());
    let max = app.config.max_frame_bytes;
    let session_req = session::Request {
        credential,
        query,
        version,
        peer,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tracker = app.tracker.clone();
    tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = crate::ws::socket_config(max);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session::run(app, ws, session_req).await;
            }
            Err(e) => tracing::debug!(%peer, error.message = %e, "upgrade failed"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    if let Ok(accept) = derive_accept_key(key.as_bytes()).parse() {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(p) = subprotocol.filter(|p| p.starts_with(KEY_SUBPROTOCOL_PREFIX))
        && let Ok(v) = p.parse()
    {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    r
}
