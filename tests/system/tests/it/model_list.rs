//! A LiteLLM config.yaml with a `model_list` of two aliases in two projects, each with its own
//! credentials, works unchanged: each alias's session reaches upstream as its deployment's
//! model, in its project and location, with a token from its credential set, and its usage
//! row names its project; per-key `allowed_models` apply to the aliases.
//!
//! A recording relay between the gateway and the emulator shows what upstream saw: the
//! `x-goog-user-project` header, the setup's model, and which service account signed the
//! bearer JWT.

use futures_util::{SinkExt as _, StreamExt as _};
use livegate_common::config::FileConfig;
use livegate_proto::auth::KeySettings;
use livegate_system_tests::*;
use livegate_test_support::google::TestServiceAccount;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// What upstream saw of one session.
#[derive(Debug, Clone, Default)]
struct Seen {
    project_header: String,
    model: String,
    /// `a` or `b`: the service account whose key signed the bearer JWT.
    signer: String,
}

/// Accepts the gateway's upstream connections, records them, and relays each to `target`
/// with the same headers.
async fn recording_relay(
    accounts: Arc<Vec<(&'static str, TestServiceAccount)>>,
    target: Arc<OnceLock<String>>,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (accounts, target, record) = (accounts.clone(), target.clone(), record.clone());
            tokio::spawn(async move {
                let headers = Arc::new(Mutex::new(http::HeaderMap::new()));
                let keep = headers.clone();
                #[expect(
                    clippy::result_large_err,
                    reason = "tungstenite's callback type fixes the error type"
                )]
                let callback = move |req: &Request, resp: Response| {
                    *keep.lock().unwrap() = req.headers().clone();
                    Ok(resp)
                };
                let mut client = tokio_tungstenite::accept_hdr_async(tcp, callback)
                    .await
                    .unwrap();
                let headers = headers.lock().unwrap().clone();
                let bearer = headers["authorization"].to_str().unwrap().to_string();
                let jwt = bearer.strip_prefix("Bearer ").unwrap();
                let signer = accounts
                    .iter()
                    .find(|(_, sa)| sa.verify_jwt(jwt).is_ok())
                    .map(|(name, _)| name.to_string())
                    .unwrap_or_default();
                let setup = client.next().await.unwrap().unwrap();
                let model = json_of(&setup)["setup"]["model"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                record.lock().unwrap().push(Seen {
                    project_header: headers
                        .get("x-goog-user-project")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default(),
                    model,
                    signer,
                });
                let mut req = target
                    .get()
                    .unwrap()
                    .as_str()
                    .into_client_request()
                    .unwrap();
                for name in ["authorization", "x-goog-user-project"] {
                    if let Some(v) = headers.get(name) {
                        req.headers_mut().insert(name, v.clone());
                    }
                }
                let (mut upstream, _) = tokio_tungstenite::connect_async(req).await.unwrap();
                upstream.send(setup).await.unwrap();
                let (mut cw, mut cr) = client.split();
                let (mut uw, mut ur) = upstream.split();
                let up = async {
                    while let Some(Ok(m)) = cr.next().await {
                        if uw.send(m).await.is_err() {
                            break;
                        }
                    }
                    let _ = uw.close().await;
                };
                let down = async {
                    while let Some(Ok(m)) = ur.next().await {
                        if cw.send(m).await.is_err() {
                            break;
                        }
                    }
                    let _ = cw.close().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (url, seen)
}

const CONFIG: &str = r#"
model_list:
  - model_name: live-a
    litellm_params:
      model: vertex_ai/gemini-live-2.5-flash
      vertex_project: project-a
      vertex_location: us-central1
      vertex_credentials: CREDS_A
  - model_name: live-b
    litellm_params:
      model: vertex_ai/gemini-2.0-flash-live-preview-04-09
      vertex_project: os.environ/LIVE_B_PROJECT
      vertex_location: europe-west4
      vertex_credentials: os.environ/LIVE_B_CREDENTIALS
  - model_name: chat
    litellm_params:
      model: openai/gpt-4o
litellm_settings:
  drop_params: true
"#;

async fn text_session(stack: &Stack, key: &str, model: &str) -> Ws {
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(key)).await;
    ws.send(setup(model)).await.unwrap();
    ws
}

#[tokio::test]
async fn a_litellm_model_list_with_two_projects_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let sa_a = TestServiceAccount::generate(&dir.path().join("a")).unwrap();
    let sa_b = TestServiceAccount::generate(&dir.path().join("b")).unwrap();
    let env = HashMap::from([
        ("LIVE_B_PROJECT".to_string(), "project-b".to_string()),
        (
            "LIVE_B_CREDENTIALS".to_string(),
            sa_b.path.to_string_lossy().into_owned(),
        ),
    ]);
    let yaml = CONFIG.replace("CREDS_A", &sa_a.path.to_string_lossy());
    let file = FileConfig::parse(&yaml, &env).unwrap();
    let auth_cfg = livegate_auth::Config::load(&file, &env).unwrap();
    let gw_cfg = GatewayConfig::load(&file, &env).unwrap();
    let emulator_keys = vec![sa_a.emulator_key(), sa_b.emulator_key()];
    let accounts = Arc::new(vec![("a", sa_a), ("b", sa_b)]);
    let target = Arc::new(OnceLock::new());
    let (relay_url, seen) = recording_relay(accounts, target.clone()).await;

    let stack = Stack::start_with(Options {
        metering: true,
        gateway: Box::new(move |g| {
            g.model_list = gw_cfg.model_list;
            g.vertex_live_url = Some(relay_url);
        }),
        auth: Box::new(move |a| {
            a.google.deployment_credentials = auth_cfg.google.deployment_credentials
        }),
        emulator: Box::new(move |e| e.service_account_keys.extend(emulator_keys)),
        ..Options::default()
    })
    .await;
    target.set(stack.emulator.url()).unwrap();
    let (key, key_id) = stack.create_key(KeySettings::default()).await;

    for alias in ["live-a", "live-b"] {
        let mut ws = text_session(&stack, &key, alias).await;
        let first = next_frame(&mut ws).await;
        assert!(json_of(&first).get("setupComplete").is_some(), "{first:?}");
        ws.send(text_turn("Hello")).await.unwrap();
        let turn = read_turn(&mut ws).await;
        assert_eq!(turn_text(&turn), "You said: Hello", "{alias}");
        ws.close(None).await.unwrap();
    }

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].project_header.as_str(), seen[0].signer.as_str()),
        ("project-a", "a"),
        "{seen:?}"
    );
    assert_eq!(
        seen[0].model,
        "projects/project-a/locations/us-central1/publishers/google/models/gemini-live-2.5-flash"
    );
    assert_eq!(
        (seen[1].project_header.as_str(), seen[1].signer.as_str()),
        ("project-b", "b"),
        "{seen:?}"
    );
    assert_eq!(
        seen[1].model,
        "projects/project-b/locations/europe-west4/publishers/google/models/gemini-2.0-flash-live-preview-04-09"
    );

    // Each alias's cost row names its project.
    let count = stack
        .sql_until(
            Duration::from_secs(20),
            &format!(
                "SELECT count() FROM {{db}}.usage_events FINAL WHERE key_id = '{key_id}' \
                 HAVING count() >= 2"
            ),
        )
        .await;
    assert_eq!(count.trim(), "2", "usage rows");
    let rows = stack
        .sql(&format!(
            "SELECT project, location, model, cost_usd > 0 FROM {{db}}.usage_events FINAL \
             WHERE key_id = '{key_id}' ORDER BY project FORMAT TSV"
        ))
        .await;
    let rows: Vec<&str> = rows.trim().lines().collect();
    assert_eq!(
        rows,
        [
            "project-a\tus-central1\tgemini-live-2.5-flash\t1",
            "project-b\teurope-west4\tgemini-2.0-flash-live-preview-04-09\t1"
        ],
        "usage rows"
    );

    // allowed_models names aliases.
    let (only_a, _) = stack
        .create_key(KeySettings {
            allowed_models: vec!["live-a".into()],
            ..KeySettings::default()
        })
        .await;
    let mut ws = text_session(&stack, &only_a, "live-a").await;
    assert!(
        json_of(&next_frame(&mut ws).await)
            .get("setupComplete")
            .is_some()
    );
    ws.close(None).await.unwrap();
    let mut ws = text_session(&stack, &only_a, "live-b").await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 4403, "{reason}");
}
