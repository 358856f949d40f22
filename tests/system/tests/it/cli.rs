//! The `livegate` admin CLI against a running stack.

use clap::Parser;
use livegate_system_tests::*;

async fn cli(args: &[&str]) -> (anyhow::Result<()>, String) {
    let args =
        livegate::Args::try_parse_from(std::iter::once("livegate").chain(args.iter().copied()))
            .unwrap();
    let mut out = Vec::new();
    let result = livegate::run(args, &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn keys_lifecycle_and_tokens_through_the_cli() {
    let stack = Stack::start().await;
    let auth = format!("http://{}", stack.auth.addr);
    let base = ["--auth-url", auth.as_str(), "--master-key", MASTER];
    let with = |rest: &[&'static str]| {
        base.iter()
            .copied()
            .chain(rest.iter().copied())
            .collect::<Vec<_>>()
    };

    let (r, out) = cli(&with(&[
        "keys",
        "create",
        "--alias",
        "cli-app",
        "--team",
        "t1",
        "--models",
        "gemini-live-2.5-flash",
        "--max-sessions",
        "3",
        "--max-budget",
        "12.5",
        "--expires",
        "30d",
    ]))
    .await;
    r.unwrap();
    let key = out.lines().last().unwrap().to_string();
    assert!(
        key.starts_with("lg-"),
        "the key alone on the last line: {out}"
    );
    // The key works at the gateway.
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;

    let (r, out) = cli(&with(&["keys", "list", "--json"])).await;
    r.unwrap();
    let list: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(list[0]["alias"], "cli-app");
    assert_eq!(list[0]["max_budget_usd"], "12.5");
    assert!(!out.contains(&key), "list never shows keys");

    let (r, out) = cli(&with(&["keys", "update", "cli-app", "--max-sessions", "5"])).await;
    r.unwrap();
    assert!(out.starts_with("updated key_"));

    let (r, out) = cli(&["--auth-url", &auth, "token", "--key", &key, "--ttl", "5m"]).await;
    r.unwrap();
    assert!(out.trim().starts_with("lgb-"));

    let (r, out) = cli(&with(&["keys", "revoke", "cli-app"])).await;
    r.unwrap();
    assert!(out.starts_with("revoked key_"));

    // Errors are one clear line.
    let (r, _) = cli(&["--auth-url", &auth, "--master-key", "wrong", "keys", "list"]).await;
    assert_eq!(
        r.unwrap_err().to_string(),
        "wrong master key (Unauthenticated)"
    );
    let (r, _) = cli(&[
        "--auth-url",
        "http://127.0.0.1:1",
        "--master-key",
        MASTER,
        "keys",
        "list",
    ])
    .await;
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("cannot reach the auth service"), "{e}");
}

#[tokio::test]
async fn doctor_reports_each_check_with_a_fix() {
    let stack = Stack::start().await;
    let auth = format!("http://{}", stack.auth.addr);
    let nats = stack.nats.url();
    let (r, out) = cli(&[
        "--auth-url",
        &auth,
        "--master-key",
        MASTER,
        "doctor",
        "--nats-url",
        &nats,
        "--internal-token",
        INTERNAL,
        "--clickhouse-url",
        "http://127.0.0.1:1",
    ])
    .await;
    assert!(r.is_err(), "ClickHouse is missing, so doctor fails:\n{out}");
    for line in [
        "ok    NATS",
        "ok    JetStream",
        "ok    KV livegate_keys",
        "ok    KV livegate_spend",
        "FAIL  ClickHouse",
        "ok    auth",
        "ok    master key",
        "ok    Google credentials     token minted from GOOGLE_APPLICATION_CREDENTIALS",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    assert!(out.contains("fix: start ClickHouse"), "{out}");
}
