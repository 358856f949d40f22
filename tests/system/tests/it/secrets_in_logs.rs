//! No secret reaches a log at any level: the gateway, auth, metering and emulator binaries run
//! at `LIVEGATE_LOG=trace` (real nats-server and clickhouse-server) through real sessions —
//! setup and a text turn with a key in `?key=`, a browser token minted over HTTP and used in the
//! `livegate-key.` subprotocol, a session relayed to the Gemini Developer API with the
//! operator's key, refused credentials —, then everything they printed on stdout and stderr is
//! searched for the API key, the browser token, the Google access token the gateway sent
//! upstream, the Gemini API key, the master key and the internal token (and the client's
//! words).
//!
//! The binaries are the ones `scripts/test.sh` builds (`cargo build --workspace --bins`).

use futures_util::SinkExt;
use livegate_proto::auth::auth_client::AuthClient;
use livegate_proto::auth::{CreateKeyRequest, GetAccessTokenRequest, KeySettings};
use livegate_system_tests::process::Binary;
use livegate_system_tests::*;
use livegate_test_support::TestServiceAccount;
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Secrets unlike any other string in the logs, so a hit is a leak.
const MASTER_SECRET: &str = "master-5f1b9c0e7d3a";
const INTERNAL_SECRET: &str = "internal-8c2e4a6f0b1d";
/// The operator's Gemini Developer API key (`GATEWAY_GEMINI_API_KEY`).
const GEMINI_SECRET: &str = "AIzaSy-gemini-9d4b2f7a1e6c";
/// What the client says in its turn: conversation content is not for logs either.
const PROMPT: &str = "prompt-3e9a71c4 tell me a secret";

/// A binary at `LIVEGATE_LOG=trace`.
fn spawn(name: &'static str, dir: &Path, args: &[&str], env: &[(&str, String)]) -> Binary {
    let mut env = env.to_vec();
    env.push(("LIVEGATE_LOG", "trace".into()));
    Binary::spawn(name, dir, args, &env)
}

async fn session_turn(ws: &mut Ws) {
    open_session(ws, litellm_setup(MODEL, "TEXT")).await;
    ws.send(litellm_text_turn(PROMPT)).await.unwrap();
    assert!(!turn_text(&read_turn(ws).await).is_empty());
    ws.close(None).await.unwrap();
    let _ = close_of(ws).await;
}

