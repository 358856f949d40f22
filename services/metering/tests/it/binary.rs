//! Process-level: the `livegate-metering` binary logs each ended session's cost in the exact
//! documented form, reloads `PRICING_FILE` on SIGHUP (a broken file keeps the prices, both
//! counted in `livegate_metering_pricing_reloads_total`), serves health and metrics, and exits
//! cleanly on SIGTERM.

use crate::helpers::*;
use livegate_proto::usage::MediaMeasurements;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The child's stderr, collected line by line as it arrives.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn find(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.0.lock().unwrap().iter().find(|l| pred(l)).cloned()
    }

    async fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        eventually(what, || async { self.find(&pred) }).await
    }

    fn dump(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn the_binary_logs_session_costs_reloads_prices_and_stops_on_sigterm() {
    // The binary uses the contract's stream, consumer and bucket names.
    let w = World::with_contract_names().await;
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.json");
    std::fs::write(
        &prices,
        r#"{"test-model": {"input_cost_per_token": 1e-06}}"#,
    )
    .unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_livegate-metering"))
        .env("NATS_URL", w.nats.url())
        .env("CLICKHOUSE_URL", w.ch.http_url())
        .env("CLICKHOUSE_DATABASE", &w.db)
        .env("METERING_LISTEN", "127.0.0.1:0")
        .env("METERING_FLUSH_INTERVAL", "100ms")
        .env("PRICING_FILE", &prices)
        .env("LIVEGATE_LOG", "info")
        .env("LIVEGATE_LOG_FORMAT", "text")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let log = Log::default();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.0.lock().unwrap().push(line);
        }
    });

    let listening = log
        .wait_for("the listening line", |l| l.contains("listening on "))
        .await;
    let addr: std::net::SocketAddr = listening
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap();
    if tokio::time::timeout(
        Duration::from_secs(30),
        log.wait_for("consuming", |l| l.contains("consuming usage events")),
    )
    .await
    .is_err()
    {
        panic!("metering did not start consuming:\n{}", log.dump());
    }

    // 1000 prompt tokens at $1 per 1M; 700 + 500 characters; 45.2 s.
    let s = context("bin1", "kb", "tb", "test-model");
    let mut r = text_report(&s, 1, 1000, 0);
    r.media = Some(MediaMeasurements {
        input_characters: 700,
        output_characters: 500,
        ..MediaMeasurements::default()
    });
    w.publish_report(&r).await;
    w.publish_session(&ended(&s, 1, 45.2, MediaMeasurements::default()))
        .await;
    let line = "Vertex AI Live WebSocket session cost: $0.001000 (input: $0.001000, output: $0.000000) tokens: 1000, characters: 1200, duration: 45.2s";
    log.wait_for("the session cost line", |l| l.contains(line))
        .await;

    // New prices, SIGHUP, and the next session is priced with them.
    std::fs::write(
        &prices,
        r#"{"test-model": {"input_cost_per_token": 2e-06}}"#,
    )
    .unwrap();
    signal(pid, "-HUP");
    log.wait_for("the reload", |l| l.contains("pricing file reloaded"))
        .await;
    let s = context("bin2", "kb", "tb", "test-model");
    w.publish_report(&text_report(&s, 1, 1000, 0)).await;
    w.publish_session(&ended(&s, 1, 1.0, MediaMeasurements::default()))
        .await;
    let line = "Vertex AI Live WebSocket session cost: $0.002000 (input: $0.002000, output: $0.000000) tokens: 1000, characters: 0, duration: 1.0s";
    log.wait_for("the second session cost line", |l| l.contains(line))
        .await;

    // A broken file on SIGHUP: logged at error, counted, and the prices in force stay.
    std::fs::write(&prices, r#"{"test-model": {"input_cost_per_token": "#).unwrap();
    signal(pid, "-HUP");
    log.wait_for("the failed reload", |l| {
        l.contains("ERROR") && l.contains("pricing file reload failed; keeping the previous prices")
    })
    .await;
    let s = context("bin3", "kb", "tb", "test-model");
    w.publish_report(&text_report(&s, 1, 1000, 0)).await;
    w.publish_session(&ended(&s, 1, 3.0, MediaMeasurements::default()))
        .await;
    let line = "Vertex AI Live WebSocket session cost: $0.002000 (input: $0.002000, output: $0.000000) tokens: 1000, characters: 0, duration: 3.0s";
    log.wait_for("the third session cost line", |l| l.contains(line))
        .await;

    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for series in [
        "livegate_metering_sessions_written_total 3",
        "livegate_metering_pricing_reloads_total{outcome=\"ok\"} 1",
        "livegate_metering_pricing_reloads_total{outcome=\"error\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == series), "{series}:\n{metrics}");
    }
    w.wait_spend("key.kb", "0.005").await;

    signal(pid, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("metering did not exit on SIGTERM")
        .unwrap();
    assert!(status.success(), "exit {status}:\n{}", log.dump());
    log.wait_for("the stopped line", |l| {
        l.contains("livegate-metering stopped")
    })
    .await;
}

/// Runs the binary with `env` and returns its exit code and stderr (bounded: 30 s).
async fn run_to_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_livegate-metering"));
    cmd.env_remove("LIVEGATE_CONFIG")
        .env("LIVEGATE_LOG_FORMAT", "text")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the binary exits by itself")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_bad_configuration_exits_with_ex_usage_and_a_taken_port_with_1() {
    let (code, stderr) = run_to_exit(&[("METERING_LISTEN", "not-an-address")]).await;
    assert_eq!(code, Some(64), "EX_USAGE; stderr:\n{stderr}");
    assert!(stderr.contains("invalid configuration"), "{stderr}");
    assert!(
        stderr.contains("METERING_LISTEN"),
        "names the variable: {stderr}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run_to_exit(&[("METERING_LISTEN", &addr)]).await;
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("cannot bind"), "{stderr}");
    assert!(stderr.contains(&addr), "names the address: {stderr}");
}
