//! The README's first command, run for real: `scripts/start.sh` in the background (demo mode,
//! with the emulator), LiteLLM's Python client against the URL and key it prints, and the
//! session's cost row in ClickHouse. Then Ctrl-C (SIGINT) stops everything.

use crate::clients::{python, repo};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory holding this build's binaries (`target/debug`), which scripts/test.sh builds
/// before running the tests.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for b in [
        "livegate",
        "livegate-auth",
        "livegate-gateway",
        "livegate-metering",
        "livegate-emulator",
        "livegate-demo-credentials",
    ] {
        assert!(
            dir.join(b).exists(),
            "{b} not built in {}: run scripts/test.sh (it builds the binaries first)",
            dir.display()
        );
    }
    dir
}

#[tokio::test]
async fn the_start_command_serves_a_session_and_bills_it_in_clickhouse() {
    let py = python().await;
    let state = tempfile::tempdir().unwrap();
    let ch_port = free_port();
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(repo().join("scripts/start.sh"))
        .env("LIVEGATE_BIN_DIR", bin_dir())
        .env("LIVEGATE_STATE_DIR", state.path())
        .env("GATEWAY_PORT", free_port().to_string())
        .env("AUTH_PORT", free_port().to_string())
        .env("METERING_PORT", free_port().to_string())
        .env("NATS_PORT", free_port().to_string())
        .env("CLICKHOUSE_HTTP_PORT", ch_port.to_string())
        .env("CLICKHOUSE_TCP_PORT", free_port().to_string())
        .env("EMULATOR_PORT", free_port().to_string())
        .env_remove("DEFAULT_VERTEXAI_PROJECT")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("DEFAULT_GOOGLE_APPLICATION_CREDENTIALS")
        .env("CLOUDSDK_CONFIG", state.path().join("no-gcloud"))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(state.path().join("start.err")).unwrap(),
        ))
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let _stop_on_failure = StopOnDrop(child.id().unwrap());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut key) = (String::new(), String::new());
    let printed = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(v) = line.split("WebSocket URL : ").nth(1) {
                url = v.trim().to_string();
            }
            if let Some(v) = line.split("API key       : ").nth(1) {
                key = v.trim().to_string();
            }
            if line.starts_with("Press Ctrl-C") {
                return;
            }
        }
    })
    .await;
    let err_log = || std::fs::read_to_string(state.path().join("start.err")).unwrap_or_default();
    assert!(
        printed.is_ok() && key.starts_with("lg-"),
        "start.sh did not come up:\n{}",
        err_log()
    );
    assert!(
        err_log().contains("DEMO MODE — upstream is the local emulator"),
        "{}",
        err_log()
    );

    let out = tokio::process::Command::new(py)
        .arg(repo().join("examples/clients/python/seed_client.py"))
        .arg(format!("{url}?project_id=your-project-id"))
        .arg(&key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ANSWER: You said: Hello!"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The session's row, priced, in ClickHouse.
    let sql = "SELECT count(), toString(sum(cost_usd)) FROM livegate.sessions FINAL WHERE model = 'gemini-2.0-flash-live-preview-04-09'";
    let row = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let body = ch_query(ch_port, sql).await;
            if body.starts_with("1\t") {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let logs =
            std::fs::read_to_string(state.path().join("logs/metering.log")).unwrap_or_default();
        panic!(
            "no session row in ClickHouse:\n{}\nmetering:\n{logs}",
            err_log()
        )
    });
    let cost: f64 = row.trim().split('\t').nth(1).unwrap().parse().unwrap();
    assert!(cost > 0.0, "{row}");

    // Ctrl-C stops everything.
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("start.sh stopped")
        .unwrap();
    assert_eq!(status.code(), Some(130), "{}", err_log());
    assert!(err_log().contains("[livegate] stopped"));
}

/// One query over HTTP/1.0 (no chunked encoding to undo).
async fn ch_query(port: u16, sql: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let req = format!(
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Stops start.sh with SIGINT when the test ends early (a failed assertion): SIGKILL from
/// `kill_on_drop` alone would skip the script's trap and leave NATS, ClickHouse and the
/// services running. Waits (bounded) for the script to exit.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let pid = self.0.to_string();
        // Gone, or a zombie waiting for the (dropped) child handle to reap it.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|st| {
                    st.rsplit(')')
                        .next()
                        .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        };
        if !alive() {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status();
        for _ in 0..600 {
            if !alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
