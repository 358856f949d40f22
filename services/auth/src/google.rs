//! Google access tokens through `google-cloud-auth`.
//!
//! Source order (the first one present wins, and the choice is logged without secrets):
//! 1. `DEFAULT_GOOGLE_APPLICATION_CREDENTIALS` (a path; LiteLLM's variable)
//! 2. the config file's `vertex_credentials` (a path, or the JSON inline)
//! 3. `GOOGLE_APPLICATION_CREDENTIALS` (a path)
//! 4. gcloud's Application Default Credentials file
//! 5. the metadata server (GCE, GKE workload identity; `GCE_METADATA_HOST` overrides)
//!
//! Besides that default set, each distinct `vertex_credentials` of the config file's LiteLLM
//! `model_list` is a credential set of its own, named by its `credentials_id` (`vc-…`); the
//! gateway asks for a token from a set by that name ([`GoogleTokens::token_for`]).
//!
//! Caching and refresh are the crate's: it keeps one token, refreshes it in the background
//! 240 s before expiry and makes concurrent callers share one refresh. The crate does not
//! expose a token's expiry, so we report [`REPORTED_VALIDITY`] from now, which is always
//! inside the real remaining lifetime of a token the crate hands out.

use crate::config::GoogleSources;
use google_cloud_auth::credentials::{
    AccessTokenCredentials, external_account, impersonated, mds, service_account, user_account,
};
use secrecy::ExposeSecret as _;
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

/// The credentials chosen at start-up: the default set and the `model_list` ones.
pub struct GoogleTokens {
    default: CredentialSet,
    /// By `credentials_id`.
    deployments: std::collections::HashMap<String, CredentialSet>,
}

/// One credential set and where it comes from.
struct CredentialSet {
    source: &'static str,
    credentials: Result<AccessTokenCredentials, String>,
    /// True when we fell back to the metadata server without anything configured: a failure
    /// then means "not configured" rather than "unavailable".
    implicit: bool,
}

/// The source name of a `model_list` deployment's credentials.
const DEPLOYMENT_SOURCE: &str = "model_list vertex_credentials";

impl GoogleTokens {
    /// Chooses a source and builds its credentials, and those of every `model_list` credential
    /// set. Must run inside a tokio runtime (the crate spawns its refresh task).
    pub fn from_sources(s: &GoogleSources) -> Self {
        let (source, implicit, credentials) = choose(s);
        log_choice(source, None, &credentials);
        let mut deployments = std::collections::HashMap::new();
        for value in &s.deployment_credentials {
            let value = value.expose_secret();
            let id = livegate_common::config::credentials_id(value);
            if deployments.contains_key(&id) {
                continue;
            }
            let credentials = from_value(value);
            log_choice(DEPLOYMENT_SOURCE, Some(&id), &credentials);
            deployments.insert(
                id,
                CredentialSet {
                    source: DEPLOYMENT_SOURCE,
                    credentials,
                    implicit: false,
                },
            );
        }
        Self {
            default: CredentialSet {
                source,
                credentials,
                implicit,
            },
            deployments,
        }
    }

    /// Where the default credentials come from (never a secret).
    pub fn source(&self) -> &'static str {
        self.default.source
    }

    /// A current access token from the credential set named `credentials` (a
    /// `credentials_id`), or the default one when it is empty.
    ///
    /// # Errors
    /// [`TokenError::NotConfigured`] for a name no `model_list` deployment has; else
    /// [`TokenError`] as documented on its variants.
    pub async fn token_for(&self, credentials: &str) -> Result<Token, TokenError> {
        if credentials.is_empty() {
            return self.default.token().await;
        }
        match self.deployments.get(credentials) {
            Some(set) => set.token().await,
            None => Err(TokenError::NotConfigured(format!(
                "no model_list deployment has the credential set {credentials:?} (do the gateway \
                 and auth read the same config file?)"
            ))),
        }
    }
}

fn log_choice(
    source: &'static str,
    id: Option<&str>,
    credentials: &Result<AccessTokenCredentials, String>,
) {
    let id = id.unwrap_or("default");
    match credentials {
        Ok(_) => tracing::info!(
            google.credentials.source = source,
            google.credentials.set = id,
            "Google credentials source chosen"
        ),
        Err(e) => {
            tracing::error!(google.credentials.source = source, google.credentials.set = id, error.message = %e, "Google credentials unusable")
        }
    }
}

impl CredentialSet {
    async fn token(&self) -> Result<Token, TokenError> {
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
        return ("vertex_credentials", false, from_value(v.expose_secret()));
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

/// A `vertex_credentials` value: the JSON inline, or a path to it.
fn from_value(v: &str) -> Result<AccessTokenCredentials, String> {
    if v.trim_start().starts_with('{') {
        serde_json::from_str(v)
            .map_err(|e| format!("vertex_credentials is not valid JSON: {e}"))
            .and_then(from_json)
    } else {
        from_file(v.trim())
    }
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
