//! The client examples in examples/clients, run for real against the stack: LiteLLM's Python
//! client, the official google-genai SDK (over TLS, Vertex express mode) and LiteLLM's
//! JavaScript client (on Node.js, when it has a WebSocket client).

use livegate_system_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use tokio::sync::OnceCell;

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// examples/clients/python/requirements.txt, each with the module whose import shows it is there.
const CLIENT_PACKAGES: &[(&str, &str)] = &[
    ("websockets>=13,<18", "websockets"),
    ("google-genai>=1.30,<4", "google.genai"),
];

/// The shared test virtualenv (`livegate_test_support::python`) with
/// examples/clients/python/requirements.txt installed.
pub(crate) async fn python() -> PathBuf {
    static PY: OnceCell<PathBuf> = OnceCell::const_new();
    PY.get_or_init(|| async {
        let req = repo().join("examples/clients/python/requirements.txt");
        let text = std::fs::read_to_string(&req).unwrap();
        let listed: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let ours: Vec<&str> = CLIENT_PACKAGES.iter().map(|(r, _)| *r).collect();
        assert_eq!(listed, ours, "keep CLIENT_PACKAGES in step with {req:?}");
        tokio::task::spawn_blocking(|| livegate_test_support::python::venv(CLIENT_PACKAGES))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the Python venv: {e:#}"))
    })
    .await
    .clone()
}

pub(crate) async fn run(cmd: Command) -> String {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("client finished within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn litellm_python_client_works_unchanged_but_for_url_and_key() {
    let py = python().await;
    let stack = Stack::start().await;
    let key = stack.key().await;
    let mut cmd = Command::new(py);
    cmd.arg(repo().join("examples/clients/python/seed_client.py"))
        .arg(stack.url("/v1/vertex-ai/live?project_id=test-project"))
        .arg(&key);
    let out = run(cmd).await;
    assert!(
        out.contains("Setup: b'{\"setupComplete\""),
        "binary frames, as from Google: {out}"
    );
    assert!(out.contains("ANSWER: You said: Hello!"), "{out}");
    one_report_for(&stack, "gemini-2.0-flash-live-preview-04-09").await;
}

/// The session ended, with exactly one usage report, for `model`.
async fn one_report_for(stack: &Stack, model: &str) {
    let events = stack
        .events_until(std::time::Duration::from_secs(10), |e| {
            !e.ended().is_empty()
        })
        .await;
    assert_eq!(events.reports.len(), 1);
    assert_eq!(events.reports[0].1.context.as_ref().unwrap().model, model);
}

#[tokio::test]
async fn google_genai_sdk_works_through_the_gateway_over_tls() {
    let py = python().await;
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let tls = Some((cert_path.clone(), key_path));
    let stack = Stack::start_with_gateway(move |g| g.tls = tls).await;
    let key = stack.key().await;
    let mut cmd = Command::new(py);
    cmd.arg(repo().join("examples/clients/python/genai_client.py"))
        .arg(format!("https://127.0.0.1:{}", stack.gateway.addr.port()))
        .arg(&key)
        .env("SSL_CERT_FILE", &cert_path)
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("GOOGLE_CLOUD_PROJECT");
    let out = run(cmd).await;
    assert!(
        out.contains("ANSWER: You said: Hello from google-genai"),
        "{out}"
    );
    let events = stack
        .events_until(std::time::Duration::from_secs(10), |e| {
            !e.ended().is_empty()
        })
        .await;
    let ctx = events.reports[0].1.context.clone().unwrap();
    assert_eq!(
        (ctx.model.as_str(), ctx.project.as_str()),
        ("gemini-live-2.5-flash", PROJECT)
    );
}

/// The `node` flags that give it a global `WebSocket` (none from Node 22, the experimental
/// flag on Node 20.10+), or `None` when this machine's Node has none or there is no Node.
fn node_websocket_flags() -> Option<Vec<&'static str>> {
    [vec![], vec!["--experimental-websocket"]]
        .into_iter()
        .find(|flags| {
            Command::new("node")
                .args(flags)
                .args([
                    "-e",
                    "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
                ])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

#[tokio::test]
async fn litellm_javascript_client_works_with_the_key_as_a_subprotocol() {
    let Some(flags) = node_websocket_flags() else {
        eprintln!(
            "skipped: no Node.js with a WebSocket client here (Node 22+, or 20.10+ with \
             --experimental-websocket)"
        );
        return;
    };
    let stack = Stack::start().await;
    let key = stack.key().await;
    let mut cmd = Command::new("node");
    cmd.args(&flags)
        .arg(repo().join("examples/clients/js/client.mjs"))
        .arg(stack.url("/v1/vertex-ai/live?project_id=test-project"))
        .arg(&key);
    let out = run(cmd).await;
    assert!(out.contains("setupComplete"), "{out}");
    assert!(out.contains("ANSWER: You said: Hello!"), "{out}");
    one_report_for(&stack, "gemini-live-2.5-flash").await;
}
