//! Connecting to NATS: [`NatsOptions`], read once from the environment by every service (and
//! the CLI), so that servers, credentials and TLS have one parser and one set of errors.
//!
//! | variable | what |
//! |---|---|
//! | `NATS_URL` | server URL, or several separated by commas (as the `nats` CLI takes them) |
//! | `NATS_CREDS` | a `.creds` file (user JWT and nkey seed, decentralised auth) |
//! | `NATS_USER`, `NATS_PASSWORD` | user and password |
//! | `NATS_NKEY` | a file holding an nkey user seed (`SU…`) |
//! | `NATS_TLS_CA` | PEM CA bundle the server's certificate must chain to; turns TLS on |
//! | `NATS_TLS_CERT`, `NATS_TLS_KEY` | client certificate and key (mutual TLS); turn TLS on |
//! | `LIVEGATE_STREAM_REPLICAS`, `LIVEGATE_STREAM_MAX_BYTES` | the [`StreamLayout`] of livegate's streams and buckets |
//!
//! At most one of the three credential kinds may be set. Files are read (and seeds and creds
//! checked) at start-up, so a bad file is a configuration error, not a reconnect loop.
//! Secrets are held as [`SecretString`] and never printed: `Debug` and [`NatsOptions::servers_for_log`]
//! show the kind of credential and the URLs without any `user:password@`.
//!
//! Each service connects with its own inbox prefix ([`Role::inbox_prefix`]) so that the
//! server's permissions can give each one only its own replies (`_INBOX.<role>.>`), never
//! another service's (a reply to auth can carry a key record).
//!
//! ```
//! use std::collections::HashMap;
//! use livegate_common::nats::NatsOptions;
//! let env = HashMap::from([
//!     ("NATS_URL".to_string(), "nats://a:4222, nats://b:4222".to_string()),
//!     ("NATS_USER".to_string(), "gateway".to_string()),
//!     ("NATS_PASSWORD".to_string(), "s3cret".to_string()),
//! ]);
//! let options = NatsOptions::from_env(&env).unwrap();
//! assert_eq!(options.servers_for_log(), "nats://a:4222,nats://b:4222");
//! assert!(!format!("{options:?}").contains("s3cret"));
//! ```

use crate::env::{DEFAULT_NATS_URL, Env, EnvError, EnvExt, NATS_URL};
use crate::stream::StreamLayout;
use async_nats::{ConnectOptions, ServerAddr};
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};

/// A `.creds` file (JWT + seed).
pub const NATS_CREDS: &str = "NATS_CREDS";
/// User name (with [`NATS_PASSWORD`]).
pub const NATS_USER: &str = "NATS_USER";
/// Password (with [`NATS_USER`]).
pub const NATS_PASSWORD: &str = "NATS_PASSWORD";
/// A file holding an nkey user seed.
pub const NATS_NKEY: &str = "NATS_NKEY";
/// PEM CA bundle for the server's certificate.
pub const NATS_TLS_CA: &str = "NATS_TLS_CA";
/// PEM client certificate (with [`NATS_TLS_KEY`]).
pub const NATS_TLS_CERT: &str = "NATS_TLS_CERT";
/// PEM client key (with [`NATS_TLS_CERT`]).
pub const NATS_TLS_KEY: &str = "NATS_TLS_KEY";

/// Which livegate program is connecting: names the connection and its inbox prefix, which
/// the documented server permissions (deploy/nats/permissions.conf) are written against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `livegate-gateway`.
    Gateway,
    /// `livegate-auth`.
    Auth,
    /// `livegate-metering`.
    Metering,
    /// The `livegate` CLI.
    Cli,
}

impl Role {
    /// `gateway`, `auth`, `metering` or `cli`: the user name in the shipped permissions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Auth => "auth",
            Self::Metering => "metering",
            Self::Cli => "cli",
        }
    }

    /// `_INBOX.<role>`: replies and push-consumer deliveries of this role arrive below it.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX.{}", self.as_str())
    }
}

