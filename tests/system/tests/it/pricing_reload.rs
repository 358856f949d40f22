//! Prices reload without restarts: one SIGHUP to each process re-reads `PRICING_FILE` in the
//! gateway (per-turn budget predictions, from the next turn of a running session) and in
//! metering (the bill), and a broken file on SIGHUP keeps the previous prices in both, counted
//! as `livegate_<service>_pricing_reloads_total{outcome="error"}`.
//!
//! The gateway and metering run as their own processes (the binaries `cargo build --workspace
//! --bins` builds), so the signal goes to the process as `kill -HUP` would send it; auth, the
//! emulator, NATS and ClickHouse as in every system test.

use crate::budgets::long_turn;
use futures_util::SinkExt;
use livegate_proto::auth::KeySettings;
use livegate_system_tests::process::Binary;
use livegate_system_tests::*;
use livegate_test_support::clickhouse::ClickHouseServer;
use rust_decimal::Decimal;
use std::time::Duration;

/// The emulator's model, at a price small enough that no budget here is ever near.
const CHEAP: &str =
    r#"{"gemini-live-2.5-flash": {"input_cost_per_token": 1e-09, "output_cost_per_token": 1e-09}}"#;
/// The same model's input at $100 per 1M tokens: one long turn (1,000 prompt tokens) predicts
/// $0.1. Output stays cheap (the emulator echoes the prompt, about as many tokens again), so
/// the turn the dear price admits is not the one that spends the budget.
const DEAR: &str =
    r#"{"gemini-live-2.5-flash": {"input_cost_per_token": 1e-04, "output_cost_per_token": 1e-09}}"#;
const CHEAP_PER_TOKEN: Decimal = Decimal::from_parts(1, 0, 0, false, 9);
const DEAR_PER_TOKEN: Decimal = Decimal::from_parts(1, 0, 0, false, 4);
const DEADLINE: Duration = Duration::from_secs(60);

fn spawn_gateway(stack: &Stack, dir: &std::path::Path, prices: &std::path::Path) -> Binary {
    let mut env = stack.gateway_env("gw-reload-test");
    env.push(("PRICING_FILE", prices.display().to_string()));
    Binary::spawn("livegate-gateway", dir, &[], &env)
}

fn spawn_metering(
    stack: &Stack,
    dir: &std::path::Path,
    prices: &std::path::Path,
    ch: &ClickHouseServer,
    db: &str,
) -> Binary {
    Binary::spawn(
        "livegate-metering",
        dir,
        &[],
        &[
            ("LIVEGATE_LOG", "info".into()),
            ("NATS_URL", stack.nats.url()),
            ("CLICKHOUSE_URL", ch.http_url()),
            ("CLICKHOUSE_DATABASE", db.into()),
            ("METERING_LISTEN", "127.0.0.1:0".into()),
            ("METERING_FLUSH_INTERVAL", "100ms".into()),
            ("PRICING_FILE", prices.display().to_string()),
        ],
    )
}

/// The value of the series `series` (name and labels, as exposed) in `/metrics` at `addr`.
async fn metric(addr: std::net::SocketAddr, series: &str) -> Option<f64> {
    metric_value(&scrape(addr).await, series)
}

/// Waits (bounded) until `series` at `addr` reads `want`.
async fn wait_metric(addr: std::net::SocketAddr, series: &str, want: f64, who: &Binary) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            panic!(
                "{} no longer answers (did the signal end it?):\n{}",
                who.name(),
                who.output()
            );
        }
        let got = metric(addr, series).await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is {got:?}, not {want}; {} said:\n{}",
            who.name(),
            who.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Both services' reload counters, as they should read: `(ok, error)`.
async fn reloads_are(
    gw: (std::net::SocketAddr, &Binary),
    me: (std::net::SocketAddr, &Binary),
    ok: f64,
    error: f64,
) {
    for (addr, bin, service) in [(gw.0, gw.1, "gateway"), (me.0, me.1, "metering")] {
        let family = format!("livegate_{service}_pricing_reloads_total");
        wait_metric(addr, &format!("{family}{{outcome=\"ok\"}}"), ok, bin).await;
        if error > 0.0 {
            wait_metric(addr, &format!("{family}{{outcome=\"error\"}}"), error, bin).await;
        } else {
            // Exported at zero from the start, so alerts have a series to watch.
            assert_eq!(
                metric(addr, &format!("{family}{{outcome=\"error\"}}")).await,
                Some(0.0)
            );
        }
    }
}

/// A session on `key` through the gateway process at `addr`, set up.
async fn connect(addr: std::net::SocketAddr, key: &str) -> Ws {
    let mut ws = connect_at(addr, "/v1/vertex-ai/live", Some(key)).await;
    open_session(&mut ws, setup(MODEL)).await;
    ws
}

/// A key whose own budget is `usd`; returns (key, key id).
async fn key_with_budget(stack: &Stack, usd: &str) -> (String, String) {
    stack
        .create_key(KeySettings {
            max_budget_usd: usd.into(),
            ..KeySettings::default()
        })
        .await
}

/// One long turn, answered; returns its (prompt, response) token counts.
async fn answered_turn(ws: &mut Ws) -> (u64, u64) {
    ws.send(long_turn()).await.unwrap();
    let turn = read_turn(ws).await;
    let u = json_of(turn.last().unwrap())["usageMetadata"].clone();
    let n = |k: &str| u[k].as_u64().unwrap_or_else(|| panic!("{k} in {u}"));
    (n("promptTokenCount"), n("candidatesTokenCount"))
}

