//! Verification of the self-signed JWTs that google-cloud-auth's service-account credentials
//! send as bearer tokens: RS256, `kid` = the key's `private_key_id`, a `scope` claim (or an
//! `aud` claim), `exp` in the future.

use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::Verifier;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;

/// The OAuth scope a Vertex AI token must carry.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A PEM that holds no usable RSA key.
#[derive(Debug, thiserror::Error)]
#[error(
    "not an RSA key in PEM form (SPKI \"PUBLIC KEY\", PKCS#1 \"RSA PUBLIC KEY\", or a PKCS#8/PKCS#1 private key)"
)]
pub struct KeyError;

/// Parses the public half of an RSA key from PEM: SPKI `PUBLIC KEY`, PKCS#1 `RSA PUBLIC KEY`,
/// or (for convenience) a PKCS#8 `PRIVATE KEY` / PKCS#1 `RSA PRIVATE KEY`.
///
/// # Errors
/// [`KeyError`] when none of these parse.
pub(crate) fn parse_public_key(pem: &str) -> Result<RsaPublicKey, KeyError> {
    let pem = pem.trim();
    RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .or_else(|_| RsaPrivateKey::from_pkcs8_pem(pem).map(|k| k.to_public_key()))
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem).map(|k| k.to_public_key()))
        .map_err(|_| KeyError)
}

/// Verifying keys by `kid`.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, VerifyingKey<Sha256>>,
}

impl KeySet {
    pub(crate) fn insert(&mut self, kid: String, key: RsaPublicKey) {
        self.keys.insert(kid, VerifyingKey::new(key));
    }
}

/// Why a JWT was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("unsupported alg {0:?} (only RS256)")]
    UnsupportedAlg(String),
    #[error("unknown kid {0:?}")]
    UnknownKid(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("expired or missing exp")]
    Expired,
    #[error("neither a cloud-platform scope nor an aud claim")]
    NoScope,
}

fn b64url(part: &str) -> Result<Vec<u8>, JwtError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)
}

fn json_part(part: &str) -> Result<Value, JwtError> {
    match serde_json::from_slice(&b64url(part)?) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(JwtError::Malformed),
    }
}

/// Verifies `token` against `keys` at `now` (seconds since the Unix epoch).
/// Returns the `kid` that verified.
pub(crate) fn verify(token: &str, keys: &KeySet, now: u64) -> Result<String, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header = json_part(h)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if alg != "RS256" {
        return Err(JwtError::UnsupportedAlg(alg.to_string()));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let key = keys
        .keys
        .get(kid)
        .ok_or_else(|| JwtError::UnknownKid(kid.to_string()))?;
    let sig = Signature::try_from(b64url(s)?.as_slice()).map_err(|_| JwtError::BadSignature)?;
    let signed = &token[..h.len() + 1 + p.len()];
    key.verify(signed.as_bytes(), &sig)
        .map_err(|_| JwtError::BadSignature)?;
    let claims = json_part(p)?;
    let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0);
    // Precision is irrelevant for a comparison in whole seconds.
    let now = now as f64;
    if exp <= now {
        return Err(JwtError::Expired);
    }
    let scoped = claims
        .get("scope")
        .and_then(Value::as_str)
        .is_some_and(|s| s.split_whitespace().any(|s| s == CLOUD_PLATFORM_SCOPE));
    let aud = match claims.get("aud") {
        Some(Value::String(a)) => !a.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        _ => false,
    };
    if !scoped && !aud {
        return Err(JwtError::NoScope);
    }
    Ok(kid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::signature::{SignatureEncoding, Signer};
    use serde_json::json;

    fn key() -> RsaPrivateKey {
        // 1024 bits keeps the unit test fast; the integration test uses 2048.
        let mut rng = rand::thread_rng();
        RsaPrivateKey::new(&mut rng, 1024).unwrap()
    }

    fn sign(key: &RsaPrivateKey, header: &Value, claims: &Value) -> String {
        let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let signing_input = format!("{}.{}", e(header), e(claims));
        let sig = SigningKey::<Sha256>::new(key.clone()).sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.to_vec())
        )
    }

    #[test]
    fn verifies_google_style_self_signed_jwt() {
        let k = key();
        let pem = k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
        let mut keys = KeySet::default();
        keys.insert("kid1".into(), parse_public_key(&pem).unwrap());
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": "kid1"});
        let claims = json!({"iss": "sa@p.iam", "sub": "sa@p.iam", "scope": CLOUD_PLATFORM_SCOPE,
                            "iat": 1000, "exp": 5000});
        let t = sign(&k, &header, &claims);
        assert_eq!(verify(&t, &keys, 2000), Ok("kid1".into()));
        assert_eq!(verify(&t, &keys, 5000), Err(JwtError::Expired));

        let t = sign(&k, &json!({"alg": "RS256", "kid": "other"}), &claims);
        assert_eq!(
            verify(&t, &keys, 2000),
            Err(JwtError::UnknownKid("other".into()))
        );

        let t = sign(&k, &header, &json!({"exp": 5000}));
        assert_eq!(verify(&t, &keys, 2000), Err(JwtError::NoScope));
        let t = sign(&k, &header, &json!({"exp": 5000, "aud": "https://x/"}));
        assert!(verify(&t, &keys, 2000).is_ok());

        let other = key();
        let t = sign(&other, &header, &claims);
        assert_eq!(verify(&t, &keys, 2000), Err(JwtError::BadSignature));

        let t = sign(&k, &json!({"alg": "HS256", "kid": "kid1"}), &claims);
        assert!(matches!(
            verify(&t, &keys, 2000),
            Err(JwtError::UnsupportedAlg(_))
        ));
        assert_eq!(verify("abc", &keys, 0), Err(JwtError::Malformed));
    }

    #[test]
    fn parses_all_pem_flavours() {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        use rsa::pkcs8::EncodePrivateKey;
        let k = key();
        let p = k.to_public_key();
        let pems = [
            p.to_public_key_pem(LineEnding::LF).unwrap(),
            p.to_pkcs1_pem(LineEnding::LF).unwrap(),
            k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            k.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
        ];
        for pem in pems {
            assert_eq!(parse_public_key(&pem).unwrap(), p);
        }
        assert!(parse_public_key("nope").is_err());
    }
}
