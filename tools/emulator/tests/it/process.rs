//! The binary: prints "listening on ADDR", serves, exits cleanly on SIGTERM.

use crate::helpers::*;
use tokio::io::AsyncBufReadExt as _;
use tokio::process::Command;

#[tokio::test]
async fn binary_listens_serves_and_stops_on_sigterm() {
    let record =
        std::env::temp_dir().join(format!("livegate-emu-record-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&record);
    let mut child = Command::new(env!("CARGO_BIN_EXE_livegate-emulator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--token",
            "t1",
            "--text-frames",
            "--record-file",
        ])
        .arg(&record)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line.strip_prefix("listening on ").expect(&line).to_string();
    let url = format!("ws://{addr}{}", livegate_emulator::LIVE_PATHS[0]);

    assert_eq!(refused_status(&url, Some("nope")).await.0, 401);
    let mut ws = try_connect(&url, Some("t1")).await.unwrap();
    text_setup(&mut ws).await;
    send(&mut ws, user_text("hello")).await;
    let frames = read_turn(&mut ws).await;
    assert!(frames.iter().all(|f| !f.binary));

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let close = read_close(&mut ws).await.0.unwrap();
    assert_eq!(u16::from(close.code), 1001);
    drop(ws);
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert_eq!(
        lines.next_line().await.unwrap(),
        None,
        "exactly one stdout line"
    );

    let recorded = std::fs::read_to_string(&record).unwrap();
    let rows: Vec<serde_json::Value> = recorded
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["seq"], 1);
    assert_eq!(rows[0]["usage"], usages(&frames)[0]);
    let _ = std::fs::remove_file(&record);
}

#[tokio::test]
async fn bad_key_exits_with_ex_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_livegate-emulator"))
        .args(["--service-account-key", "kid=/nonexistent/key.pem"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(out.stdout.is_empty());
}
