//! API keys: generation, hashing, the stored record and its validation.
//!
//! A key is `lg-` followed by 43 base64url characters (32 random bytes, 256 bits). Only
//! `sha256(key)` is stored. A plain hash (no pepper) is enough because keys are uniformly
//! random with 256 bits of entropy: there is nothing to brute-force, and a pepper would make
//! every key unusable the day it is lost or rotated.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use livegate_proto::auth::{KeyInfo, KeySettings};
use rand::RngCore;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of every API key.
pub const KEY_PREFIX: &str = "lg-";
/// Longest credential we look at; anything longer is rejected before hashing (the shared
/// parser's limit, so the gateway and auth agree).
pub const MAX_CREDENTIAL_LEN: usize = livegate_common::credential::MAX_LEN;

/// A freshly generated key: the plaintext (shown once) and its hash.
pub struct NewKey {
    /// The plaintext key.
    pub plaintext: String,
    /// Hex SHA-256 of the plaintext.
    pub hash: String,
}

/// Generates a new random key.
pub fn generate() -> NewKey {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plaintext = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&plaintext);
    NewKey { plaintext, hash }
}

/// Hex SHA-256 of a credential.
pub fn hash(credential: &str) -> String {
    hex::encode(Sha256::digest(credential.as_bytes()))
}

/// A short random id (`key_` + 16 hex digits), safe to log and to use in KV keys.
pub fn new_key_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("key_{}", hex::encode(bytes))
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What is stored in the `livegate_keys` bucket under `k.<hash>`, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Hex SHA-256 of the key.
    pub hash: String,
    /// Public id (logged, shown in lists, used in usage events).
    pub key_id: String,
    /// Human name, unique among live keys.
    pub alias: String,
    #[serde(default)]
    pub team_id: String,
    #[serde(default)]
    pub user_id: String,
    /// Empty = all models.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Empty = all projects.
    #[serde(default)]
    pub allowed_projects: Vec<String>,
    #[serde(default)]
    pub default_project: String,
    #[serde(default)]
    pub default_location: String,
    /// 0 = unlimited.
    #[serde(default)]
    pub max_concurrent_sessions: u32,
    /// USD; `None` = no budget.
    #[serde(default)]
    pub max_budget_usd: Option<Decimal>,
    pub created_at: i64,
    /// Unix seconds; `None` = never.
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub revoked: bool,
    /// Most transparent resumptions per session; `None` = the gateway's limit (the gateway
    /// applies the smaller of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resumptions: Option<u32>,
    /// No resumption once a session is this many seconds old; `None` = the gateway's limit
    /// (the gateway applies the smaller of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resumption_seconds: Option<u64>,
}

/// Why a key's settings were rejected (→ `INVALID_ARGUMENT`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{field} must be 1 to 64 characters of letters, digits, '.', '_' or '-'")]
    BadName { field: &'static str },
    #[error("max_budget_usd must be a non-negative decimal number of dollars, got {0:?}")]
    BadBudget(String),
    #[error("expires_at is in the past")]
    ExpiresInPast,
    #[error("{field} entries must be non-empty and at most 256 characters")]
    BadListEntry { field: &'static str },
    #[error("cannot set field {0:?}")]
    UnknownField(String),
}

/// Names that end up in KV keys, metrics labels and ClickHouse: a safe, short charset.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_name(field: &'static str, s: &str, optional: bool) -> Result<(), SettingsError> {
    if (optional && s.is_empty()) || valid_name(s) {
        Ok(())
    } else {
        Err(SettingsError::BadName { field })
    }
}

fn check_list(field: &'static str, list: &[String]) -> Result<(), SettingsError> {
    if list.iter().all(|s| !s.trim().is_empty() && s.len() <= 256) {
        Ok(())
    } else {
        Err(SettingsError::BadListEntry { field })
    }
}

/// Parses a budget string: empty = none.
pub fn parse_budget(s: &str) -> Result<Option<Decimal>, SettingsError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<Decimal>() {
        Ok(d) if d >= Decimal::ZERO => Ok(Some(d)),
        _ => Err(SettingsError::BadBudget(s.to_string())),
    }
}

