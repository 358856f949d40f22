//! `POST /v1/live/tokens`: a browser token for the key the caller presents, minted by auth;
//! auth's refusal is answered with the matching HTTP status.

use super::{Body, json};
use crate::state::App;
use crate::ws::request;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

#[derive(serde::Deserialize, Default)]
struct TokenBody {
    #[serde(default)]
    ttl_seconds: u32,
    #[serde(default)]
    model: String,
}

/// Answers a token request: 401 without a credential, 413/400 for a bad body, else auth's answer.
pub(super) async fn mint_token(app: App, req: Request<Incoming>) -> Response<Body> {
    let cred = match request::credential(req.headers(), req.uri().query()) {
        Ok(Some(cred)) => cred,
        Ok(None) => {
            return json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": "missing API key"}),
            );
        }
        Err(refused) => {
            return json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": refused.to_string()}),
            );
        }
    };
    let body = match read_body(&app, req.into_body()).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
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
        .mint_browser_token(cred.value.expose(), parsed.ttl_seconds, &parsed.model)
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

/// Largest token request body accepted.
const MAX_BODY_BYTES: usize = 4096;

/// The request body, at most [`MAX_BODY_BYTES`] and within `GATEWAY_BODY_TIMEOUT` (the caller
/// is not authenticated yet: a body trickled in byte by byte must not hold the connection).
async fn read_body(app: &App, body: Incoming) -> Result<bytes::Bytes, Response<Body>> {
    let read = Limited::new(body, MAX_BODY_BYTES).collect();
    match tokio::time::timeout(app.config.body_timeout, read).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(_)) => Err(json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({"error": "body larger than 4 KiB"}),
        )),
        Err(_) => {
            app.metrics
                .preauth_timeouts
                .get_or_create(&crate::metrics::PhaseLabel {
                    phase: "request_body",
                })
                .inc();
            let mut r = json(
                StatusCode::REQUEST_TIMEOUT,
                &serde_json::json!({"error": "request body not received in time"}),
            );
            // The rest of the body may still come: the connection cannot carry another request.
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            Err(r)
        }
    }
}
