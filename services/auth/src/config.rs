//! The auth service's configuration: defaults, then the YAML file, then the environment.

use livegate_common::config::{ConfigError, FileConfig};
use livegate_common::env::{Env, EnvError, EnvExt};
use livegate_common::nats::{NatsConfigError, NatsOptions};
use livegate_common::subjects;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;

/// gRPC listen address.
pub const LISTEN: &str = "AUTH_LISTEN";
/// Default for [`LISTEN`].
pub const DEFAULT_LISTEN: &str = "0.0.0.0:50051";
/// Authorises admin calls (`CreateKey`, `ListKeys`, `UpdateKey`, `RevokeKey`).
pub const MASTER_KEY: &str = "LIVEGATE_MASTER_KEY";
/// Authorises `GetAccessToken` (the gateway presents it).
pub const INTERNAL_TOKEN: &str = "LIVEGATE_INTERNAL_TOKEN";
/// First choice for Google credentials (LiteLLM's variable).
pub const DEFAULT_GAC: &str = "DEFAULT_GOOGLE_APPLICATION_CREDENTIALS";
/// Third choice for Google credentials (Google's standard variable).
pub const GAC: &str = "GOOGLE_APPLICATION_CREDENTIALS";
/// Overrides the metadata server address (Google's variable), e.g. `127.0.0.1:8080`.
pub const GCE_METADATA_HOST: &str = "GCE_METADATA_HOST";
/// Where gcloud keeps its configuration (and the ADC file), default `~/.config/gcloud`.
pub const CLOUDSDK_CONFIG: &str = "CLOUDSDK_CONFIG";
/// The KV bucket only auth may read or write (deploy/nats/permissions.conf): it holds the
/// browser-token signing secret, which must stay out of `livegate_keys` (every gateway reads
/// that bucket).
pub const AUTH_BUCKET: &str = "livegate_auth";

/// Why the configuration is unusable (the binary exits with `EX_USAGE`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable is set but invalid.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The YAML file is unreadable or invalid.
    #[error(transparent)]
    File(#[from] ConfigError),
    /// The NATS settings (`NATS_URL`, credentials, TLS) are unusable.
    #[error(transparent)]
    Nats(#[from] NatsConfigError),
}

/// Where Google credentials come from, in the documented order of precedence.
#[derive(Debug, Clone, Default)]
pub struct GoogleSources {
    /// `DEFAULT_GOOGLE_APPLICATION_CREDENTIALS`: a path.
    pub default_application_credentials: Option<String>,
    /// The config file's `vertex_credentials`: a path or inline JSON (secret: inline JSON
    /// holds a private key, so `Debug` must not show it).
    pub vertex_credentials: Option<SecretString>,
    /// `GOOGLE_APPLICATION_CREDENTIALS`: a path.
    pub application_credentials: Option<String>,
    /// gcloud's ADC file (`$CLOUDSDK_CONFIG` or `~/.config/gcloud`, then
    /// `application_default_credentials.json`), used when it exists.
    pub gcloud_adc_file: Option<PathBuf>,
    /// The metadata server (`GCE_METADATA_HOST`, default Google's).
    pub metadata_host: Option<String>,
    /// The `vertex_credentials` of the config file's `model_list` deployments (paths or
    /// inline JSON): each distinct one is a credential set of its own.
    pub deployment_credentials: Vec<SecretString>,
}

/// Everything the auth service needs, loaded once in `main` and passed down.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`AUTH_LISTEN`; port 0 binds an ephemeral port).
    pub listen: SocketAddr,
    /// `NATS_URL`, credentials and TLS (livegate_common::nats).
    pub nats: NatsOptions,
    /// Admin secret; `None` refuses every admin call.
    pub master_key: Option<SecretString>,
    /// Secret the gateway presents for `GetAccessToken`; `None` refuses every such call.
    pub internal_token: Option<SecretString>,
    /// Google credential sources.
    pub google: GoogleSources,
    /// KV bucket for key records (tests may isolate with their own name).
    pub keys_bucket: String,
    /// KV bucket for spend totals.
    pub spend_bucket: String,
    /// Auth's own KV bucket (the browser-token secret), [`AUTH_BUCKET`].
    pub auth_bucket: String,
}

