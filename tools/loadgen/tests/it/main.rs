//! The load generator against an in-process emulator: every mode completes, and the report
//! counts what happened.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::large_futures,
    reason = "tests: a failed step fails loudly; tasks and environment belong to the test"
)]

use clap::Parser;
use livegate_emulator::{Emulator, EmulatorConfig};
use livegate_loadgen::{Cli, Report};

async fn emulator(tokens: Vec<String>) -> Emulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Emulator::start(
        listener,
        EmulatorConfig {
            tokens,
            ..EmulatorConfig::default()
        },
    )
    .await
}

async fn run(args: &[&str]) -> Report {
    let mut argv = vec!["livegate-loadgen"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        livegate_loadgen::run(cli.command),
    )
    .await
    .expect("run finished within 60 s")
    .unwrap()
}

#[tokio::test]
async fn text_turns_are_measured() {
    let emu = emulator(vec!["t".into()]).await;
    let url = emu.url();
    let pid = format!("self={}", std::process::id());
    let r = run(&[
        "text",
        "--url",
        &url,
        "--key",
        "t",
        "--sessions",
        "20",
        "--turns",
        "3",
        "--turn-interval",
        "50ms",
        "--pid",
        &pid,
        "--label",
        "direct",
    ])
    .await;
    assert_eq!(r.sessions_ok, 20, "{r:#?}");
    assert_eq!(r.turns_ok, 60);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let lat = r.turn_latency.unwrap();
    assert_eq!(lat.count, 60);
    assert!(lat.p50_ms > 0.0 && lat.p50_ms <= lat.p99_ms && lat.p99_ms <= lat.max_ms);
    // Each turn: 1 frame sent; 3 text chunks, generationComplete, turnComplete received.
    assert_eq!(r.frames_sent, 60);
    assert_eq!(r.frames_received, 60 * 5);
    // The named process, then the generator itself.
    assert_eq!(r.processes.len(), 2);
    assert_eq!(r.processes[0].label, "self");
    assert_eq!(r.processes[1].label, "loadgen");
    assert!(r.processes[0].rss_before_kib > 0);
    assert_eq!(emu.stats().sessions, 20);
}

#[tokio::test]
async fn audio_is_streamed_in_chunks() {
    let emu = emulator(vec![]).await;
    let r = run(&[
        "audio",
        "--url",
        &emu.url(),
        "--sessions",
        "5",
        "--turns",
        "1",
        "--audio-seconds",
        "0.5",
        "--speed",
        "10",
    ])
    .await;
    assert_eq!(r.turns_ok, 5, "{r:#?}");
    // 5 chunks of 100 ms plus audioStreamEnd per session.
    assert_eq!(r.frames_sent, 5 * 6);
    // 4 audio chunks, generationComplete, turnComplete.
    assert_eq!(r.frames_received, 5 * 6);
}

#[tokio::test]
async fn idle_sessions_are_held_and_setups_counted() {
    let emu = emulator(vec![]).await;
    let r = run(&[
        "idle",
        "--url",
        &emu.url(),
        "--sessions",
        "30",
        "--hold",
        "200ms",
    ])
    .await;
    assert_eq!(r.sessions_held, 30, "{r:#?}");
    assert!(r.phase_s >= 0.2);

    let r = run(&[
        "setup",
        "--url",
        &emu.url(),
        "--concurrency",
        "4",
        "--count",
        "40",
        "--duration",
        "30s",
    ])
    .await;
    assert_eq!(r.sessions_ok, 40, "{r:#?}");
    assert!(r.setups_per_s > 0.0);
    assert_eq!(r.setup_latency.unwrap().count, 40);
}

#[tokio::test]
async fn refusals_are_counted_by_kind() {
    let emu = emulator(vec!["right".into()]).await;
    let r = run(&[
        "text",
        "--url",
        &emu.url(),
        "--key",
        "wrong",
        "--sessions",
        "3",
    ])
    .await;
    assert_eq!(r.sessions_failed, 3);
    assert_eq!(r.errors["handshake: HTTP 401"].count, 3, "{:?}", r.errors);

    // A model the emulator does not know: closed with 1008 after setup.
    let r = run(&[
        "text",
        "--url",
        &emu.url(),
        "--key",
        "right",
        "--sessions",
        "2",
        "--model",
        "nope",
    ])
    .await;
    assert_eq!(r.errors["close 1008"].count, 2, "{:?}", r.errors);
}
