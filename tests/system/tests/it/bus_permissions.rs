//! Issue 14, hole 5: NATS is no longer an unauthenticated root of trust. A real nats-server
//! runs with `deploy/nats/permissions.conf` (the file compose, Kubernetes and start.sh deploy)
//! and TLS; each service connects as its own user through `livegate_common::nats`.
//!
//! Denials are proven twice: the server reports a permissions violation for the exact subject,
//! and an `admin` read afterwards shows nothing was written.

use futures_util::{SinkExt, StreamExt};
use livegate_common::nats::{NatsOptions, Role};
use livegate_common::subjects;
use livegate_emulator::{Emulator, EmulatorConfig};
use livegate_proto::auth::auth_client::AuthClient;
use livegate_proto::auth::{
    CheckKeyRequest, CreateKeyRequest, KeySettings, MintBrowserTokenRequest,
};
use livegate_system_tests::{
    INTERNAL, MASTER, MODEL, PROJECT, Service, open_session, read_turn, setup, text_turn,
};
use livegate_test_support::google::TestServiceAccount;
use livegate_test_support::nats::NatsServer;
use secrecy::SecretString;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const AUTH_BUCKET: &str = livegate_auth::config::AUTH_BUCKET;
const LEGACY_SECRET: &str = "secret.browser-token";

async fn spawn_auth(nats: &NatsServer, service_account: Option<&TestServiceAccount>) -> Service {
    let mut cfg = livegate_auth::Config::for_nats(nats.options_for("auth").unwrap());
    cfg.master_key = Some(SecretString::from(MASTER));
    cfg.internal_token = Some(SecretString::from(INTERNAL));
    cfg.google.application_credentials =
        service_account.map(|sa| sa.path.to_string_lossy().into_owned());
    let mut auth = Service::spawn(|l, rx| {
        livegate_auth::run(cfg, l, async {
            let _ = rx.await;
        })
    })
    .await;
    // Ready once an admin call answers (its buckets exist then), at most 15 s.
    let ready = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Ok(mut c) = AuthClient::connect(format!("http://{}", auth.addr)).await
                && c.list_keys(admin(Default::default())).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if ready.is_err() {
        let log = std::fs::read_to_string(nats.log_path()).unwrap_or_default();
        let ended = auth.ended().await.unwrap_or_else(|| "still running".into());
        panic!("auth did not become ready within 15 s ({ended}); nats log:\n{log}");
    }
    auth
}

fn admin<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
    req
}

fn internal<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        livegate_auth::INTERNAL_TOKEN_METADATA,
        INTERNAL.parse().unwrap(),
    );
    req
}

async fn auth_client(auth: &Service) -> AuthClient<tonic::transport::Channel> {
    AuthClient::connect(format!("http://{}", auth.addr))
        .await
        .unwrap()
}

/// Creates a key; returns (key, key id).
async fn create_key(auth: &Service, settings: KeySettings) -> (String, String) {
    let resp = auth_client(auth)
        .await
        .create_key(admin(CreateKeyRequest {
            settings: Some(settings),
        }))
        .await
        .unwrap()
        .into_inner();
    (resp.key, resp.info.unwrap().key_id)
}

/// A client connected as `user` with `role`'s inbox, and the server errors it receives
/// (permission violations arrive as asynchronous `-ERR`s).
async fn connect_as(
    options: &NatsOptions,
    role: Role,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let base = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        });
    let client = options.connect(base, role, "test").await.unwrap();
    (client, rx)
}

/// A JetStream context whose requests give up after 2 s: a denied request is never
/// answered, it only times out.
fn jetstream(client: async_nats::Client) -> async_nats::jetstream::Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client)
}

/// Waits (at most 5 s) for a server error naming a permissions violation on `subject`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) -> String {
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = errors.recv().await {
            if e.to_lowercase().contains("permissions violation") && e.contains(subject) {
                return Some(e);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(e)) => e,
        _ => panic!("no permissions violation for {subject} within 5 s"),
    }
}

async fn admin_get(nats: &NatsServer, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    let kv = js.get_key_value(bucket).await.unwrap();
    kv.get(key).await.unwrap().map(|v| v.to_vec())
}

