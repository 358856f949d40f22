//! Short-lived browser tokens: `lgb-<payload>.<mac>`, both base64url, where the payload is
//! JSON `{"k": key_id, "exp": unix_seconds, "m": model}` and the MAC is HMAC-SHA256 over the
//! payload text with the secret shared through KV. Stateless, so every replica verifies any
//! token; revoking the key revokes its tokens, because `CheckKey` still loads the key record.
//!
//! A token never outlives or widens the key that minted it: [`expiry`] caps its life at the
//! key's expiry, [`model_allowed`] binds it only to a model the key allows, and only an API
//! key mints (the service refuses anything that resolves to a browser token).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::keys::KeyRecord;

/// Prefix of every browser token.
pub const TOKEN_PREFIX: &str = "lgb-";
/// Longest lifetime a token may have (15 minutes).
pub const MAX_TTL_SECONDS: u32 = 900;

/// What a browser token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The key the token derives from.
    #[serde(rename = "k")]
    pub key_id: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Optional model restriction (empty = the key's own limits).
    #[serde(rename = "m", default, skip_serializing_if = "String::is_empty")]
    pub model: String,
}

fn mac(secret: &[u8], payload: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(payload.as_bytes());
    m
}

/// Signs claims into a token.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let tag = URL_SAFE_NO_PAD.encode(mac(secret, &payload).finalize().into_bytes());
    format!("{TOKEN_PREFIX}{payload}.{tag}")
}

/// Verifies a token's MAC (in constant time) and expiry; `None` for anything invalid.
pub fn verify(secret: &[u8], token: &str, now: i64) -> Option<Claims> {
    let body = token.strip_prefix(TOKEN_PREFIX)?;
    let (payload, tag) = body.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(secret, payload).verify_slice(&tag).ok()?;
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (claims.exp > now).then_some(claims)
}

/// The expiry of a token minted at `now` for `ttl_seconds`: never later than the key's own.
pub fn expiry(key: &KeyRecord, now: i64, ttl_seconds: u32) -> i64 {
    let exp = now.saturating_add(i64::from(ttl_seconds));
    key.expires_at.map_or(exp, |key_exp| exp.min(key_exp))
}

/// Whether a token may be bound to `model` (empty = unbound: the key's own limits apply at
/// use): only to a model the key allows.
pub fn model_allowed(key: &KeyRecord, model: &str) -> bool {
    model.is_empty()
        || key.allowed_models.is_empty()
        || key.allowed_models.iter().any(|m| m == model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use livegate_proto::auth::KeySettings;

    fn key(expires_at: Option<i64>, allowed_models: &[&str]) -> KeyRecord {
        let mut k = KeyRecord::new("h".into(), "key_1".into(), &KeySettings::default()).unwrap();
        k.expires_at = expires_at;
        k.allowed_models = allowed_models.iter().map(|m| (*m).to_string()).collect();
        k
    }

    #[test]
    fn a_token_never_outlives_its_key() {
        for now in [0, 1_000, 1_700_000_000] {
            for ttl in [1, 60, MAX_TTL_SECONDS] {
                assert_eq!(expiry(&key(None, &[]), now, ttl), now + i64::from(ttl));
                for key_exp in [now + 1, now + 30, now + 10_000] {
                    let exp = expiry(&key(Some(key_exp), &[]), now, ttl);
                    assert!(exp <= key_exp && exp <= now + i64::from(ttl) && exp > now);
                }
            }
        }
        assert_eq!(expiry(&key(None, &[]), i64::MAX, MAX_TTL_SECONDS), i64::MAX);
    }

    #[test]
    fn a_token_is_bound_only_to_a_model_its_key_allows() {
        let open = key(None, &[]);
        let narrow = key(None, &["a", "b"]);
        assert!(model_allowed(&open, "") && model_allowed(&open, "z"));
        assert!(model_allowed(&narrow, "") && model_allowed(&narrow, "b"));
        for other in ["z", "A", "a ", "models/a", "b,a"] {
            assert!(!model_allowed(&narrow, other), "{other}");
        }
    }

    #[test]
    fn round_trip_tamper_and_expiry() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let claims = Claims {
            key_id: "key_1".into(),
            exp: 1_000,
            model: "gemini-live-2.5-flash".into(),
        };
        let token = mint(secret, &claims);
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(verify(secret, &token, 999), Some(claims));
        assert_eq!(verify(secret, &token, 1_000), None, "expired");
        assert_eq!(verify(b"other", &token, 0), None, "wrong secret");
        let mut forged = token.clone();
        forged.insert(5, 'A');
        assert_eq!(verify(secret, &forged, 0), None, "tampered payload");
        assert_eq!(verify(secret, "lgb-", 0), None);
        assert_eq!(verify(secret, "lgb-a.b.c", 0), None);
    }
}
