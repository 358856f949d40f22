//! Google access tokens through `google-cloud-auth`.
//!
//! Source order (the first one present wins, and the choice is logged without secrets):
//! 1. `DEFAULT_GOOGLE_APPLICATION_CREDENTIALS` (a path; LiteLLM's variable)
//! 2. the config file's `vertex_credentials` (a path, or the JSON inline)
//! 3. `GOOGLE_APPLICATION_CREDENTIALS` (a path)
//! 4. gcloud's Application Default Credentials file
//! 5. the metadata server (GCE, GKE workload identity; `GCE_METADATA_HOST` overrides)
//!
//! Caching and refresh are the crate's: it keeps one token, refreshes it in the background
//! 240 s before expiry and makes concurrent callers share one refresh. The crate does not
//! expose a token's expiry, so we report [`REPORTED_VALIDITY`] from now, which is always
//! inside the real remaining lifetime of a token the crate hands out.

use crate::config::GoogleSources;
use google_cloud_auth::credentials::{
    AccessTokenCredentials, external_account, impersonated, mds, service_account, user_account,
};
use std::time::{Duration, SystemTime};

/// OAuth scope for Vertex AI.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long callers may reuse a token we hand out.
pub const REPORTED_VALIDITY: Duration = Duration::from_secs(180);

/// Why no token could be produced.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// No usable credentials (→ `FAILED_PRECONDITION`, the gateway's 4001).
    #[error("Vertex AI credentials not configured: {0}")]
    NotConfigured(String),
    /// The credentials exist but Google (or the metadata server) failed transiently
    /// (→ `UNAVAILABLE`).
    #[error("cannot obtain a Google access token from {source_name}: {cause}")]
    Unavailable {
        source_name: &'static str,
        cause: String,
    },
}

/// A token with the window callers may use it in.
pub struct Token {
    pub access_token: String,
    pub expires_at: SystemTime,
    pub source: &'static str,
}

/// The credentials chosen at start-up.
pub struct GoogleTokens {
    source: &'static str,
    credentials: Result<AccessTokenCredentials, String>,
    /// True when we fell back to the metadata server without anything configured: a failure
    /// then means "not configured" rather than "unavailable".
    implicit: bool,
}

impl GoogleTokens {
    /// Chooses a source and builds its credentials. Must run inside a tokio runtime (the
    /// crate spawns its refresh task).
    pub fn from_sources(s: &GoogleSources) -> Self {
        let (source, implicit, credentials) = choose(s);
        match &credentials {
            Ok(_) => tracing::info!(
                google.credentials.source = source,
                "Google credentials source chosen"
            ),
            Err(e) => {
                tracing::error!(google.credentials.source = source, error.message = %e, "Google credentials unusable")
            }
        }
        Self {
            source,
            credentials,
            implicit,
        }
    }

    /// Where the credentials come from (never a secret).
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// A current access token.
    ///
    /// # Errors
    /// [`TokenError`] as documented on its variants.
    pub async fn token(&self) -> Result<Token, TokenError> {
        let creds = self
            .credentials
            .as_ref()
            .map_err(|e| TokenError::NotConfigured(e.clone()))?;
        match creds.access_token().await {
            Ok(t) => Ok(Token {
                access_token: t.token,
                expires_at: SystemTime::now() + REPORTED_VALIDITY,
                source: self.source,
            }),
            Err(e) if self.implicit => Err(TokenError::NotConfigured(format!(
                "no credentials file (DEFAULT_GOOGLE_APPLICATION_CREDENTIALS, vertex_credentials, \
                 GOOGLE_APPLICATION_CREDENTIALS, gcloud ADC) and the metadata server failed: {e}"
            ))),
            Err(e) if e.is_transient() => Err(TokenError::Unavailable {
                source_name: self.source,
                cause: e.to_string(),
            }),
            Err(e) => Err(TokenError::NotConfigured(format!("{}: {e}", self.source))),
        }
    }
}

type Choice = (&'static str, bool, Result<AccessTokenCredentials, String>);

fn choose(s: &GoogleSources) -> Choice {
    if let Some(path) = &s.default_application_credentials {
        return (
            "DEFAULT_GOOGLE_APPLICATION_CREDENTIALS",
            false,
            from_file(path),
        );
    }
    if let Some(v) = &s.vertex_credentials {
        let built = if v.trim_start().starts_with('{') {
            serde_json::from_str(v)
                .map_err(|e| format!("vertex_credentials is not valid JSON: {e}"))
                .and_then(from_json)
        } else {
            from_file(v)
        };
        return ("vertex_credentials", false, built);
    }
    if let Some(path) = &s.application_credentials {
        return ("GOOGLE_APPLICATION_CREDENTIALS", false, from_file(path));
    }
    if let Some(path) = &s.gcloud_adc_file {
        return (
            "gcloud application-default credentials",
            false,
            from_file(&path.to_string_lossy()),
        );
    }
    let mut b = mds::Builder::default().with_scopes([SCOPE]);
    if let Some(host) = &s.metadata_host {
        b = b.with_endpoint(format!("http://{host}"));
    }
    (
        "metadata server",
        s.metadata_host.is_none(),
        b.build_access_token_credentials()
            .map_err(|e| e.to_string()),
    )
}

fn from_file(path: &str) -> Result<AccessTokenCredentials, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read credentials file {path}: {e}"))?;
    let json = serde_json::from_str(&text)
        .map_err(|e| format!("credentials file {path} is not valid JSON: {e}"))?;
    from_json(json)
}

fn from_json(json: serde_json::Value) -> Result<AccessTokenCredentials, String> {
    let kind = json
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    let built = match kind.as_str() {
        "service_account" => service_account::Builder::new(json)
            .with_access_specifier(service_account::AccessSpecifier::from_scopes([SCOPE]))
            .build_access_token_credentials(),
        "authorized_user" => user_account::Builder::new(json)
            .with_scopes([SCOPE])
            .build_access_token_credentials(),
        "impersonated_service_account" => impersonated::Builder::new(json)
            .with_scopes([SCOPE])
            .build_access_token_credentials(),
        "external_account" => external_account::Builder::new(json)
            .with_scopes([SCOPE])
            .build_access_token_credentials(),
        other => {
            return Err(format!(
                "unsupported credentials type {other:?} (expected service_account, authorized_user, \
                 impersonated_service_account or external_account)"
            ));
        }
    };
    built.map_err(|e| format!("invalid {kind} credentials: {e}"))
}