#[tokio::test]
async fn no_service_logs_a_secret_at_trace() {
    livegate_test_support::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let nats = livegate_test_support::NatsServer::start().await.unwrap();
    let ch = livegate_test_support::ClickHouseServer::shared()
        .await
        .unwrap();
    let db = ch.create_database("secrets").await.unwrap();
    let sa = TestServiceAccount::generate(dir.path()).unwrap();
    let sa_path = sa.path.to_string_lossy().into_owned();

    let mut emulator = spawn(
        "livegate-emulator",
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--service-account-key",
            &sa_path,
            "--developer-api-key",
            GEMINI_SECRET,
        ],
        &[],
    );
    let emulator_addr = emulator.addr().await;
    let mut auth = spawn(
        "livegate-auth",
        dir.path(),
        &[],
        &[
            ("NATS_URL", nats.url()),
            ("AUTH_LISTEN", "127.0.0.1:0".into()),
            ("LIVEGATE_MASTER_KEY", MASTER_SECRET.into()),
            ("LIVEGATE_INTERNAL_TOKEN", INTERNAL_SECRET.into()),
            ("GOOGLE_APPLICATION_CREDENTIALS", sa_path.clone()),
        ],
    );
    let auth_addr = auth.addr().await;
    let mut metering = spawn(
        "livegate-metering",
        dir.path(),
        &[],
        &[
            ("NATS_URL", nats.url()),
            ("CLICKHOUSE_URL", ch.http_url()),
            ("CLICKHOUSE_DATABASE", db.clone()),
            ("METERING_LISTEN", "127.0.0.1:0".into()),
            ("METERING_FLUSH_INTERVAL", "100ms".into()),
        ],
    );
    metering.addr().await;
    let mut gateway = spawn(
        "livegate-gateway",
        dir.path(),
        &[],
        &[
            ("NATS_URL", nats.url()),
            ("GATEWAY_LISTEN", "127.0.0.1:0".into()),
            ("AUTH_URL", format!("http://{auth_addr}")),
            ("LIVEGATE_INTERNAL_TOKEN", INTERNAL_SECRET.into()),
            (
                "VERTEX_LIVE_URL",
                format!("ws://{emulator_addr}{}", livegate_emulator::LIVE_PATHS[0]),
            ),
            ("DEFAULT_VERTEXAI_PROJECT", PROJECT.into()),
            ("GATEWAY_GEMINI_API_KEY", GEMINI_SECRET.into()),
            ("GATEWAY_GEMINI_API_URL", format!("ws://{emulator_addr}")),
        ],
    );
    let gateway_addr: std::net::SocketAddr = gateway.addr().await.parse().unwrap();

    // An API key, through the admin API.
    let mut admin = AuthClient::connect(format!("http://{auth_addr}"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(CreateKeyRequest {
        settings: Some(KeySettings {
            alias: "logged".into(),
            ..KeySettings::default()
        }),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {MASTER_SECRET}").parse().unwrap(),
    );
    let created = admin.create_key(req).await.unwrap().into_inner();
    let key = created.key;
    let key_id = created.info.unwrap().key_id;

    // A session with the key in the query string (the URI is the likeliest thing to be logged).
    let url = |path: &str| format!("ws://{gateway_addr}{path}");
    let (mut ws, _) =
        tokio_tungstenite::connect_async(url(&format!("/v1/vertex-ai/live?key={key}")))
            .await
            .unwrap();
    session_turn(&mut ws).await;

    // A Developer-API-shaped session, relayed to the Developer API with the operator's key
    // (the emulator refuses any other).
    let mut req =
        url("/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent")
            .into_client_request()
            .unwrap();
    req.headers_mut()
        .insert("x-goog-api-key", key.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    session_turn(&mut ws).await;

    // A browser token minted over HTTP and used in the subprotocol.
    let (status, _, body) = http(
        gateway_addr,
        "POST",
        "/v1/live/tokens",
        &[("x-goog-api-key", &key)],
        &format!(r#"{{"ttl_seconds": 300, "model": "{MODEL}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut req = url("/v1/vertex-ai/live").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("livegate-key.{token}").parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    session_turn(&mut ws).await;

    // Refused credentials: a renewal attempt, a malformed subprotocol, a wrong key.
    let wrong = "lg-wrongwrongwrongwrongwrongwrongwrongwrong12";
    let auth_header = format!("Bearer {token}");
    let (status, _, _) = http(
        gateway_addr,
        "POST",
        "/v1/live/tokens",
        &[("authorization", &auth_header)],
        "",
    )
    .await;
    assert_eq!(status, 401);
    let malformed = format!("livegate-key. {token}");
    let (status, _, _) = http(
        gateway_addr,
        "POST",
        "/v1/live/tokens",
        &[("sec-websocket-protocol", &malformed)],
        "",
    )
    .await;
    assert_eq!(status, 401);
    let mut req = url("/v1/vertex-ai/live").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {wrong}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(close_of(&mut ws).await.0, 4401);

    // The Google token the gateway sent upstream: google-cloud-auth caches it, so auth hands
    // out the same one now.
    let mut req = tonic::Request::new(GetAccessTokenRequest::default());
    req.metadata_mut().insert(
        livegate_proto::contract::INTERNAL_TOKEN_METADATA,
        INTERNAL_SECRET.parse().unwrap(),
    );
    let google_token = admin
        .get_access_token(req)
        .await
        .unwrap()
        .into_inner()
        .access_token;
    assert!(
        google_token.len() > 100,
        "a self-signed JWT: {google_token}"
    );

    // Metering billed the three sessions, so it handled them at trace too.
    let sql = format!("SELECT count() FROM {db}.sessions FINAL WHERE key_id = '{key_id}'");
    let mut billed = String::new();
    for _ in 0..200 {
        billed = ch.query(&sql).await.unwrap();
        if billed.trim() == "3" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(billed.trim(), "3", "metering billed the three sessions");

    // A live session of the key, which revoking the key ends (the gateway's keys watch and
    // live policy), then records no service can read written over the key's: the paths that
    // handle key records log neither the record nor its KV key (`k.<hash>`).
    let (mut ws, _) =
        tokio_tungstenite::connect_async(url(&format!("/v1/vertex-ai/live?key={key}")))
            .await
            .unwrap();
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    let mut req = tonic::Request::new(livegate_proto::auth::RevokeKeyRequest {
        key: key_id.clone(),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {MASTER_SECRET}").parse().unwrap(),
    );
    admin.revoke_key(req).await.unwrap();
    assert_eq!(
        close_of(&mut ws).await,
        (4401, "API key revoked".to_string())
    );
    let hash = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    };
    let keys = async_nats::jetstream::new(nats.client().await.unwrap())
        .get_key_value(livegate_common::subjects::KEYS_BUCKET)
        .await
        .unwrap();
    for value in [
        format!(r#"{{"hash":"not-{hash}","key_id":"{key_id}","created_at":1}}"#),
        format!("not json {key_id}"),
        // A parser's message quotes a mistyped value.
        format!(
            r#"{{"hash":"{hash}","key_id":"{key_id}","alias":"a","created_at":1,"revoked":"{hash}"}}"#
        ),
    ] {
        keys.put(format!("k.{hash}"), value.into()).await.unwrap();
    }
    keys.delete(format!("k.{hash}")).await.unwrap();
    // Both watches have seen the writes when a key created after them is usable.
    let mut req = tonic::Request::new(CreateKeyRequest {
        settings: Some(KeySettings::default()),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {MASTER_SECRET}").parse().unwrap(),
    );
    let later = admin.create_key(req).await.unwrap().into_inner().key;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(url(&format!("/v1/vertex-ai/live?key={later}")))
            .await
            .unwrap();
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    ws.close(None).await.unwrap();
    let _ = close_of(&mut ws).await;
    // The gateway counted the three records it could not read (the delete it could).
    let (_, _, body) = http(gateway_addr, "GET", "/metrics", &[], "").await;
    assert!(
        body.lines()
            .any(|l| l == "livegate_gateway_key_records_ignored_total 3"),
        "{body}"
    );

    let mut procs = [gateway, metering, auth, emulator];
    for p in &mut procs {
        p.stop().await;
    }
    let google_signature = google_token.rsplit('.').next().unwrap().to_string();
    let secrets = [
        ("API key", key.clone()),
        ("API key fragment", key[3..20].to_string()),
        ("key record's hash (its KV key)", hash.clone()),
        ("wrong API key", wrong.to_string()),
        ("browser token", token.clone()),
        (
            "browser token MAC",
            token.rsplit('.').next().unwrap().to_string(),
        ),
        ("Google access token", google_token.clone()),
        ("Google token signature", google_signature),
        ("Gemini API key", GEMINI_SECRET.to_string()),
        ("Gemini API key fragment", GEMINI_SECRET[6..20].to_string()),
        ("master key", MASTER_SECRET.to_string()),
        ("internal token", INTERNAL_SECRET.to_string()),
        ("conversation content", "prompt-3e9a71c4".to_string()),
    ];
    let mut leaks = Vec::new();
    for p in &procs {
        let out = p.output();
        for (what, secret) in &secrets {
            for line in out.lines().filter(|l| l.contains(secret.as_str())) {
                let shown: String = line.chars().take(400).collect();
                leaks.push(format!("{what} in the {} log: {shown}", p.name()));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets reached the logs:\n{}",
        leaks.join("\n")
    );
    // The logs are really at debug and below, and really saw the sessions.
    let gateway_log = procs[0].output();
    assert!(
        gateway_log.contains("credential accepted") && gateway_log.contains(&key_id),
        "the gateway logged the sessions at debug:\n{gateway_log}"
    );
    assert!(
        procs[3].output().contains("service-account JWT accepted"),
        "the emulator checked the Google token"
    );
    assert!(
        procs[3].output().contains("Developer API key accepted"),
        "the emulator checked the Gemini API key"
    );
}