impl Config {
    /// Builds the configuration from the file and the environment (env wins).
    ///
    /// # Errors
    /// [`Error`] when a value is present but invalid.
    pub fn load(file: &FileConfig, env: &impl Env) -> Result<Self, Error> {
        let listen = env
            .parse::<SocketAddr>(LISTEN)?
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 50051)));
        let gcloud_dir = env.var(CLOUDSDK_CONFIG).map(PathBuf::from).or_else(|| {
            env.var("HOME")
                .map(|h| PathBuf::from(h).join(".config").join("gcloud"))
        });
        let gcloud_adc_file = gcloud_dir
            .map(|d| d.join("application_default_credentials.json"))
            .filter(|p| p.is_file());
        Ok(Self {
            listen,
            nats: NatsOptions::from_env(env)?,
            master_key: env
                .var(MASTER_KEY)
                .or_else(|| file.master_key.clone())
                .map(SecretString::from),
            internal_token: env.var(INTERNAL_TOKEN).map(SecretString::from),
            google: GoogleSources {
                default_application_credentials: env.var(DEFAULT_GAC),
                vertex_credentials: file.vertex_credentials.clone().map(SecretString::from),
                application_credentials: env.var(GAC),
                gcloud_adc_file,
                metadata_host: env.var(GCE_METADATA_HOST),
                deployment_credentials: file
                    .model_list
                    .iter()
                    .filter_map(|d| d.vertex_credentials.clone())
                    .map(SecretString::from)
                    .collect(),
            },
            keys_bucket: subjects::KEYS_BUCKET.to_string(),
            spend_bucket: subjects::SPEND_BUCKET.to_string(),
            auth_bucket: AUTH_BUCKET.to_string(),
        })
    }

    /// A configuration for tests and embedding: listens on `127.0.0.1:0`, no secrets.
    pub fn for_nats(nats: impl Into<NatsOptions>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            nats: nats.into(),
            master_key: None,
            internal_token: None,
            google: GoogleSources::default(),
            keys_bucket: subjects::KEYS_BUCKET.to_string(),
            spend_bucket: subjects::SPEND_BUCKET.to_string(),
            auth_bucket: AUTH_BUCKET.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_wins_over_file_for_master_key() {
        let file = FileConfig {
            master_key: Some("from-file".into()),
            ..FileConfig::default()
        };
        let env = HashMap::from([(MASTER_KEY.to_string(), "from-env".to_string())]);
        let cfg = Config::load(&file, &env).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(cfg.master_key.unwrap().expose_secret(), "from-env");
        let cfg = Config::load(&file, &HashMap::new()).unwrap();
        assert_eq!(cfg.master_key.unwrap().expose_secret(), "from-file");
    }

    #[test]
    fn nats_credentials_come_from_the_shared_parser() {
        let env = HashMap::from([
            (
                "NATS_URL".to_string(),
                "tls://a:4222,tls://b:4222".to_string(),
            ),
            ("NATS_USER".to_string(), "auth".to_string()),
            ("NATS_PASSWORD".to_string(), "pw-secret".to_string()),
        ]);
        let cfg = Config::load(&FileConfig::default(), &env).unwrap();
        assert_eq!(cfg.nats.servers_for_log(), "tls://a:4222,tls://b:4222");
        assert!(!format!("{cfg:?}").contains("pw-secret"));
        let half = HashMap::from([("NATS_USER".to_string(), "auth".to_string())]);
        let err = Config::load(&FileConfig::default(), &half)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("set both NATS_USER and NATS_PASSWORD, or neither")
        );
    }

    #[test]
    fn bad_listen_is_an_error() {
        let env = HashMap::from([(LISTEN.to_string(), "nope".to_string())]);
        assert!(Config::load(&FileConfig::default(), &env).is_err());
    }
}