/// Why the NATS settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum NatsConfigError {
    /// `NATS_URL` (or one of its comma-separated parts) is not a NATS URL.
    #[error(transparent)]
    Url(#[from] EnvError),
    /// A file named by a variable cannot be read.
    #[error("cannot read {name} file {path}: {source}", path = .path.display())]
    Read {
        /// The variable.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but does not hold what the variable promises.
    #[error("{name} file {path} is not valid: {reason}", path = .path.display())]
    Invalid {
        /// The variable.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (never the file's content).
        reason: String,
    },
    /// More than one kind of credential is set.
    #[error("set only one NATS credential: {0} are all set")]
    Conflict(String),
    /// One of a pair is set without the other.
    #[error("set both {0} and {1}, or neither")]
    Half(&'static str, &'static str),
    /// `LIVEGATE_STREAM_REPLICAS` or `LIVEGATE_STREAM_MAX_BYTES` is invalid.
    #[error(transparent)]
    Layout(EnvError),
}

/// The credential presented to the server.
#[derive(Clone)]
enum Credential {
    None,
    /// A `.creds` file and its content.
    Creds {
        path: PathBuf,
        text: SecretString,
    },
    UserPassword {
        user: String,
        password: SecretString,
    },
    /// An nkey user seed.
    Nkey(SecretString),
}

impl Credential {
    fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Creds { .. } => "creds file",
            Self::UserPassword { .. } => "user and password",
            Self::Nkey(_) => "nkey",
        }
    }
}

/// Servers, credential and TLS for a NATS connection.
#[derive(Clone)]
pub struct NatsOptions {
    servers: Vec<String>,
    credential: Credential,
    tls_ca: Option<PathBuf>,
    tls_client: Option<(PathBuf, PathBuf)>,
    layout: StreamLayout,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = match &self.credential {
            Credential::UserPassword { user, .. } => Some(user.as_str()),
            _ => None,
        };
        f.debug_struct("NatsOptions")
            .field("servers", &self.servers_for_log())
            .field("credential", &self.credential.kind())
            .field("user", &user)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .field("layout", &self.layout)
            .finish()
    }
}

impl From<&str> for NatsOptions {
    /// Servers only (comma-separated, checked at connect): no credential, no TLS.
    fn from(urls: &str) -> Self {
        Self {
            servers: split_urls(urls),
            credential: Credential::None,
            tls_ca: None,
            tls_client: None,
            layout: StreamLayout::default(),
        }
    }
}

impl From<String> for NatsOptions {
    fn from(urls: String) -> Self {
        Self::from(urls.as_str())
    }
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self::from(DEFAULT_NATS_URL)
    }
}

fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `scheme://user:pass@host` → `scheme://***@host`: URLs may carry credentials.
fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let redacted = match rest[..authority_end].rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{redacted}"),
        None => redacted,
    }
}

fn read_file(name: &'static str, path: &Path) -> Result<String, NatsConfigError> {
    std::fs::read_to_string(path).map_err(|source| NatsConfigError::Read {
        name,
        path: path.to_path_buf(),
        source,
    })
}

