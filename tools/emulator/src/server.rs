//! The HTTP side: accept loop, routing, bearer / JWT authentication, and the WebSocket upgrade
//! (done in hyper, so a refused handshake gets a real HTTP status and a JSON body).
//!
//! Two APIs: Vertex AI's `LlmBidiService` paths (bearer tokens and service-account JWTs) and
//! the Gemini Developer API's `GenerativeService` paths (an API key in `x-goog-api-key` or
//! `?key=`, checked against the configured developer keys; a missing key is refused with 403
//! and a wrong one with 400, as Google answers). Every Live handshake is recorded as a
//! [`Handshake`] (which path, which kinds of credential, never their values) for tests.

use crate::connection;
use crate::jwt;
use crate::slow_pong::SlowPong;
use crate::state::{Shared, bump};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// The Vertex AI Live paths served.
pub const LIVE_PATHS: [&str; 2] = [
    "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent",
    "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent",
];

/// The Gemini Developer API Live paths served (the versions the SDKs use).
pub const DEVELOPER_PATHS: [&str; 3] = [
    "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent",
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent",
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent",
];

/// Most handshakes remembered (the oldest are forgotten first).
pub const MAX_HANDSHAKES: usize = 1000;

/// Which API a Live path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveApi {
    /// Vertex AI (`google.cloud.aiplatform.*.LlmBidiService`).
    Vertex,
    /// The Gemini Developer API (`google.ai.generativelanguage.*.GenerativeService`).
    Developer,
}

/// What the emulator saw of one Live handshake: the path and which credentials came, never
/// their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The request path.
    pub path: String,
    /// The API the path belongs to.
    pub api: LiveApi,
    /// The `Authorization` header's scheme (`Bearer`), when one was sent.
    pub authorization: Option<String>,
    /// An `x-goog-api-key` header was sent.
    pub api_key_header: bool,
    /// A `key` query parameter was sent.
    pub api_key_query: bool,
    /// `x-goog-user-project`, as sent.
    pub user_project: Option<String>,
    /// The handshake was answered with 101.
    pub accepted: bool,
}

impl Handshake {
    fn of(req: &Request<Incoming>, api: LiveApi) -> Self {
        let h = req.headers();
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        Self {
            path: req.uri().path().to_string(),
            api,
            authorization: text("authorization")
                .map(|v| v.split(' ').next().unwrap_or_default().to_string()),
            api_key_header: h.contains_key("x-goog-api-key"),
            api_key_query: query_param(req.uri().query(), "key").is_some(),
            user_project: text("x-goog-user-project").map(str::to_string),
            accepted: false,
        }
    }
}

/// The front door's own state: developer keys and the handshakes seen.
#[derive(Debug, Default)]
pub(crate) struct Front {
    /// Accepted Developer API keys; empty: none required.
    pub(crate) developer_keys: Vec<String>,
    handshakes: Mutex<VecDeque<Handshake>>,
}

impl Front {
    pub(crate) fn new(developer_keys: Vec<String>) -> Self {
        Self {
            developer_keys,
            handshakes: Mutex::default(),
        }
    }

    fn record(&self, h: Handshake) {
        let mut all = self
            .handshakes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if all.len() >= MAX_HANDSHAKES {
            all.pop_front();
        }
        all.push_back(h);
    }

    pub(crate) fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// The first value of query parameter `name` (no percent-decoding: API keys are URL-safe).
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Accepts connections until `cancel` fires. Each connection and each upgraded session is a
/// task on `tracker`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    front: Arc<Front>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let span = tracing::debug_span!("conn", %peer);
                let conn = serve_connection(
                    stream,
                    peer,
                    shared.clone(),
                    front.clone(),
                    cancel.clone(),
                    tracker.clone(),
                );
                tracker.spawn(conn.instrument(span));
            }
            Err(e) => {
                // Usually EMFILE under load: back off instead of spinning.
                tracing::warn!(error.message = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    front: Arc<Front>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let service = {
        let cancel = cancel.clone();
        service_fn(move |req| {
            let reply = handle(req, &shared, &front, &cancel, &tracker);
            async move { Ok::<_, Infallible>(reply) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error.message = %e, "connection error");
    }
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    resp
}

/// A Google-style error body.
fn google_error(status: StatusCode, message: &str, code_name: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": {
        "code": status.as_u16(), "message": message, "status": code_name
    }});
    json_response(status, body.to_string())
}