/// The `KeySettings` fields `UpdateKey` accepts in its mask.
pub const UPDATABLE_FIELDS: &[&str] = &[
    "alias",
    "team_id",
    "user_id",
    "allowed_models",
    "allowed_projects",
    "default_project",
    "default_location",
    "max_concurrent_sessions",
    "max_budget_usd",
    "expires_at",
    "max_resumptions",
    "max_resumption_seconds",
];

impl KeyRecord {
    /// A new record from admin-supplied settings.
    ///
    /// # Errors
    /// [`SettingsError`] for invalid names, budgets or expiry.
    pub fn new(hash: String, key_id: String, s: &KeySettings) -> Result<Self, SettingsError> {
        let mut r = Self {
            hash,
            key_id,
            alias: String::new(),
            team_id: String::new(),
            user_id: String::new(),
            allowed_models: Vec::new(),
            allowed_projects: Vec::new(),
            default_project: String::new(),
            default_location: String::new(),
            max_concurrent_sessions: 0,
            max_budget_usd: None,
            created_at: now_unix(),
            expires_at: None,
            revoked: false,
            max_resumptions: None,
            max_resumption_seconds: None,
        };
        r.apply(s, UPDATABLE_FIELDS)?;
        if r.alias.is_empty() {
            r.alias = r.key_id.clone();
        }
        Ok(r)
    }

    /// Applies the named fields of `s`, validating them.
    ///
    /// # Errors
    /// [`SettingsError`] for invalid values; the record is unchanged then.
    pub fn apply(&mut self, s: &KeySettings, fields: &[&str]) -> Result<(), SettingsError> {
        let mut next = self.clone();
        for field in fields {
            match *field {
                "alias" => {
                    check_name("alias", &s.alias, true)?;
                    if !s.alias.is_empty() {
                        next.alias.clone_from(&s.alias);
                    }
                }
                "team_id" => {
                    check_name("team_id", &s.team_id, true)?;
                    next.team_id.clone_from(&s.team_id);
                }
                "user_id" => {
                    check_name("user_id", &s.user_id, true)?;
                    next.user_id.clone_from(&s.user_id);
                }
                "allowed_models" => {
                    check_list("allowed_models", &s.allowed_models)?;
                    next.allowed_models = s
                        .allowed_models
                        .iter()
                        .map(|m| m.trim().to_string())
                        .collect();
                }
                "allowed_projects" => {
                    check_list("allowed_projects", &s.allowed_projects)?;
                    next.allowed_projects = s
                        .allowed_projects
                        .iter()
                        .map(|m| m.trim().to_string())
                        .collect();
                }
                "default_project" => next.default_project = s.default_project.trim().to_string(),
                "default_location" => next.default_location = s.default_location.trim().to_string(),
                "max_concurrent_sessions" => {
                    next.max_concurrent_sessions = s.max_concurrent_sessions
                }
                "max_budget_usd" => next.max_budget_usd = parse_budget(&s.max_budget_usd)?,
                "expires_at" => {
                    next.expires_at = match &s.expires_at {
                        Some(t) if t.seconds <= now_unix() => {
                            return Err(SettingsError::ExpiresInPast);
                        }
                        Some(t) => Some(t.seconds),
                        None => None,
                    };
                }
                "max_resumptions" => next.max_resumptions = s.max_resumptions,
                "max_resumption_seconds" => next.max_resumption_seconds = s.max_resumption_seconds,
                _ => {}
            }
        }
        *self = next;
        Ok(())
    }

    /// Revoked or expired at `now`.
    pub fn is_usable_at(&self, now: i64) -> bool {
        !self.revoked && self.expires_at.is_none_or(|e| e > now)
    }

