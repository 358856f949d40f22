//! Handshake authentication: static tokens and service-account self-signed JWTs.

use crate::helpers::*;
use base64::Engine as _;
use livegate_emulator::{CLOUD_PLATFORM_SCOPE, EmulatorConfig, ServiceAccountKey};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

#[tokio::test]
async fn tokens_wrong_or_missing_get_401_right_one_works() {
    let emu = spawn(EmulatorConfig {
        tokens: vec!["good-token".into(), "other".into()],
        ..EmulatorConfig::default()
    })
    .await;
    let (status, body) = refused_status(&emu.url(), Some("bad-token")).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(refused_status(&emu.url(), None).await.0, 401);

    let mut ws = try_connect(&emu.url(), Some("good-token")).await.unwrap();
    text_setup(&mut ws).await;
    let stats = emu.stats();
    assert_eq!(
        (
            stats.sessions,
            stats.rejected_handshakes,
            stats.jwt_handshakes
        ),
        (1, 2, 0)
    );
}

fn key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT shaped like google-cloud-auth's service-account self-signed JWT.
fn jwt(key: &RsaPrivateKey, kid: &str, exp_offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let email = "livegate@test-project.iam.gserviceaccount.com";
    let claims = json!({"iss": email, "sub": email, "scope": CLOUD_PLATFORM_SCOPE,
                        "iat": now, "exp": now + exp_offset});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = SigningKey::<Sha256>::new(key.clone()).sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_vec()))
}

#[tokio::test]
async fn service_account_jwt_accepted_bad_signature_rejected() {
    let pem = key()
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let emu = spawn(EmulatorConfig {
        service_account_keys: vec![ServiceAccountKey {
            kid: "key-1".into(),
            public_key_pem: pem,
        }],
        ..EmulatorConfig::default()
    })
    .await;

    let good = jwt(key(), "key-1", 3600);
    let mut ws = try_connect(&emu.url(), Some(&good)).await.unwrap();
    text_setup(&mut ws).await;
    assert_eq!(emu.stats().jwt_handshakes, 1);

    // Tamper with the signature's last byte.
    let (input, sig) = good.rsplit_once('.').unwrap();
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    *sig.last_mut().unwrap() ^= 1;
    let forged = format!("{input}.{}", b64(&sig));
    assert_eq!(refused_status(&emu.url(), Some(&forged)).await.0, 401);
    // Expired, and unknown kid.
    assert_eq!(
        refused_status(&emu.url(), Some(&jwt(key(), "key-1", -10)))
            .await
            .0,
        401
    );
    assert_eq!(
        refused_status(&emu.url(), Some(&jwt(key(), "key-2", 3600)))
            .await
            .0,
        401
    );
    // Missing bearer while only keys are configured.
    let (status, body) = refused_status(&emu.url(), None).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m: &str| !m.is_empty())
    );
    let stats = emu.stats();
    assert_eq!((stats.jwt_handshakes, stats.rejected_handshakes), (1, 4));
}

#[tokio::test]
async fn service_account_json_key_file_spec() {
    use rsa::pkcs8::EncodePrivateKey;
    let dir = std::env::temp_dir().join(format!("livegate-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sa.json");
    let private = key().to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let sa: Value = json!({"type": "service_account", "private_key_id": "kid-json",
                           "private_key": private, "client_email": "sa@p.iam.gserviceaccount.com"});
    std::fs::write(&path, sa.to_string()).unwrap();
    let k = ServiceAccountKey::from_cli_spec(path.to_str().unwrap()).unwrap();
    assert_eq!(k.kid, "kid-json");
    let config = EmulatorConfig {
        service_account_keys: vec![k],
        ..EmulatorConfig::default()
    };
    config.validate().unwrap();
    let emu = spawn(config).await;
    let mut ws = try_connect(&emu.url(), Some(&jwt(key(), "kid-json", 600)))
        .await
        .unwrap();
    text_setup(&mut ws).await;
    std::fs::remove_dir_all(&dir).unwrap();

    let bad = EmulatorConfig {
        service_account_keys: vec![ServiceAccountKey {
            kid: "x".into(),
            public_key_pem: "garbage".into(),
        }],
        ..EmulatorConfig::default()
    };
    assert!(bad.validate().is_err());
}