fn handle(
    mut req: Request<Incoming>,
    shared: &Arc<Shared>,
    front: &Front,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == "/healthz" {
        return if req.method() == Method::GET || req.method() == Method::HEAD {
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok\n")));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        } else {
            google_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed.",
                "METHOD_NOT_ALLOWED",
            )
        };
    }
    let api = if LIVE_PATHS.contains(&path) {
        LiveApi::Vertex
    } else if DEVELOPER_PATHS.contains(&path) {
        LiveApi::Developer
    } else {
        return google_error(
            StatusCode::NOT_FOUND,
            &format!("The requested URL {path} was not found on this server."),
            "NOT_FOUND",
        );
    };
    let mut seen = Handshake::of(&req, api);
    let refuse = |seen: Handshake, r: Response<Full<Bytes>>| {
        bump(&shared.counters.rejected_handshakes);
        front.record(seen);
        r
    };
    let via_jwt = match api {
        LiveApi::Vertex => match authenticate(req.headers(), shared) {
            Ok(via_jwt) => via_jwt,
            Err(why) => {
                tracing::info!(reason = %why, "handshake refused: unauthenticated");
                let mut r = google_error(
                    StatusCode::UNAUTHORIZED,
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                     login cookie or other valid authentication credential.",
                    "UNAUTHENTICATED",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return refuse(seen, r);
            }
        },
        LiveApi::Developer => {
            match check_developer_key(req.headers(), req.uri().query(), &front.developer_keys) {
                Ok(()) => false,
                Err((status, message, code_name)) => {
                    tracing::info!(status = status.as_u16(), "handshake refused: API key");
                    return refuse(seen, google_error(status, message, code_name));
                }
            }
        }
    };
    let key = match websocket_key(&req) {
        Ok(key) => key,
        Err(why) => {
            return refuse(
                seen,
                google_error(StatusCode::BAD_REQUEST, why, "INVALID_ARGUMENT"),
            );
        }
    };
    seen.accepted = true;
    front.record(seen);
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    bump(&shared.counters.sessions);
    if via_jwt {
        bump(&shared.counters.jwt_handshakes);
    }
    let (shared, cancel) = (shared.clone(), cancel.clone());
    tracker.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let io = SlowPong::new(TokioIo::new(upgraded), shared.behaviour().pong_delay);
                    let ws = WebSocketStream::from_raw_socket(
                        io,
                        Role::Server,
                        Some(connection::ws_config()),
                    )
                    .await;
                    connection::serve(ws, shared, api, cancel).await;
                }
                Err(e) => tracing::debug!(error.message = %e, "upgrade failed"),
            }
        }
        .in_current_span(),
    );
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Checks the upgrade headers and returns `Sec-WebSocket-Key`.
fn websocket_key(req: &Request<Incoming>) -> Result<String, &'static str> {
    let h = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if req.method() != Method::GET
        || !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
    {
        return Err("This endpoint only accepts WebSocket upgrade requests.");
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err("Unsupported Sec-WebSocket-Version (expected 13).");
    }
    h.get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or("Missing Sec-WebSocket-Key.")
}

/// Checks a Developer API request's key (`x-goog-api-key`, else `?key=`) against `keys`
/// (empty: any request passes). A missing key gets 403 and a wrong one 400, Google's answers.
fn check_developer_key(
    headers: &HeaderMap,
    query: Option<&str>,
    keys: &[String],
) -> Result<(), (StatusCode, &'static str, &'static str)> {
    if keys.is_empty() {
        return Ok(());
    }
    let presented = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| query_param(query, "key"));
    match presented {
        Some(k) if keys.iter().any(|want| want == k.trim()) => {
            tracing::debug!("Developer API key accepted");
            Ok(())
        }
        Some(_) => Err((
            StatusCode::BAD_REQUEST,
            "API key not valid. Please pass a valid API key.",
            "INVALID_ARGUMENT",
        )),
        None => Err((
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
            "PERMISSION_DENIED",
        )),
    }
}

/// `Ok(true)` when a service-account JWT authenticated the request, `Ok(false)` for a
/// configured token or when no authentication is configured.
fn authenticate(headers: &HeaderMap, shared: &Shared) -> Result<bool, String> {
    if !shared.auth_required {
        return Ok(false);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(|| "no bearer credential".to_string())?;
    if shared.tokens.iter().any(|t| t == bearer) {
        return Ok(false);
    }
    if bearer.split('.').count() == 3 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        return match jwt::verify(bearer, &shared.keys, now) {
            Ok(kid) => {
                tracing::debug!(kid, "service-account JWT accepted");
                Ok(true)
            }
            Err(e) => Err(format!("JWT refused: {e}")),
        };
    }
    Err("unknown token".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn developer_keys_are_checked_like_google() {
        let keys = vec!["k1".to_string()];
        let mut h = HeaderMap::new();
        assert_eq!(check_developer_key(&h, None, &[]), Ok(()), "no keys: open");
        let status = |r: Result<(), (StatusCode, &str, &str)>| r.err().map(|e| e.0);
        assert_eq!(
            status(check_developer_key(&h, None, &keys)),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(check_developer_key(&h, Some("a=1&key=k1"), &keys), Ok(()));
        assert_eq!(
            status(check_developer_key(&h, Some("key=k2"), &keys)),
            Some(StatusCode::BAD_REQUEST)
        );
        h.insert("x-goog-api-key", HeaderValue::from_static("k1"));
        assert_eq!(check_developer_key(&h, None, &keys), Ok(()));
        h.insert("x-goog-api-key", HeaderValue::from_static("nope"));
        assert_eq!(
            status(check_developer_key(&h, Some("key=k1"), &keys)),
            Some(StatusCode::BAD_REQUEST),
            "the header wins"
        );
    }

    #[test]
    fn query_params_and_the_handshake_record_are_bounded() {
        assert_eq!(query_param(Some("x=1&key=abc"), "key"), Some("abc"));
        assert_eq!(query_param(Some("keys=abc"), "key"), None);
        assert_eq!(query_param(None, "key"), None);
        let front = Front::new(Vec::new());
        for i in 0..MAX_HANDSHAKES + 5 {
            front.record(Handshake {
                path: format!("/{i}"),
                api: LiveApi::Developer,
                authorization: None,
                api_key_header: false,
                api_key_query: false,
                user_project: None,
                accepted: true,
            });
        }
        let all = front.handshakes();
        assert_eq!(all.len(), MAX_HANDSHAKES);
        assert_eq!(all[0].path, "/5", "the oldest are forgotten");
    }
}