    /// The public view: settings and spend, never the hash; with the team's spend and budget
    /// (its team record's, if any).
    pub fn info(
        &self,
        spend: Decimal,
        team_spend: Decimal,
        team_budget: Option<Decimal>,
    ) -> KeyInfo {
        KeyInfo {
            key_id: self.key_id.clone(),
            alias: self.alias.clone(),
            team_id: self.team_id.clone(),
            user_id: self.user_id.clone(),
            allowed_models: self.allowed_models.clone(),
            allowed_projects: self.allowed_projects.clone(),
            default_project: self.default_project.clone(),
            default_location: self.default_location.clone(),
            max_concurrent_sessions: self.max_concurrent_sessions,
            max_budget_usd: self
                .max_budget_usd
                .map(|d| d.to_string())
                .unwrap_or_default(),
            spend_usd: spend.to_string(),
            expires_at: self.expires_at.map(|s| prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            }),
            created_at: Some(prost_types::Timestamp {
                seconds: self.created_at,
                nanos: 0,
            }),
            revoked: self.revoked,
            team_spend_usd: team_spend.to_string(),
            team_max_budget_usd: team_budget.map(|d| d.to_string()).unwrap_or_default(),
            max_resumptions: self.max_resumptions,
            max_resumption_seconds: self.max_resumption_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_hash_matches() {
        let a = generate();
        let b = generate();
        assert!(a.plaintext.starts_with(KEY_PREFIX));
        assert_eq!(a.plaintext.len(), 3 + 43);
        assert_ne!(a.plaintext, b.plaintext);
        assert_eq!(hash(&a.plaintext), a.hash);
        assert_eq!(a.hash.len(), 64);
    }

    #[test]
    fn settings_are_validated() {
        let mut s = KeySettings {
            alias: "ok-alias".into(),
            max_budget_usd: "12.50".into(),
            ..KeySettings::default()
        };
        let r = KeyRecord::new("h".into(), "key_1".into(), &s).unwrap();
        assert_eq!(r.max_budget_usd, Some("12.5".parse().unwrap()));
        s.alias = "bad alias!".into();
        assert_eq!(
            KeyRecord::new("h".into(), "key_1".into(), &s).unwrap_err(),
            SettingsError::BadName { field: "alias" }
        );
        s.alias = "a".into();
        s.max_budget_usd = "-1".into();
        assert!(matches!(
            KeyRecord::new("h".into(), "key_1".into(), &s),
            Err(SettingsError::BadBudget(_))
        ));
    }

    #[test]
    fn resumption_bounds_are_optional_and_cleared_by_the_mask() {
        let s = KeySettings {
            max_resumptions: Some(1),
            max_resumption_seconds: Some(600),
            ..KeySettings::default()
        };
        let mut r = KeyRecord::new("h".into(), "key_1".into(), &s).unwrap();
        assert_eq!(
            (r.max_resumptions, r.max_resumption_seconds),
            (Some(1), Some(600))
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["max_resumptions"], 1);
        let info = r.info(Decimal::ZERO, Decimal::ZERO, Some(Decimal::TEN));
        assert_eq!(info.max_resumptions, Some(1));
        assert_eq!(info.max_resumption_seconds, Some(600));
        assert_eq!(info.team_max_budget_usd, "10");
        // Zero is a limit (no resumption), not "unset".
        r.apply(
            &KeySettings {
                max_resumptions: Some(0),
                ..KeySettings::default()
            },
            &["max_resumptions"],
        )
        .unwrap();
        assert_eq!(r.max_resumptions, Some(0));
        // An empty value in the mask clears the key's own bound: the gateway's applies.
        r.apply(
            &KeySettings::default(),
            &["max_resumptions", "max_resumption_seconds"],
        )
        .unwrap();
        assert_eq!((r.max_resumptions, r.max_resumption_seconds), (None, None));
        // Records written before these fields existed still read.
        let old: KeyRecord =
            serde_json::from_str(r#"{"hash":"h","key_id":"k","alias":"a","created_at":1}"#)
                .unwrap();
        assert_eq!(old.max_resumptions, None);
        assert!(
            old.info(Decimal::ZERO, Decimal::ZERO, None)
                .team_max_budget_usd
                .is_empty()
        );
    }

    #[test]
    fn expiry_and_revocation() {
        let mut r = KeyRecord::new("h".into(), "key_1".into(), &KeySettings::default()).unwrap();
        assert_eq!(r.alias, "key_1");
        assert!(r.is_usable_at(now_unix()));
        r.expires_at = Some(100);
        assert!(!r.is_usable_at(100));
        assert!(r.is_usable_at(99));
        r.expires_at = None;
        r.revoked = true;
        assert!(!r.is_usable_at(0));
    }
}
