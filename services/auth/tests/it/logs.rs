//! Process-level: the `livegate-auth` binary never logs a key, a browser token or the master key.

use crate::helpers::*;
use livegate_proto::auth::auth_client::AuthClient;
use livegate_proto::auth::*;
use livegate_test_support::nats::NatsServer;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let nats = NatsServer::start().await.unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_livegate-auth"))
        .env("NATS_URL", nats.url())
        .env("AUTH_LISTEN", "127.0.0.1:0")
        .env("LIVEGATE_MASTER_KEY", MASTER)
        .env("LIVEGATE_INTERNAL_TOKEN", INTERNAL)
        .env("LIVEGATE_LOG", "debug")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("DEFAULT_GOOGLE_APPLICATION_CREDENTIALS")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if let Some(rest) = line.split("listening on ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("auth exited before listening:\n{log}");
    })
    .await
    .expect("auth did not log its address");

    let mut c = AuthClient::connect(format!("http://{addr}")).await.unwrap();
    let (key, key_id) = create_key(
        &mut c,
        KeySettings {
            alias: "logged".into(),
            ..Default::default()
        },
    )
    .await;
    c.check_key(CheckKeyRequest {
        credential: key.clone(),
    })
    .await
    .unwrap();
    let token = c
        .mint_browser_token(MintBrowserTokenRequest {
            credential: key.clone(),
            ttl_seconds: 60,
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    c.check_key(CheckKeyRequest {
        credential: token.clone(),
    })
    .await
    .unwrap();
    c.revoke_key(admin(RevokeKeyRequest {
        key: key_id.clone(),
    }))
    .await
    .unwrap();
    let _ = c
        .check_key(CheckKeyRequest {
            credential: key.clone(),
        })
        .await;

    // SIGTERM, then read the rest of the log until the process exits.
    let pid = child.id().unwrap().to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
        }
    })
    .await
    .expect("auth did not stop on SIGTERM");
    assert!(
        child.wait().await.unwrap().success(),
        "exit status after SIGTERM:\n{log}"
    );

    assert!(log.contains(&key_id), "key ids are logged:\n{log}");
    assert!(log.contains("livegate-auth stopped"));
    for secret in [&key, &token, &MASTER.to_string(), &INTERNAL.to_string()] {
        assert!(
            !log.contains(secret.as_str()),
            "a secret reached the log:\n{log}"
        );
    }
    // Not even a recognisable fragment of the key.
    assert!(!log.contains(&key[3..20]));
}
