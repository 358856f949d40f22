//! The upstream Live API endpoint and the connection to it: the URL for a location and API
//! version, a Google access token from auth, and the WebSocket handshake (timed, bounded).

use super::close::{self, Close};
use crate::auth::TokenError;
use crate::state::App;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A session's socket to the Live API.
pub type Upstream = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Which API version the client asked for (by path); forwarded upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V1Beta1,
}

impl ApiVersion {
    fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V1Beta1 => "v1beta1",
        }
    }
}

/// The Vertex AI Live URL for a location: `{loc}-aiplatform.googleapis.com`, `global` →
/// `aiplatform.googleapis.com`, multi-regions without a dash (`us`, `eu`) →
/// `aiplatform.{loc}.rep.googleapis.com`. `configured` (`VERTEX_LIVE_URL`) wins.
pub fn url(configured: Option<&str>, location: &str, version: ApiVersion) -> String {
    if let Some(u) = configured {
        return u.to_string();
    }
    let host = if location == "global" {
        "aiplatform.googleapis.com".to_string()
    } else if location.contains('-') {
        format!("{location}-aiplatform.googleapis.com")
    } else {
        format!("aiplatform.{location}.rep.googleapis.com")
    };
    format!(
        "wss://{host}/ws/google.cloud.aiplatform.{}.LlmBidiService/BidiGenerateContent",
        version.as_str()
    )
}

/// Opens a session's upstream socket: a Google access token from auth, then the handshake
/// to the Live URL for `location` with it, billed to `project`; the token is minted from the
/// `credentials` set (a model_list deployment's, `None`: the default).
///
/// # Errors
/// The close for the client: 4001 without Google credentials, 1011 when no token can be had
/// or the URL is unusable, 1013 when upstream is unreachable or refuses the handshake.
pub async fn open(
    app: &App,
    location: &str,
    project: &str,
    credentials: Option<&str>,
    version: ApiVersion,
) -> Result<Upstream, Close> {
    let token = app
        .auth
        .access_token(credentials)
        .await
        .map_err(|e| match e {
            TokenError::NotConfigured(s) => {
                tracing::warn!(cause = %s.message(), "no Google credentials");
                Close::new(
                    close::NO_CREDENTIALS,
                    "Vertex AI credentials not configured",
                )
            }
            TokenError::Unavailable(s) => {
                tracing::error!(cause = %s.message(), code = ?s.code(), "no Google access token");
                Close::new(close::INTERNAL, "cannot obtain a Google access token")
            }
        })?;
    let url = url(app.config.vertex_live_url.as_deref(), location, version);
    connect(app, &url, &token, project).await
}

/// The WebSocket handshake to `url` with `token` as bearer, within the configured connect
/// timeout (its duration observed in `upstream_connect_seconds`, failures included).
async fn connect(app: &App, url: &str, token: &str, project: &str) -> Result<Upstream, Close> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Close::new(close::INTERNAL, format!("invalid upstream URL: {e}")))?;
    let h = request.headers_mut();
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| Close::new(close::INTERNAL, "access token is not a valid header"))?;
    h.insert(http::header::AUTHORIZATION, bearer);
    if let Ok(p) = project.parse() {
        h.insert("x-goog-user-project", p);
    }
    let ws_config = crate::ws::socket_config(app.config.max_frame_bytes);
    let started = std::time::Instant::now();
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    let result = tokio::time::timeout(app.config.upstream_connect_timeout, connect).await;
    app.metrics
        .upstream_connect_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Err(_) => Err(Close::new(
            close::TRY_AGAIN_LATER,
            "upstream unreachable: connect timed out",
        )),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            tracing::warn!(
                status = resp.status().as_u16(),
                "upstream refused the handshake"
            );
            Err(Close::new(
                close::TRY_AGAIN_LATER,
                format!(
                    "upstream refused the handshake: HTTP {}",
                    resp.status().as_u16()
                ),
            ))
        }
        Ok(Err(e)) => {
            tracing::warn!(cause = %e, "upstream unreachable");
            Err(Close::new(
                close::TRY_AGAIN_LATER,
                format!("upstream unreachable: {e}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_by_location() {
        assert_eq!(
            url(None, "us-central1", ApiVersion::V1),
            "wss://us-central1-aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
        );
        assert!(
            url(None, "global", ApiVersion::V1Beta1)
                .starts_with("wss://aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1beta1.")
        );
        assert!(
            url(None, "eu", ApiVersion::V1).starts_with("wss://aiplatform.eu.rep.googleapis.com/")
        );
        assert_eq!(
            url(Some("ws://127.0.0.1:1/x"), "eu", ApiVersion::V1),
            "ws://127.0.0.1:1/x"
        );
    }
}
