//! The Live SDKs as they ship, through a TLS gateway: google-genai for Python at the newest
//! release the registry serves and at 3.4 (the oldest supported), in express mode (base URL
//! with and without a trailing `/`), gateway mode (a `wss://…/vertex_ai/live` base URL) and
//! Developer-API mode; and the JS SDK (@google/genai) on Node in Developer-API and express
//! mode. Each holds a text turn and prints the usage the gateway relayed. The Developer-API
//! modes also run against a gateway with a Gemini Developer API upstream
//! (`GATEWAY_GEMINI_API_KEY`), where they reach the emulator's Developer API paths.
//!
//! The Python venvs are `~/.cache/livegate-py-genai-{version}`
//! (`livegate_test_support::python::named_venv`); the Node packages come from
//! tests/system/node/package-lock.json (`livegate_test_support::node`).

use crate::clients::{repo, run};
use livegate_system_tests::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The newest google-genai release when this was written, and the oldest supported.
const NEWEST: &str = "3.6.1";
const OLDEST: &str = "3.4.0";

async fn venv(version: &'static str) -> PathBuf {
    tokio::task::spawn_blocking(move || {
        let requirement = format!("google-genai=={version}");
        livegate_test_support::python::named_venv(
            &format!("genai-{version}"),
            &[
                ("websockets>=13,<18", "websockets"),
                (&requirement, "google.genai"),
            ],
        )
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("the google-genai {version} venv: {e:#}"))
}

/// A stack whose gateway serves TLS with a fresh self-signed certificate (kept in the dir).
async fn tls_stack() -> (Stack, tempfile::TempDir, SelfSignedTls) {
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed_tls(dir.path());
    let files = Some((tls.cert_path.clone(), tls.key_path.clone()));
    let stack = Stack::start_with_gateway(move |g| g.tls = files).await;
    (stack, dir, tls)
}

/// Every session so far ended with one usage report, for the default project.
async fn all_reported(stack: &Stack, sessions: usize) {
    let events = stack
        .events_until(Duration::from_secs(10), |e| e.ended().len() >= sessions)
        .await;
    assert_eq!(events.ended().len(), sessions);
    assert_eq!(events.reports.len(), sessions);
    for (_, r) in &events.reports {
        let ctx = r.context.as_ref().unwrap();
        assert_eq!((ctx.project.as_str(), ctx.model.as_str()), (PROJECT, MODEL));
    }
}

async fn python_matrix(version: &'static str) {
    let py = venv(version).await;
    let (stack, _dir, tls) = tls_stack().await;
    let key = stack.key().await;
    let port = stack.gateway.addr.port();
    let https = format!("https://127.0.0.1:{port}");
    let modes = [
        ("express", https.clone()),
        ("express", format!("{https}/")),
        ("gateway", format!("wss://127.0.0.1:{port}/vertex_ai/live")),
        ("developer", https.clone()),
    ];
    for (mode, base) in &modes {
        let mut cmd = Command::new(&py);
        cmd.arg(repo().join("examples/clients/python/genai_client.py"))
            .arg(base)
            .arg(&key)
            .env("LIVEGATE_GENAI_MODE", mode)
            .env("SSL_CERT_FILE", &tls.cert_path)
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("GOOGLE_CLOUD_PROJECT")
            .env_remove("GOOGLE_CLOUD_LOCATION")
            .env_remove("GOOGLE_API_KEY")
            .env_remove("GEMINI_API_KEY");
        let out = run(cmd).await;
        let what = format!("google-genai {version}, {mode} mode, base {base}:\n{out}");
        assert!(
            out.contains(&format!("SDK: google-genai {version}, mode {mode}")),
            "{what}"
        );
        assert!(
            out.contains("ANSWER: You said: Hello from google-genai"),
            "{what}"
        );
        assert!(out.contains("USAGE: "), "usage relayed: {what}");
    }
    all_reported(&stack, modes.len()).await;
}

#[tokio::test]
async fn google_genai_newest_in_every_client_mode() {
    python_matrix(NEWEST).await;
}

#[tokio::test]
async fn google_genai_oldest_supported_in_every_client_mode() {
    python_matrix(OLDEST).await;
}

#[tokio::test]
async fn the_js_sdk_on_node_in_developer_and_express_mode() {
    if !livegate_test_support::node::available() {
        eprintln!("skipped: no node and npm here");
        return;
    }
    let modules = crate::browser::node_modules().await;
    let (stack, _dir, tls) = tls_stack().await;
    let key = stack.key().await;
    let base = format!("https://127.0.0.1:{}", stack.gateway.addr.port());
    let modes = ["developer", "express"];
    for mode in modes {
        let mut cmd = Command::new("node");
        cmd.arg(repo().join("tests/system/node/genai.mjs"))
            .arg(&base)
            .env("LIVEGATE_API_KEY", &key)
            .env("LIVEGATE_GENAI_MODE", mode)
            .env("LIVEGATE_NODE_MODULES", &modules)
            .env("NODE_EXTRA_CA_CERTS", &tls.cert_path)
            .env_remove("GOOGLE_API_KEY")
            .env_remove("GEMINI_API_KEY")
            .env_remove("GOOGLE_CLOUD_PROJECT");
        let out = run(cmd).await;
        assert!(out.contains(&format!("mode {mode}")), "{out}");
        assert!(
            out.contains("ANSWER: You said: Hello from @google/genai"),
            "{mode}: {out}"
        );
        assert!(out.contains("USAGE: "), "{mode}: {out}");
    }
    all_reported(&stack, modes.len()).await;
}

/// The Developer API key of [`developer_upstream_stack`]'s operator.
const DEV_KEY: &str = "AIzaSy-sdk-matrix-5e1a";

/// A TLS stack whose gateway relays Developer-API-shaped paths to the emulator's Developer API
/// paths with [`DEV_KEY`] (the only key the emulator accepts there).
async fn developer_upstream_stack() -> (Stack, tempfile::TempDir, SelfSignedTls) {
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed_tls(dir.path());
    let files = Some((tls.cert_path.clone(), tls.key_path.clone()));
    let stack = Stack::start_with(Options {
        gateway: Box::new(move |g| {
            g.tls = files;
            let vertex = g.vertex_live_url.clone().unwrap();
            g.gemini_api_url = Some(vertex[..vertex.find("/ws/").unwrap()].to_string());
            g.gemini_api_key = Some(secrecy::SecretString::from(DEV_KEY));
        }),
        emulator: Box::new(|e| e.developer_api_keys = vec![DEV_KEY.to_string()]),
        ..Options::default()
    })
    .await;
    (stack, dir, tls)
}

/// Every session reached the emulator's Developer API paths with the operator's key (no
/// OAuth token) and was reported as `gemini/{model}` without a project.
async fn all_on_the_developer_api(stack: &Stack, sessions: usize) {
    let handshakes = stack.emulator.handshakes();
    assert_eq!(handshakes.len(), sessions, "{handshakes:?}");
    for h in &handshakes {
        assert_eq!(h.api, livegate_emulator::LiveApi::Developer, "{h:?}");
        assert!(
            h.accepted && h.api_key_header && h.authorization.is_none(),
            "{h:?}"
        );
    }
    let events = stack
        .events_until(Duration::from_secs(10), |e| e.ended().len() >= sessions)
        .await;
    assert_eq!(events.reports.len(), sessions);
    for (_, r) in &events.reports {
        let ctx = r.context.as_ref().unwrap();
        assert_eq!(
            (ctx.project.as_str(), ctx.model.as_str()),
            ("", format!("gemini/{MODEL}").as_str())
        );
    }
}

#[tokio::test]
async fn developer_api_sdks_reach_the_developer_api_upstream() {
    let py = venv(NEWEST).await;
    let (stack, _dir, tls) = developer_upstream_stack().await;
    let key = stack.key().await;
    let base = format!("https://127.0.0.1:{}", stack.gateway.addr.port());
    let mut cmd = Command::new(&py);
    cmd.arg(repo().join("examples/clients/python/genai_client.py"))
        .arg(&base)
        .arg(&key)
        .env("LIVEGATE_GENAI_MODE", "developer")
        .env("SSL_CERT_FILE", &tls.cert_path)
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .env_remove("GOOGLE_CLOUD_LOCATION")
        .env_remove("GOOGLE_API_KEY")
        .env_remove("GEMINI_API_KEY");
    let out = run(cmd).await;
    assert!(
        out.contains("ANSWER: You said: Hello from google-genai"),
        "google-genai {NEWEST}, developer mode:\n{out}"
    );
    assert!(out.contains("USAGE: "), "usage relayed:\n{out}");
    let mut sessions = 1;
    if livegate_test_support::node::available() {
        let modules = crate::browser::node_modules().await;
        let mut cmd = Command::new("node");
        cmd.arg(repo().join("tests/system/node/genai.mjs"))
            .arg(&base)
            .env("LIVEGATE_API_KEY", &key)
            .env("LIVEGATE_GENAI_MODE", "developer")
            .env("LIVEGATE_NODE_MODULES", &modules)
            .env("NODE_EXTRA_CA_CERTS", &tls.cert_path)
            .env_remove("GOOGLE_API_KEY")
            .env_remove("GEMINI_API_KEY")
            .env_remove("GOOGLE_CLOUD_PROJECT");
        let out = run(cmd).await;
        assert!(
            out.contains("ANSWER: You said: Hello from @google/genai"),
            "@google/genai, developer mode: {out}"
        );
        assert!(out.contains("USAGE: "), "{out}");
        sessions += 1;
    } else {
        eprintln!("the JS SDK part skipped: no node and npm here");
    }
    all_on_the_developer_api(&stack, sessions).await;
}
