//! The WebSocket upgrade: refuses while draining or at capacity, validates the handshake,
//! answers `101 Switching Protocols` (echoing a `livegate-key.` subprotocol), and spawns the
//! session on the upgraded socket (which keeps the connection's place under the caps).

use super::{Body, text};
use crate::limits::Connection;
use crate::state::App;
use crate::ws::request;
use crate::ws::session;
use crate::ws::upstream::ApiVersion;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

fn header_has(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Upgrades `req` to a WebSocket for a session, or answers why not (503, 426).
pub(super) fn upgrade(
    app: App,
    peer: SocketAddr,
    conn: Arc<Connection>,
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
    // A malformed credential is refused after the upgrade (4401), so browsers see why.
    let credential = request::credential(req.headers(), req.uri().query());
    let subprotocol = request::subprotocol(req.headers());
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
        // The socket stays counted until the session drops it.
        let _conn = conn;
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
    if let Some(p) = subprotocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    r
}
