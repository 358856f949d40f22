//! What an emulator is started with: accepted bearer tokens, service-account keys whose
//! self-signed JWTs it accepts, and the initial [`Behaviour`].

use crate::behaviour::Behaviour;
use crate::jwt::{self, KeySet};
use serde_json::Value;
use std::path::Path;

/// Emulator start-up configuration. With no tokens and no keys, the emulator accepts every
/// handshake without looking at `Authorization`.
#[derive(Debug, Clone, Default)]
pub struct EmulatorConfig {
    /// Accepted `Authorization: Bearer` values (plain access tokens).
    pub tokens: Vec<String>,
    /// Service-account keys whose RS256 self-signed JWTs are accepted.
    pub service_account_keys: Vec<ServiceAccountKey>,
    /// Initial behaviour (changeable later with [`crate::Emulator::set_behaviour`]).
    pub behaviour: Behaviour,
    /// Accepted Gemini Developer API keys (`x-goog-api-key` or `?key=` on the Developer API
    /// paths). Empty: those paths accept any handshake without looking for a key.
    pub developer_api_keys: Vec<String>,
}

/// A service account's key: the JWT `kid` (its `private_key_id`) and the key in PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountKey {
    /// The `kid` JWTs signed with this key carry.
    pub kid: String,
    /// SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY` PEM. A private key PEM (PKCS#8 or
    /// PKCS#1) is accepted too; only its public half is used.
    pub public_key_pem: String,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key's PEM does not parse.
    #[error("service-account key {kid:?}: {source}")]
    BadKey {
        /// The key's id.
        kid: String,
        /// Why.
        #[source]
        source: jwt::KeyError,
    },
    /// A service-account JSON file lacks `private_key_id` or `private_key`.
    #[error("{0}: not a service-account key file (needs private_key_id and private_key)")]
    NotServiceAccount(String),
    /// A key file cannot be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ServiceAccountKey {
    /// Builds a key from a service-account JSON (`private_key_id`, `private_key`), as Google's
    /// console downloads it.
    ///
    /// # Errors
    /// [`ConfigError::NotServiceAccount`] when the fields are missing.
    pub fn from_service_account_json(json: &str) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_str(json)
            .map_err(|_| ConfigError::NotServiceAccount("service-account JSON".into()))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        match (field("private_key_id"), field("private_key")) {
            (Some(kid), Some(pem)) => Ok(Self {
                kid,
                public_key_pem: pem,
            }),
            _ => Err(ConfigError::NotServiceAccount(
                "service-account JSON".into(),
            )),
        }
    }

    /// Parses a command-line spec: `KID=PATH.pem`, or `PATH.json` (a service-account key file).
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read or holds no key.
    pub fn from_cli_spec(spec: &str) -> Result<Self, ConfigError> {
        let read = |path: &str| {
            std::fs::read_to_string(Path::new(path)).map_err(|source| ConfigError::Io {
                path: path.to_string(),
                source,
            })
        };
        match spec.split_once('=') {
            Some((kid, path)) if !kid.is_empty() => Ok(Self {
                kid: kid.to_string(),
                public_key_pem: read(path)?,
            }),
            _ => Self::from_service_account_json(&read(spec)?)
                .map_err(|_| ConfigError::NotServiceAccount(spec.to_string())),
        }
    }
}

impl EmulatorConfig {
    /// Checks that every key parses.
    ///
    /// # Errors
    /// [`ConfigError::BadKey`] for the first key that does not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.key_set().map(|_| ())
    }

    /// Whether handshakes must carry a bearer.
    pub(crate) fn auth_required(&self) -> bool {
        !self.tokens.is_empty() || !self.service_account_keys.is_empty()
    }

    pub(crate) fn key_set(&self) -> Result<KeySet, ConfigError> {
        let mut set = KeySet::default();
        for k in &self.service_account_keys {
            let key =
                jwt::parse_public_key(&k.public_key_pem).map_err(|source| ConfigError::BadKey {
                    kid: k.kid.clone(),
                    source,
                })?;
            set.insert(k.kid.clone(), key);
        }
        Ok(set)
    }
}