/// The refusal of the next long turn: its notice's `budget` object, after checking the close
/// and that the upstream never saw the turn.
async fn refused_turn(stack: &Stack, ws: &mut Ws) -> serde_json::Value {
    let upstream_frames = stack.emulator.stats().frames_in;
    ws.send(long_turn()).await.unwrap();
    let notice = json_of(&next_frame(ws).await);
    assert_eq!(notice["error"]["code"], 4402, "{notice}");
    assert_eq!(notice["error"]["status"], "BUDGET_EXCEEDED", "{notice}");
    let (code, reason) = close_of(ws).await;
    assert_eq!(code, 4402, "{reason}");
    assert!(reason.contains("turn refused"), "{reason}");
    assert_eq!(
        stack.emulator.stats().frames_in,
        upstream_frames,
        "the refused turn reached the upstream"
    );
    notice["error"]["budget"].clone()
}

fn usd(budget: &serde_json::Value, field: &str) -> Decimal {
    budget[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {budget}"))
        .parse()
        .unwrap()
}

/// `SELECT toString(…)` of the usage rows of `key_id` once there are `rows` of them (bounded).
async fn usage_of(ch: &ClickHouseServer, db: &str, key_id: &str, rows: u64) -> Decimal {
    let count = format!("SELECT count() FROM {db}.usage_events FINAL WHERE key_id = '{key_id}'");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let n: u64 = ch.query(&count).await.unwrap().trim().parse().unwrap();
        if n >= rows {
            assert_eq!(n, rows, "usage rows of {key_id}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} of {rows} usage rows of {key_id} in ClickHouse"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ch.query(&format!(
        "SELECT toString(sum(input_cost_usd)) FROM {db}.usage_events FINAL WHERE key_id = '{key_id}'"
    ))
    .await
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

#[tokio::test]
async fn one_sighup_reprices_the_gateway_from_the_next_turn_and_metering_and_a_broken_file_keeps_the_prices()
 {
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.json");
    std::fs::write(&prices, CHEAP).unwrap();
    let stack = Stack::start().await;
    let ch = ClickHouseServer::shared().await.unwrap();
    let db = ch.create_database("pricing_reload").await.unwrap();
    let mut gw = spawn_gateway(&stack, dir.path(), &prices);
    let mut me = spawn_metering(&stack, dir.path(), &prices, ch, &db);
    let gw_addr: std::net::SocketAddr = gw.addr().await.parse().unwrap();
    let me_addr: std::net::SocketAddr = me.addr().await.parse().unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while http(me_addr, "GET", "/readyz", &[], "").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "metering not ready:\n{}",
            me.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // At the cheap price a $0.01 budget is nowhere near: two long turns are answered.
    let (key_a, key_a_id) = key_with_budget(&stack, "0.01").await;
    let mut a = connect(gw_addr, &key_a).await;
    let (p1, _) = answered_turn(&mut a).await;
    let (p2, _) = answered_turn(&mut a).await;
    // Billed at the cheap price (both rows in before the prices change: metering prices an
    // event when it consumes it).
    assert_eq!(
        usage_of(ch, &db, &key_a_id, 2).await,
        Decimal::from(p1 + p2) * CHEAP_PER_TOKEN
    );

    // New prices, one SIGHUP to each process, no restart.
    std::fs::write(&prices, DEAR).unwrap();
    gw.signal("-HUP").await;
    me.signal("-HUP").await;
    reloads_are((gw_addr, &gw), (me_addr, &me), 1.0, 0.0).await;

    // The running session's next turn is predicted at the new price: 1,000 prompt tokens at
    // $1e-4 no longer fit in what is left of $0.01, so it is refused before the upstream.
    let budget = refused_turn(&stack, &mut a).await;
    assert_eq!(
        usd(&budget, "nextTurnUsd"),
        Decimal::from(p2) * DEAR_PER_TOKEN,
        "{budget}"
    );

    // A broken file: logged, counted as an error, and the previous (dear) prices stay.
    std::fs::write(&prices, "{\"gemini-live-2.5-flash\": {").unwrap();
    gw.signal("-HUP").await;
    me.signal("-HUP").await;
    reloads_are((gw_addr, &gw), (me_addr, &me), 1.0, 1.0).await;
    for bin in [&gw, &me] {
        assert!(
            bin.output()
                .contains("pricing file reload failed; keeping the previous prices"),
            "{}:\n{}",
            bin.name(),
            bin.output()
        );
    }

    // A new session at the dear price: a first turn fits in $0.15, and then the second's floor
    // ($0.1 on top of the first's ~$0.1) does not. At the built-in price (what an emptied
    // table would fall back to) both would fit with room to spare.
    let (key_b, key_b_id) = key_with_budget(&stack, "0.15").await;
    let mut b = connect(gw_addr, &key_b).await;
    let (p, r) = answered_turn(&mut b).await;
    let budget = refused_turn(&stack, &mut b).await;
    assert_eq!(
        usd(&budget, "nextTurnUsd"),
        Decimal::from(p) * DEAR_PER_TOKEN,
        "{budget}"
    );
    assert_eq!(
        usd(&budget, "spentUsd") + usd(&budget, "inFlightUsd"),
        Decimal::from(p) * DEAR_PER_TOKEN + Decimal::from(r) * CHEAP_PER_TOKEN,
        "the first turn counted at the dear price: {budget}"
    );
    // And metering billed it at the dear price too.
    assert_eq!(
        usage_of(ch, &db, &key_b_id, 1).await,
        Decimal::from(p) * DEAR_PER_TOKEN
    );

    gw.stop().await;
    me.stop().await;
    for bin in [&gw, &me] {
        assert!(
            bin.output().contains(" stopped"),
            "{} stops cleanly after the signals:\n{}",
            bin.name(),
            bin.output()
        );
    }
}
