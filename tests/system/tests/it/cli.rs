//! The `livegate` admin CLI against a running stack.

use clap::Parser;
use futures_util::SinkExt;
use livegate_system_tests::*;
use std::str::FromStr;
use std::time::Duration;

/// Runs `livegate ARGS` in this process: its result and what it printed.
pub(crate) async fn cli(args: &[&str]) -> (anyhow::Result<()>, String) {
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

#[tokio::test]
async fn spend_reprice_prices_the_stored_usage_with_another_table() {
    let stack = Stack::start_with(Options {
        metering: true,
        ..Options::default()
    })
    .await;
    let key = stack.key().await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    for text in ["one", "two"] {
        ws.send(litellm_text_turn(text)).await.unwrap();
        read_turn(&mut ws).await;
    }
    ws.close(None).await.unwrap();
    // Both turns' usage rows and their receipts (written before them, so receipts alone are
    // not enough: the rows may still be on their way).
    let stored = stack
        .sql_until(
            Duration::from_secs(30),
            "SELECT (SELECT count() FROM {db}.usage_events FINAL) >= 2 \
             AND (SELECT count() FROM {db}.usage_events FINAL) \
               = (SELECT count() FROM {db}.usage_receipts FINAL WHERE usage_json != '')",
        )
        .await;
    assert_eq!(stored.trim(), "1", "usage of both turns not stored");
    let billed = rust_decimal::Decimal::from_str(
        stack
            .sql("SELECT toString(sum(cost_usd)) FROM {db}.usage_events FINAL")
            .await
            .trim(),
    )
    .unwrap();
    assert!(billed > rust_decimal::Decimal::ZERO);

    // Every price of the model doubled: the text turns cost exactly twice as much.
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("prices.json");
    std::fs::write(
        &table,
        format!(
            r#"{{"{MODEL}": {{"input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06,
                "input_cost_per_audio_token": 6e-06, "output_cost_per_audio_token": 2.4e-05}}}}"#
        ),
    )
    .unwrap();
    let (ch, db) = stack.clickhouse.as_ref().unwrap();
    let url = ch.http_url();
    let (r, out) = cli(&[
        "spend",
        "--reprice",
        table.to_str().unwrap(),
        "--by",
        "model",
        "--json",
        "--clickhouse-url",
        &url,
        "--clickhouse-database",
        db,
    ])
    .await;
    r.unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let dec = |v: &serde_json::Value| rust_decimal::Decimal::from_str(v.as_str().unwrap()).unwrap();
    assert_eq!(v["groups"][0]["group"], MODEL, "{v}");
    assert_eq!(dec(&v["total"]["billed_usd"]), billed.normalize(), "{v}");
    assert_eq!(
        dec(&v["total"]["repriced_usd"]),
        billed * rust_decimal::Decimal::TWO,
        "{v}"
    );
    assert_eq!(
        dec(&v["total"]["difference_usd"]),
        billed.normalize(),
        "{v}"
    );
    assert_eq!(v["total"]["unpriced_events"], 0);
    assert_eq!(v["pricing_version"].as_str().unwrap().len(), 16, "{v}");

    // The table view names the table and the total line.
    let (r, out) = cli(&[
        "spend",
        "--reprice",
        table.to_str().unwrap(),
        "--clickhouse-url",
        &url,
        "--clickhouse-database",
        db,
    ])
    .await;
    r.unwrap();
    assert!(
        out.contains("repriced with ") && out.contains("TOTAL"),
        "{out}"
    );
}