#[tokio::test]
async fn anonymous_and_wrong_password_connections_are_refused() {
    let nats = NatsServer::start_secured().await.unwrap();
    let base = || async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));

    let anonymous = nats
        .anonymous_options()
        .connect(base(), Role::Gateway, "anonymous")
        .await;
    let err = anonymous.expect_err("an anonymous connection is refused");
    assert!(
        err.to_string().to_lowercase().contains("authorization"),
        "{err}"
    );

    let wrong = nats
        .anonymous_options()
        .with_user_password("gateway", "not-the-password")
        .connect(base(), Role::Gateway, "wrong")
        .await;
    assert!(wrong.is_err(), "a wrong password is refused");

    // Plain text is refused as well: the server requires TLS.
    let plain = NatsOptions::from(nats.url())
        .with_user_password("gateway", nats.password("gateway").unwrap())
        .connect(base(), Role::Gateway, "plain")
        .await;
    assert!(plain.is_err(), "a connection without TLS is refused");

    // The same user with its password over TLS gets in.
    nats.options_for("gateway")
        .unwrap()
        .connect(base(), Role::Gateway, "right")
        .await
        .expect("the gateway's own credentials work");
}

#[tokio::test]
async fn gateway_credentials_cannot_write_keys_or_spend_nor_read_the_browser_secret() {
    livegate_test_support::init_crypto();
    let nats = NatsServer::start_secured().await.unwrap();
    let mut auth = spawn_auth(&nats, None).await;
    let (_key, key_id) = create_key(&auth, KeySettings::default()).await;

    let (gw, mut errors) = connect_as(&nats.options_for("gateway").unwrap(), Role::Gateway).await;
    let js = jetstream(gw.clone());

    // What the gateway needs works: reading both buckets.
    let keys = js
        .get_key_value(subjects::KEYS_BUCKET)
        .await
        .expect("the gateway may look up the keys bucket");
    let mut names = keys.keys().await.expect("the gateway may list key records");
    let mut listed = Vec::new();
    while let Some(Ok(k)) = names.next().await {
        listed.push(k);
    }
    assert!(
        listed.iter().any(|k| k.starts_with("k.")),
        "the gateway sees key records: {listed:?}"
    );
    // The browser-token secret is not among them (it moved to auth's own bucket).
    assert!(
        !listed.iter().any(|k| k == LEGACY_SECRET),
        "the signing secret is readable from the keys bucket: {listed:?}"
    );
    assert_eq!(keys.get(LEGACY_SECRET).await.unwrap(), None);

    // 1. Forging a key record: through the KV API and as a bare publish.
    let forged = serde_json::json!({"key_id": "forged", "hash": "forged"}).to_string();
    assert!(
        keys.put("k.forged", forged.clone().into()).await.is_err(),
        "a KV put of a key record is not acknowledged"
    );
    violation(&mut errors, "$KV.livegate_keys.k.forged").await;
    gw.publish("$KV.livegate_keys.k.forged-raw", forged.into())
        .await
        .unwrap();
    gw.flush().await.unwrap();
    violation(&mut errors, "$KV.livegate_keys.k.forged-raw").await;

    // 2. Lowering a spend total.
    let spend_key = subjects::spend_key_for_key(&key_id);
    let spend = js
        .get_key_value(subjects::SPEND_BUCKET)
        .await
        .expect("the gateway may look up the spend bucket");
    assert!(spend.put(&spend_key, "0".into()).await.is_err());
    violation(&mut errors, &format!("$KV.livegate_spend.{spend_key}")).await;
    gw.publish("$KV.livegate_spend.team.t", "0".into())
        .await
        .unwrap();
    gw.flush().await.unwrap();
    violation(&mut errors, "$KV.livegate_spend.team.t").await;

    // 3. Reading the browser-token secret: the bucket, a direct get, a subscription to its
    //    subjects, and auth's replies.
    assert!(js.get_key_value(AUTH_BUCKET).await.is_err());
    violation(&mut errors, "$JS.API.STREAM.INFO.KV_livegate_auth").await;
    let direct =
        "$JS.API.DIRECT.GET.KV_livegate_auth.$KV.livegate_auth.browser-token-secret".to_string();
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        gw.request(direct.clone(), "".into()),
    )
    .await;
    assert!(
        !matches!(reply, Ok(Ok(ref m)) if !m.payload.is_empty()),
        "a direct get of the secret was answered"
    );
    violation(&mut errors, &direct).await;
    let _sub = gw.subscribe("$KV.livegate_auth.>").await.unwrap();
    gw.flush().await.unwrap();
    violation(&mut errors, "$KV.livegate_auth.>").await;
    let _sub = gw.subscribe("_INBOX.auth.>").await.unwrap();
    gw.flush().await.unwrap();
    violation(&mut errors, "_INBOX.auth.>").await;

    // 4. Consuming the usage stream (metering's job).
    let _ = livegate_common::stream::ensure_usage_stream(
        &jetstream(nats.client().await.unwrap()),
        subjects::STREAM,
        &livegate_common::stream::StreamLayout::default(),
    )
    .await
    .unwrap();
    let stream = js
        .get_stream(subjects::STREAM)
        .await
        .expect("stream info is allowed");
    assert!(
        stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(subjects::METERING_CONSUMER.into()),
                ..Default::default()
            })
            .await
            .is_err()
    );

    // Nothing of it reached the store.
    for k in ["k.forged", "k.forged-raw"] {
        assert_eq!(
            admin_get(&nats, subjects::KEYS_BUCKET, k).await,
            None,
            "{k}"
        );
    }
    for k in [spend_key.as_str(), "team.t"] {
        assert_eq!(
            admin_get(&nats, subjects::SPEND_BUCKET, k).await,
            None,
            "{k}"
        );
    }

    // The other services are fenced the same way: metering cannot write key records, auth
    // cannot write spend, the CLI reads nothing of the secret.
    let (m, mut m_errors) =
        connect_as(&nats.options_for("metering").unwrap(), Role::Metering).await;
    m.publish("$KV.livegate_keys.k.by-metering", "{}".into())
        .await
        .unwrap();
    m.flush().await.unwrap();
    violation(&mut m_errors, "$KV.livegate_keys.k.by-metering").await;
    let (a, mut a_errors) = connect_as(&nats.options_for("auth").unwrap(), Role::Auth).await;
    a.publish("$KV.livegate_spend.key.by-auth", "0".into())
        .await
        .unwrap();
    a.flush().await.unwrap();
    violation(&mut a_errors, "$KV.livegate_spend.key.by-auth").await;
    let (c, mut c_errors) = connect_as(&nats.options_for("cli").unwrap(), Role::Cli).await;
    assert!(jetstream(c).get_key_value(AUTH_BUCKET).await.is_err());
    violation(&mut c_errors, "$JS.API.STREAM.INFO.KV_livegate_auth").await;

    auth.stop().await;
}

