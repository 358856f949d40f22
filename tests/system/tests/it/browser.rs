//! The browser example (examples/clients/browser) in a real headless Chromium: its backend
//! mints a browser token with the key, the page connects with the `livegate-key.` subprotocol
//! and holds a text turn and an audio turn; the turns' cost lands in ClickHouse. The page's
//! screenshot is kept at `<target>/tmp/livegate-browser/index.png`.
//!
//! Needs Chromium (Debian's `chromium`, installed by scripts/install-deps.sh; another binary
//! with `LIVEGATE_CHROMIUM`) and Node with npm; without them the test says it skipped.

use crate::clients::repo;
use livegate_proto::auth::KeySettings;
use livegate_system_tests::*;
use std::path::PathBuf;
use std::time::Duration;

/// The Chromium binary: `LIVEGATE_CHROMIUM`, else Debian's `/usr/bin/chromium`.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("LIVEGATE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    path.exists().then_some(path)
}

/// The tests' Node packages (tests/system/node), installed into the cache.
pub(crate) async fn node_modules() -> PathBuf {
    static MODULES: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    MODULES
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                livegate_test_support::node::modules(&repo().join("tests/system/node"))
            })
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the tests' Node packages: {e:#}"))
        })
        .await
        .clone()
}

/// Where the screenshot is kept.
fn screenshot_path() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("livegate-browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("index.png")
}

#[tokio::test]
async fn the_browser_page_holds_a_text_and_an_audio_turn_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        eprintln!("skipped: no Chromium (run scripts/install-deps.sh, or set LIVEGATE_CHROMIUM)");
        return;
    };
    if !livegate_test_support::node::available() {
        eprintln!("skipped: no node and npm here");
        return;
    }
    let modules = node_modules().await;
    let stack = Stack::start_with(Options {
        metering: true,
        ..Options::default()
    })
    .await;
    let (key, key_id) = stack.create_key(KeySettings::default()).await;
    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(repo().join("tests/system/node/browser.mjs"))
        .arg(format!("http://{}", stack.gateway.addr))
        .arg(&screenshot)
        .arg(&chromium)
        .env("LIVEGATE_API_KEY", &key)
        .env("LIVEGATE_NODE_MODULES", &modules)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the browser run finished within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().last().unwrap_or_default();
    let result: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("no result line ({e}):\n{stdout}\n{stderr}"));
    assert!(
        out.status.success() && result["ok"] == true,
        "the page failed: {result:#}\n{stderr}"
    );
    assert!(
        screenshot.metadata().is_ok_and(|m| m.len() > 0),
        "screenshot at {screenshot:?}"
    );

    let turns = result["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "{result:#}");
    assert_eq!(turns[0]["kind"], "text");
    assert_eq!(
        turns[0]["transcript"], "You said: Hello from the browser!",
        "{result:#}"
    );
    assert_eq!(turns[1]["kind"], "audio");
    assert_eq!(
        turns[1]["transcript"], "I received 1.00 seconds of audio.",
        "{result:#}"
    );
    for t in turns {
        assert!(t["audioBytes"].as_u64().unwrap() > 0, "audio reply: {t}");
    }
    assert_eq!(result["close"]["code"], 1000, "{result:#}");

    // Both turns were billed to the key that minted the browser token.
    let row = stack
        .sql_until(
            Duration::from_secs(20),
            &format!(
                "SELECT count(), sum(input_audio_tokens) > 0, toString(sum(cost_usd)) \
                 FROM {{db}}.usage_events FINAL WHERE key_id = '{key_id}' HAVING count() >= 2"
            ),
        )
        .await;
    let cols: Vec<&str> = row.trim().split('\t').collect();
    assert_eq!(cols.get(..2), Some(&["2", "1"][..]), "cost rows: {row:?}");
    let cost: rust_decimal::Decimal = cols[2].parse().unwrap();
    assert!(cost > rust_decimal::Decimal::ZERO, "cost {cost}");
}
