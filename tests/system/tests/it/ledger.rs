//! The ledger read back: `livegate spend` must not let usage that no price table priced
//! (`priced = 0`, billed at $0) pass as free, and `livegate spend --reprice` must refuse a
//! price table it cannot read rather than report against the built-in prices alone.

use crate::cli::cli;
use livegate_test_support::ClickHouseServer;
use secrecy::SecretString;

/// A migrated database on the shared ClickHouse, with two keys' usage of today: `k-priced`
/// one priced row ($0.001), `k-mixed` one priced row ($0.002) and two rows of a model no table
/// knows (`mystery-model`, priced 0, cost 0).
async fn ledger() -> (&'static ClickHouseServer, String) {
    let ch = ClickHouseServer::shared().await.unwrap();
    let db = ch.create_database("ledger").await.unwrap();
    let store = livegate_metering::Store::new(&livegate_metering::config::ClickHouseConfig {
        url: ch.http_url(),
        database: db.clone(),
        user: "default".into(),
        password: SecretString::from(String::new()),
        cluster: None,
    });
    store.migrate().await.unwrap();
    ch.query(&format!(
        "INSERT INTO {db}.usage_events \
         (event_id, session_id, seq, ts, key_id, team_id, model, prompt_tokens, cost_usd, priced, pricing_entry) \
         VALUES \
         ('a:1', 'a', 1, now(), 'k-priced', 't', 'gemini-live-2.5-flash', 100, 0.001, 1, 'gemini-live-2.5-flash'), \
         ('b:1', 'b', 1, now(), 'k-mixed', 't', 'gemini-live-2.5-flash', 200, 0.002, 1, 'gemini-live-2.5-flash'), \
         ('b:2', 'b', 2, now(), 'k-mixed', 't', 'mystery-model', 5000, 0, 0, ''), \
         ('b:3', 'b', 3, now(), 'k-mixed', 't', 'mystery-model', 7000, 0, 0, '')"
    ))
    .await
    .unwrap();
    (ch, db)
}

#[tokio::test]
async fn spend_flags_usage_that_no_price_table_priced() {
    let (ch, db) = ledger().await;
    let url = ch.http_url();
    let base = [
        "spend",
        "--clickhouse-url",
        &url,
        "--clickhouse-database",
        &db,
    ];

    let (r, out) = cli(&[&base[..], &["--json"]].concat()).await;
    r.unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let group = |key: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == key)
            .unwrap_or_else(|| panic!("no group {key} in {v}"))
            .clone()
    };
    assert_eq!(group("k-mixed")["cost_usd"], "0.002", "{v}");
    assert_eq!(group("k-mixed")["unpriced_events"], 2, "{v}");
    assert_eq!(group("k-priced")["unpriced_events"], 0, "{v}");

    let (r, out) = cli(&base).await;
    r.unwrap();
    assert!(
        out.contains("warning: usage of models without a price is counted at $0")
            && out.contains("mystery-model (2 event(s))"),
        "{out}"
    );
    // Only the key asked about.
    let (r, out) = cli(&[&base[..], &["--key", "k-priced"]].concat()).await;
    r.unwrap();
    assert!(!out.contains("warning"), "{out}");
}

#[tokio::test]
async fn reprice_refuses_a_price_table_it_cannot_read() {
    let (ch, db) = ledger().await;
    let url = ch.http_url();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("prices.json");
    std::fs::write(
        &broken,
        r#"{"gemini-live-2.5-flash": {"input_cost_per_token": "#,
    )
    .unwrap();
    let negative = dir.path().join("negative.json");
    std::fs::write(
        &negative,
        r#"{"gemini-live-2.5-flash": {"input_cost_per_token": -1e-06}}"#,
    )
    .unwrap();
    for table in [&broken, &negative, &dir.path().join("missing.json")] {
        let (r, out) = reprice(table, &url, &db).await;
        let e = r.expect_err("a broken price table was accepted");
        assert!(
            format!("{e:#}").contains("cannot load the price table"),
            "{e:#}"
        );
        assert!(out.is_empty(), "{out}");
    }
}

/// `livegate spend --reprice table` against the ledger's database.
async fn reprice(table: &std::path::Path, url: &str, db: &str) -> (anyhow::Result<()>, String) {
    cli(&[
        "spend",
        "--reprice",
        table.to_str().unwrap(),
        "--clickhouse-url",
        url,
        "--clickhouse-database",
        db,
    ])
    .await
}

#[tokio::test]
async fn reprice_with_an_absurd_price_is_an_error_not_a_panic() {
    // 10^25 USD a token: 5,000 and 7,000 tokens each fit `Decimal`, their sum does not.
    let (ch, db) = ledger().await;
    let url = ch.http_url();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("prices.json");
    std::fs::write(
        &table,
        r#"{"mystery-model": {"input_cost_per_token": "10000000000000000000000000"}}"#,
    )
    .unwrap();
    let (r, _) = reprice(&table, &url, &db).await;
    let e = r.expect_err("an overflowing reprice was printed");
    assert!(
        format!("{e:#}").contains("repriced cost overflows"),
        "{e:#}"
    );
}