#[tokio::test]
async fn a_legacy_browser_secret_moves_to_the_auth_bucket_and_old_tokens_stay_valid() {
    livegate_test_support::init_crypto();
    let nats = NatsServer::start_secured().await.unwrap();
    let mut auth = spawn_auth(&nats, None).await;
    let (key, _) = create_key(&auth, KeySettings::default()).await;
    let token = auth_client(&auth)
        .await
        .mint_browser_token(MintBrowserTokenRequest {
            credential: key,
            ttl_seconds: 600,
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    auth.stop().await;

    // Put the store back into its pre-upgrade layout: the secret in the keys bucket, no auth
    // bucket.
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    let secret = admin_get(&nats, AUTH_BUCKET, "browser-token-secret")
        .await
        .expect("auth keeps its secret in its own bucket");
    let keys = js.get_key_value(subjects::KEYS_BUCKET).await.unwrap();
    keys.put(LEGACY_SECRET, secret.clone().into())
        .await
        .unwrap();
    js.delete_key_value(AUTH_BUCKET).await.unwrap();

    let mut auth = spawn_auth(&nats, None).await;
    let checked = auth_client(&auth)
        .await
        .check_key(internal(CheckKeyRequest { credential: token }))
        .await
        .expect("a browser token minted before the upgrade is still valid")
        .into_inner();
    assert!(checked.is_browser_token);
    assert_eq!(
        admin_get(&nats, AUTH_BUCKET, "browser-token-secret").await,
        Some(secret),
        "the secret was moved, not replaced"
    );
    // Gone from the keys bucket, history included (a delete marker would keep old revisions).
    let keys = js.get_key_value(subjects::KEYS_BUCKET).await.unwrap();
    assert_eq!(keys.get(LEGACY_SECRET).await.unwrap(), None);
    let mut history = keys.history(LEGACY_SECRET).await.unwrap();
    let mut revisions = Vec::new();
    while let Some(Ok(e)) = history.next().await {
        revisions.push((e.operation, e.value.len()));
    }
    assert!(
        revisions.iter().all(|(_, len)| *len == 0),
        "old revisions of the secret remain: {revisions:?}"
    );
    auth.stop().await;
}

#[tokio::test]
async fn a_whole_session_with_per_service_credentials_is_relayed_and_billed() {
    livegate_test_support::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_secured().await.unwrap();
    let service_account = TestServiceAccount::generate(dir.path()).unwrap();
    let emulator = Emulator::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        EmulatorConfig {
            service_account_keys: vec![service_account.emulator_key()],
            ..EmulatorConfig::default()
        },
    )
    .await;
    let mut auth = spawn_auth(&nats, Some(&service_account)).await;

    let ch = livegate_test_support::clickhouse::ClickHouseServer::shared()
        .await
        .unwrap();
    let db = ch.create_database("bus").await.unwrap();
    let mut mcfg = livegate_metering::Config::for_servers(
        nats.options_for("metering").unwrap(),
        ch.http_url(),
        db.clone(),
    );
    mcfg.flush_interval = Duration::from_millis(100);
    let mut metering = Service::spawn(|l, rx| {
        livegate_metering::run(mcfg, l, async {
            let _ = rx.await;
        })
    })
    .await;

    let mut gw = livegate_gateway::Config::defaults(nats.options_for("gateway").unwrap());
    gw.auth_url = format!("http://{}", auth.addr);
    gw.internal_token = Some(SecretString::from(INTERNAL));
    gw.vertex_live_url = Some(emulator.url());
    gw.default_project = Some(PROJECT.to_string());
    gw.drain_grace = Duration::from_secs(1);
    gw.gateway_id = "gw-bus".into();
    let mut gateway = Service::spawn(|l, rx| {
        livegate_gateway::run(gw, l, async {
            let _ = rx.await;
        })
    })
    .await;

    let (key, key_id) = create_key(
        &auth,
        KeySettings {
            team_id: "team-bus".into(),
            ..KeySettings::default()
        },
    )
    .await;
    let mut req = format!("ws://{}/v1/vertex-ai/live", gateway.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    open_session(&mut ws, setup(MODEL)).await;
    ws.send(text_turn("What is the capital of France?"))
        .await
        .unwrap();
    read_turn(&mut ws).await;
    ws.close(None).await.unwrap();

    // Billed: the session's row in ClickHouse and the key's spend in KV, both written by
    // metering with its own credentials from events the gateway published with its own.
    let sql = format!("SELECT count() FROM {db}.sessions FINAL WHERE key_id = '{key_id}'");
    let mut rows = String::new();
    for _ in 0..200 {
        rows = ch.query(&sql).await.unwrap_or_default();
        if rows.trim() == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows.trim(), "1", "the session reached ClickHouse");
    let spend_key = subjects::spend_key_for_key(&key_id);
    let mut spent = None;
    for _ in 0..200 {
        spent = admin_get(&nats, subjects::SPEND_BUCKET, &spend_key).await;
        if spent.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spent = String::from_utf8(spent.expect("metering wrote the key's spend")).unwrap();
    assert!(
        livegate_common::spend::parse_usd(spent.as_bytes()).unwrap() > Default::default(),
        "spend {spent}"
    );

    gateway.stop().await;
    metering.stop().await;
    auth.stop().await;
    // The permission sets are complete: no service ran into a denial on the way.
    let log = std::fs::read_to_string(nats.log_path()).unwrap();
    let denials: Vec<&str> = log
        .lines()
        .filter(|l| l.to_lowercase().contains("violation"))
        .collect();
    assert!(denials.is_empty(), "denied on the way: {denials:#?}");
}

#[tokio::test]
async fn the_cli_user_is_enough_for_doctor_and_nothing_is_denied() {
    livegate_test_support::init_crypto();
    let nats = NatsServer::start_secured().await.unwrap();
    let mut auth = spawn_auth(&nats, None).await;
    let bin = livegate_test_support::workspace::workspace_bin("livegate").unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(bin)
            .args([
                "--auth-url",
                &format!("http://{}", auth.addr),
                "--master-key",
                MASTER,
            ])
            .args(["doctor", "--nats-url", &nats.url()])
            .args(["--clickhouse-url", "http://127.0.0.1:1"])
            .env("NATS_USER", "cli")
            .env("NATS_PASSWORD", nats.password("cli").unwrap())
            .env("NATS_TLS_CA", nats.ca_path().unwrap())
            .env_remove("NATS_CREDS")
            .env_remove("NATS_NKEY")
            .env("LIVEGATE_LOG", "error")
            .output(),
    )
    .await
    .expect("doctor finishes within 60 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "ok    NATS",
        "ok    JetStream",
        "ok    KV livegate_keys",
        "ok    KV livegate_spend",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    auth.stop().await;
    let log = std::fs::read_to_string(nats.log_path()).unwrap();
    let denials: Vec<&str> = log
        .lines()
        .filter(|l| l.to_lowercase().contains("violation"))
        .collect();
    assert!(denials.is_empty(), "denied: {denials:#?}");
}