impl NatsOptions {
    /// Reads `NATS_URL` (default `nats://127.0.0.1:4222`), the credential variables, the
    /// TLS variables (reading and checking the files they name) and the [`StreamLayout`].
    ///
    /// # Errors
    /// [`NatsConfigError`] for a bad URL, an unreadable or invalid file, two credentials at
    /// once, or half of a pair.
    pub fn from_env(env: &(impl Env + ?Sized)) -> Result<Self, NatsConfigError> {
        let urls = env.var_or(NATS_URL, DEFAULT_NATS_URL);
        let servers = split_urls(&urls);
        if servers.is_empty() {
            return Err(EnvError {
                name: NATS_URL.to_string(),
                value: redact(&urls),
                reason: "no server URL".to_string(),
            }
            .into());
        }
        for s in &servers {
            if let Err(e) = s.parse::<ServerAddr>() {
                return Err(EnvError {
                    name: NATS_URL.to_string(),
                    value: redact(s),
                    reason: e.to_string(),
                }
                .into());
            }
        }

        let creds = env.var(NATS_CREDS).map(PathBuf::from);
        let user = env.var(NATS_USER);
        let password = env.get(NATS_PASSWORD).filter(|p| !p.is_empty());
        let nkey = env.var(NATS_NKEY).map(PathBuf::from);
        let set: Vec<&str> = [
            (creds.is_some(), NATS_CREDS),
            (
                user.is_some() || password.is_some(),
                "NATS_USER/NATS_PASSWORD",
            ),
            (nkey.is_some(), NATS_NKEY),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if set.len() > 1 {
            return Err(NatsConfigError::Conflict(set.join(", ")));
        }
        let credential = match (creds, user, password, nkey) {
            (Some(path), ..) => {
                let text = read_file(NATS_CREDS, &path)?;
                // Parsed here only to refuse a bad file at start-up; the error names no content.
                ConnectOptions::with_credentials(&text).map_err(|e| NatsConfigError::Invalid {
                    name: NATS_CREDS,
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Credential::Creds {
                    path,
                    text: SecretString::from(text),
                }
            }
            (None, Some(user), Some(password), None) => Credential::UserPassword {
                user,
                password: SecretString::from(password),
            },
            (None, Some(_), None, None) | (None, None, Some(_), None) => {
                return Err(NatsConfigError::Half(NATS_USER, NATS_PASSWORD));
            }
            (None, None, None, Some(path)) => {
                let seed = read_file(NATS_NKEY, &path)?.trim().to_string();
                if !seed.starts_with("SU") || nkeys::KeyPair::from_seed(&seed).is_err() {
                    return Err(NatsConfigError::Invalid {
                        name: NATS_NKEY,
                        path,
                        reason: "expected an nkey user seed (one line starting with SU)".into(),
                    });
                }
                Credential::Nkey(SecretString::from(seed))
            }
            _ => Credential::None,
        };

        let tls_ca = env.var(NATS_TLS_CA).map(PathBuf::from);
        if let Some(ca) = &tls_ca {
            read_file(NATS_TLS_CA, ca)?;
        }
        let tls_client = match (env.var(NATS_TLS_CERT), env.var(NATS_TLS_KEY)) {
            (Some(c), Some(k)) => {
                let (c, k) = (PathBuf::from(c), PathBuf::from(k));
                read_file(NATS_TLS_CERT, &c)?;
                read_file(NATS_TLS_KEY, &k)?;
                Some((c, k))
            }
            (None, None) => None,
            _ => return Err(NatsConfigError::Half(NATS_TLS_CERT, NATS_TLS_KEY)),
        };
        let layout = StreamLayout::from_env(env).map_err(NatsConfigError::Layout)?;
        Ok(Self {
            servers,
            credential,
            tls_ca,
            tls_client,
            layout,
        })
    }

    /// These servers instead (comma-separated), keeping credential and TLS: for a command-line
    /// flag that overrides `NATS_URL`.
    #[must_use]
    pub fn with_servers(mut self, urls: &str) -> Self {
        self.servers = split_urls(urls);
        self
    }

    /// Presents `user` and `password` (replacing any other credential).
    #[must_use]
    pub fn with_user_password(mut self, user: &str, password: &str) -> Self {
        self.credential = Credential::UserPassword {
            user: user.to_string(),
            password: SecretString::from(password.to_string()),
        };
        self
    }

    /// Verifies the server against this CA bundle (and requires TLS).
    #[must_use]
    pub fn with_tls_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(ca.into());
        self
    }

    /// How livegate's streams and buckets are laid out on these servers (replicas, the usage
    /// stream's byte limit): what every `ensure_*` / `open_bucket` call is given.
    pub fn layout(&self) -> &StreamLayout {
        &self.layout
    }

    /// This layout instead (tests against a cluster).
    #[must_use]
    pub fn with_layout(mut self, layout: StreamLayout) -> Self {
        self.layout = layout;
        self
    }

    /// The server URLs with any `user:password@` masked, comma-separated: for logs and errors.
    pub fn servers_for_log(&self) -> String {
        self.servers
            .iter()
            .map(|s| redact(s))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The servers to connect to.
    ///
    /// # Errors
    /// [`NatsConfigError::Url`] when one is not a NATS URL (only possible for options built
    /// with `From`, which does not check).
    pub fn server_addrs(&self) -> Result<Vec<ServerAddr>, NatsConfigError> {
        if self.servers.is_empty() {
            return Err(EnvError {
                name: NATS_URL.to_string(),
                value: String::new(),
                reason: "no server URL".to_string(),
            }
            .into());
        }
        self.servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>().map_err(|e| {
                    EnvError {
                        name: NATS_URL.to_string(),
                        value: redact(s),
                        reason: e.to_string(),
                    }
                    .into()
                })
            })
            .collect()
    }

    /// `base` with this credential, TLS, the connection name `livegate-<role>[ <name>]` and
    /// the role's inbox prefix.
    ///
    /// # Errors
    /// [`NatsConfigError::Invalid`] when the creds file no longer parses.
    pub fn apply(
        &self,
        base: ConnectOptions,
        role: Role,
        name: &str,
    ) -> Result<ConnectOptions, NatsConfigError> {
        let connection_name = if name.is_empty() {
            format!("livegate-{}", role.as_str())
        } else {
            format!("livegate-{} {name}", role.as_str())
        };
        let mut options = base
            .name(connection_name)
            .custom_inbox_prefix(role.inbox_prefix());
        options =
            match &self.credential {
                Credential::None => options,
                Credential::Creds { path, text } => options
                    .credentials(text.expose_secret())
                    .map_err(|e| NatsConfigError::Invalid {
                        name: NATS_CREDS,
                        path: path.clone(),
                        reason: e.to_string(),
                    })?,
                Credential::UserPassword { user, password } => {
                    options.user_and_password(user.clone(), password.expose_secret().to_string())
                }
                Credential::Nkey(seed) => options.nkey(seed.expose_secret().to_string()),
            };
        if self.tls_ca.is_some() || self.tls_client.is_some() || self.tls_scheme() {
            // The client's TLS needs a process-wide rustls provider; the services install ring
            // in `main`, the CLI does not. Installing twice is refused harmlessly.
            let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(options)
    }

    /// Whether a server URL asks for TLS by its scheme (`tls://`, `wss://`).
    fn tls_scheme(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.starts_with("tls://") || s.starts_with("wss://"))
    }

    /// Connects with `base` plus these settings (see [`apply`](Self::apply)).
    ///
    /// # Errors
    /// A configuration error, or the client's when the connection fails (the message names
    /// the servers without credentials).
    pub async fn connect(
        &self,
        base: ConnectOptions,
        role: Role,
        name: &str,
    ) -> Result<async_nats::Client, NatsConnectError> {
        let servers = self.server_addrs()?;
        self.apply(base, role, name)?
            .connect(servers)
            .await
            .map_err(|source| NatsConnectError::Connect {
                servers: self.servers_for_log(),
                source,
            })
    }
}

/// Why [`NatsOptions::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] NatsConfigError),
    /// The client could not connect (or authenticate).
    #[error("cannot connect to NATS at {servers}: {source}")]
    Connect {
        /// The servers, credentials masked.
        servers: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        match NatsOptions::from_env(&env(pairs)) {
            Ok(o) => panic!("expected an error, got {o:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_to_localhost_without_credentials() {
        let o = NatsOptions::from_env(&env(&[])).unwrap();
        assert_eq!(o.servers_for_log(), DEFAULT_NATS_URL);
        assert_eq!(o.credential.kind(), "none");
        assert_eq!(o.server_addrs().unwrap().len(), 1);
    }

    #[test]
    fn comma_separated_urls_and_masked_userinfo() {
        let o = NatsOptions::from_env(&env(&[(
            NATS_URL,
            "nats://u:hunter2@a:4222,tls://b:4223, c",
        )]))
        .unwrap();
        assert_eq!(o.servers_for_log(), "nats://***@a:4222,tls://b:4223,c");
        assert_eq!(o.server_addrs().unwrap().len(), 3);
        assert!(!format!("{o:?}").contains("hunter2"));
        let e = err(&[(NATS_URL, "http://u:hunter2@x")]);
        assert!(e.contains("NATS_URL") && !e.contains("hunter2"), "{e}");
        assert!(err(&[(NATS_URL, " , ")]).contains("no server URL"));
    }

    #[test]
    fn user_password_pairs_and_conflicts() {
        let o =
            NatsOptions::from_env(&env(&[(NATS_USER, "gw"), (NATS_PASSWORD, "pw-xyz")])).unwrap();
        let shown = format!("{o:?}");
        assert!(shown.contains("gw") && !shown.contains("pw-xyz"), "{shown}");
        assert_eq!(
            err(&[(NATS_USER, "gw")]),
            "set both NATS_USER and NATS_PASSWORD, or neither"
        );
        assert_eq!(
            err(&[(NATS_PASSWORD, "x")]),
            "set both NATS_USER and NATS_PASSWORD, or neither"
        );
        assert_eq!(
            err(&[(NATS_USER, "gw"), (NATS_PASSWORD, "x"), (NATS_NKEY, "/f")]),
            "set only one NATS credential: NATS_USER/NATS_PASSWORD, NATS_NKEY are all set"
        );
        assert_eq!(
            err(&[(NATS_TLS_CERT, "/c")]),
            "set both NATS_TLS_CERT and NATS_TLS_KEY, or neither"
        );
    }

    #[test]
    fn files_are_read_and_checked_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not-a-seed-SECRETISH").unwrap();
        let bad = bad.to_str().unwrap();
        for var in [NATS_NKEY, NATS_CREDS] {
            let e = err(&[(var, bad)]);
            assert!(e.contains(var) && e.contains("not valid"), "{e}");
            assert!(!e.contains("SECRETISH"), "{e}");
        }
        let e = err(&[(NATS_TLS_CA, "/nonexistent/ca.pem")]);
        assert!(
            e.starts_with("cannot read NATS_TLS_CA file /nonexistent/ca.pem"),
            "{e}"
        );

        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let good = dir.path().join("seed");
        std::fs::write(&good, format!("{seed}\n")).unwrap();
        let o = NatsOptions::from_env(&env(&[(NATS_NKEY, good.to_str().unwrap())])).unwrap();
        assert_eq!(o.credential.kind(), "nkey");
        assert!(!format!("{o:?}").contains(&seed));
        assert!(o.apply(ConnectOptions::new(), Role::Gateway, "").is_ok());
    }

    #[test]
    fn a_creds_file_is_accepted_and_kept_secret() {
        let dir = tempfile::tempdir().unwrap();
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let creds = dir.path().join("user.creds");
        std::fs::write(
            &creds,
            format!(
                "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJVIn0.c2ln\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            ),
        )
        .unwrap();
        let o = NatsOptions::from_env(&env(&[(NATS_CREDS, creds.to_str().unwrap())])).unwrap();
        assert_eq!(o.credential.kind(), "creds file");
        assert!(!format!("{o:?}").contains(&seed));
        assert!(o.apply(ConnectOptions::new(), Role::Auth, "").is_ok());
    }

    #[test]
    fn the_stream_layout_is_read_with_the_servers() {
        let o = NatsOptions::from_env(&env(&[
            (NATS_URL, "nats://a:4222,nats://b:4222,nats://c:4222"),
            (crate::stream::LIVEGATE_STREAM_REPLICAS, "3"),
        ]))
        .unwrap();
        assert_eq!(o.layout().replicas, 3);
        assert_eq!(o.server_addrs().unwrap().len(), 3);
        assert_eq!(NatsOptions::from("nats://a:1").layout().replicas, 1);
        let e = err(&[(crate::stream::LIVEGATE_STREAM_REPLICAS, "9")]);
        assert!(e.contains("LIVEGATE_STREAM_REPLICAS"), "{e}");
    }

    #[test]
    fn roles_have_their_own_inboxes() {
        assert_eq!(Role::Gateway.inbox_prefix(), "_INBOX.gateway");
        assert_eq!(Role::Metering.inbox_prefix(), "_INBOX.metering");
    }
}
