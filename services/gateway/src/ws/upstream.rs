//! The upstream Live API endpoint and the connection to it: the URL for an API, location and
//! version, the upstream credential, and the WebSocket handshake (timed, bounded).
//!
//! Two upstreams. Vertex AI (every session unless said otherwise): a Google access token from
//! auth as bearer, the session's project in `x-goog-user-project`. The Gemini Developer API
//! (only for Developer-API-shaped client paths, and only when the operator configured
//! `GATEWAY_GEMINI_API_KEY`): the operator's key in `x-goog-api-key`, no OAuth token, no
//! project. Which one a session uses is its [`ApiVersion`], chosen once from the client's path
//! (`server::paths`); transparent resumption reconnects through [`open`] with the same value,
//! so a resumed session stays on its upstream.

use super::close::{self, Close};
use crate::auth::TokenError;
use crate::state::App;
use secrecy::{ExposeSecret, SecretString};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A session's socket to the Live API.
pub type Upstream = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The upstream API and version a session is served by (from the client's path); forwarded
/// upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// Vertex AI `v1`.
    V1,
    /// Vertex AI `v1beta1`.
    V1Beta1,
    /// The Gemini Developer API, in the version the client used.
    Developer(DeveloperVersion),
}

/// A Gemini Developer API version (`google.ai.generativelanguage.<version>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeveloperVersion {
    V1,
    V1Beta,
    V1Alpha,
}

impl DeveloperVersion {
    /// The version as it appears in the path.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V1Beta => "v1beta",
            Self::V1Alpha => "v1alpha",
        }
    }

    /// The version named `s` in a path, if it is one the Developer API serves Live on.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::V1, Self::V1Beta, Self::V1Alpha]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl ApiVersion {
    /// Whether this is the Gemini Developer API upstream.
    pub fn is_developer(self) -> bool {
        matches!(self, Self::Developer(_))
    }

    fn vertex_str(self) -> &'static str {
        match self {
            Self::V1 | Self::Developer(_) => "v1",
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
        version.vertex_str()
    )
}

/// The Gemini Developer API's public endpoint (the base of [`developer_url`]).
pub const DEVELOPER_API_BASE: &str = "wss://generativelanguage.googleapis.com";

/// The Gemini Developer API Live URL for `version`, under `base` (`GATEWAY_GEMINI_API_URL`,
/// e.g. the emulator's `ws://127.0.0.1:PORT`) or the public endpoint. Always the plain
/// `BidiGenerateContent` method: the gateway authenticates with the operator's key, never an
/// ephemeral token.
pub fn developer_url(base: Option<&str>, version: DeveloperVersion) -> String {
    let base = base.unwrap_or(DEVELOPER_API_BASE).trim_end_matches('/');
    format!(
        "{base}/ws/google.ai.generativelanguage.{}.GenerativeService.BidiGenerateContent",
        version.as_str()
    )
}

/// The handshake request for the Developer API: the operator's key in `x-goog-api-key`
/// (marked sensitive), nothing else of ours (no bearer, no project).
///
/// # Errors
/// 1011 when the URL is unusable or the key is not a valid header value.
pub fn developer_request(url: &str, key: &SecretString) -> Result<http::Request<()>, Close> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Close::new(close::INTERNAL, format!("invalid upstream URL: {e}")))?;
    let mut value = http::HeaderValue::from_str(key.expose_secret()).map_err(|_| {
        Close::new(
            close::INTERNAL,
            "the Gemini API key is not a valid header value",
        )
    })?;
    value.set_sensitive(true);
    request.headers_mut().insert("x-goog-api-key", value);
    Ok(request)
}

/// The handshake request for Vertex AI: `token` as bearer, billed to `project`.
///
/// # Errors
/// 1011 when the URL is unusable or the token is not a valid header value.
pub fn vertex_request(url: &str, token: &str, project: &str) -> Result<http::Request<()>, Close> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Close::new(close::INTERNAL, format!("invalid upstream URL: {e}")))?;
    let h = request.headers_mut();
    let mut bearer: http::HeaderValue = format!("Bearer {token}")
        .parse()
        .map_err(|_| Close::new(close::INTERNAL, "access token is not a valid header"))?;
    bearer.set_sensitive(true);
    h.insert(http::header::AUTHORIZATION, bearer);
    if let Ok(p) = project.parse() {
        h.insert("x-goog-user-project", p);
    }
    Ok(request)
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
    if let ApiVersion::Developer(v) = version {
        return open_developer(app, v).await;
    }
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
    connect(app, vertex_request(&url, &token, project)?).await
}

/// Opens a Developer API session's upstream socket with the operator's key.
///
/// # Errors
/// 1011 when no key is configured (a Developer upstream is only chosen when one is), 1013
/// when upstream is unreachable or refuses the handshake (a wrong key is refused there).
async fn open_developer(app: &App, version: DeveloperVersion) -> Result<Upstream, Close> {
    let Some(key) = app.config.gemini_api_key.as_ref() else {
        return Err(Close::new(
            close::INTERNAL,
            "Gemini Developer API key not configured",
        ));
    };
    let url = developer_url(app.config.gemini_api_url.as_deref(), version);
    connect(app, developer_request(&url, key)?).await
}

/// The WebSocket handshake for `request`, within the configured connect timeout (its
/// duration observed in `upstream_connect_seconds`, failures included).
async fn connect(app: &App, request: http::Request<()>) -> Result<Upstream, Close> {
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

    #[test]
    fn developer_urls_keep_the_clients_version() {
        assert_eq!(
            developer_url(None, DeveloperVersion::V1),
            "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent"
        );
        assert_eq!(
            developer_url(Some("ws://127.0.0.1:9/"), DeveloperVersion::V1Alpha),
            "ws://127.0.0.1:9/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent"
        );
        assert!(
            developer_url(None, DeveloperVersion::V1Beta)
                .contains(".v1beta.GenerativeService.BidiGenerateContent")
        );
        for v in [
            DeveloperVersion::V1,
            DeveloperVersion::V1Beta,
            DeveloperVersion::V1Alpha,
        ] {
            assert_eq!(DeveloperVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(DeveloperVersion::parse("v1beta1"), None);
    }

    #[test]
    fn the_developer_api_gets_the_key_and_nothing_of_vertex() {
        let key = SecretString::from("AIza-test-key");
        let r = developer_request(&developer_url(None, DeveloperVersion::V1), &key).unwrap();
        let h = r.headers();
        assert_eq!(h.get("x-goog-api-key").unwrap(), "AIza-test-key");
        assert!(h.get("x-goog-api-key").unwrap().is_sensitive());
        assert!(h.get(http::header::AUTHORIZATION).is_none());
        assert!(h.get("x-goog-user-project").is_none());
        assert!(
            !r.uri().to_string().contains("AIza"),
            "the key is never in the URL"
        );
        assert!(
            developer_request("ws://h/x", &SecretString::from("bad\nkey")).is_err(),
            "a key that is not a header value is refused"
        );
    }

    #[test]
    fn vertex_gets_the_bearer_and_project() {
        let r = vertex_request(&url(None, "eu", ApiVersion::V1), "tok", "p1").unwrap();
        let h = r.headers();
        assert_eq!(h.get(http::header::AUTHORIZATION).unwrap(), "Bearer tok");
        assert_eq!(h.get("x-goog-user-project").unwrap(), "p1");
        assert!(h.get("x-goog-api-key").is_none());
    }
}
