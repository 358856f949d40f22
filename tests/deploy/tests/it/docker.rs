//! deploy/docker: the multi-stage Dockerfile (read, not built: no Docker here) and the
//! `livegate-healthcheck` script (run for real against a real auth server and ClickHouse).

use anyhow::{Context, Result};
use livegate_deploy_tests::{Stage, dockerfile_stages, read, repo_root};
use livegate_test_support::{ClickHouseServer, NatsServer};
use std::process::Command;
use std::time::{Duration, Instant};

const BINARIES: &[&str] = &[
    "livegate-gateway",
    "livegate-auth",
    "livegate-metering",
    "livegate",
];

/// (stage, binary, port, health check probe).
const SERVICE_STAGES: &[(&str, &str, u16, &str)] = &[
    (
        "gateway",
        "livegate-gateway",
        4000,
        "http://127.0.0.1:4000/readyz",
    ),
    ("auth", "livegate-auth", 50051, "127.0.0.1:50051"),
    (
        "metering",
        "livegate-metering",
        9464,
        "http://127.0.0.1:9464/readyz",
    ),
];

fn stages() -> Result<Vec<Stage>> {
    Ok(dockerfile_stages(&read("deploy/docker/Dockerfile")?))
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> Result<&'a Stage> {
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some(name))
        .with_context(|| format!("no stage {name}"))
}

/// The stage and the stages it derives from, nearest first.
fn lineage<'a>(stages: &'a [Stage], name: &str) -> Result<Vec<&'a Stage>> {
    let mut out = vec![stage(stages, name)?];
    while let Some(parent) = stages
        .iter()
        .find(|s| s.name.as_deref() == Some(out.last().map_or("", |l| l.base.as_str())))
    {
        out.push(parent);
    }
    Ok(out)
}

#[test]
fn one_release_build_for_every_binary() -> Result<()> {
    let stages = stages()?;
    let builder = stage(&stages, "builder")?;
    let run = builder.args("RUN").collect::<Vec<_>>().join("\n");
    for flag in ["cargo build", "--release", "--locked"] {
        assert!(run.contains(flag), "builder lacks {flag}: {run}");
    }
    for bin in BINARIES {
        assert!(
            run.contains(&format!("-p {bin} ")) || run.contains(&format!("-p {bin}\n")),
            "builder does not build {bin}"
        );
        assert!(
            run.contains(&format!("target/release/{bin}")),
            "{bin} not copied out"
        );
    }
    // Each package named is a workspace crate.
    for (bin, dir) in [
        ("livegate-gateway", "services/gateway"),
        ("livegate-auth", "services/auth"),
        ("livegate-metering", "services/metering"),
        ("livegate", "services/cli"),
    ] {
        assert!(read(format!("{dir}/Cargo.toml"))?.contains(&format!("name = \"{bin}\"")));
    }
    // Files copied from the context exist.
    for st in &stages {
        for copy in st.args("COPY") {
            if copy.contains("--from=") {
                continue;
            }
            let words: Vec<&str> = copy
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            for src in &words[..words.len().saturating_sub(1)] {
                assert!(repo_root().join(src).exists(), "COPY source {src} missing");
            }
        }
    }
    // The default target (last stage) holds every binary.
    let last = stages.last().context("no stages")?;
    assert_eq!(last.name.as_deref(), Some("all"));
    let held = lineage(&stages, "all")?
        .iter()
        .flat_map(|s| s.args("COPY"))
        .collect::<Vec<_>>()
        .join("\n");
    for bin in BINARIES {
        assert!(held.contains(&format!("/out/{bin}")), "`all` lacks {bin}");
    }
    Ok(())
}

#[test]
fn service_images_are_slim_non_root_and_self_checking() -> Result<()> {
    let stages = stages()?;
    for (name, binary, port, probe) in SERVICE_STAGES {
        let chain = lineage(&stages, name)?;
        let root = chain.last().context("empty lineage")?;
        assert!(
            root.base.contains("slim") || root.base.contains("RUNTIME_IMAGE"),
            "{name} derives from {}, not a slim runtime",
            root.base
        );
        assert!(
            !chain.iter().any(|s| s.name.as_deref() == Some("builder")),
            "{name} must not ship the toolchain"
        );
        let user = chain
            .iter()
            .find_map(|s| s.args("USER").last())
            .with_context(|| format!("{name}: no USER"))?;
        let uid = user.split(':').next().unwrap_or_default();
        assert!(
            uid != "0" && uid != "root" && !uid.is_empty(),
            "{name} runs as {user}"
        );
        let st = chain[0];
        assert_eq!(
            st.args("ENTRYPOINT").last(),
            Some(format!("[\"{binary}\"]").as_str()),
            "{name}"
        );
        assert!(
            chain
                .iter()
                .flat_map(|s| s.args("COPY"))
                .any(|c| c.contains(&format!("/out/{binary} "))),
            "{name} does not hold {binary}"
        );
        assert_eq!(st.args("EXPOSE").last(), Some(port.to_string().as_str()));
        let health = st.args("HEALTHCHECK").last().unwrap_or_default();
        assert!(
            health.contains("livegate-healthcheck") && health.contains(probe),
            "{name}: HEALTHCHECK {health}"
        );
    }
    // The runtime has what the health checks and TLS need.
    let runtime = stage(&stages, "runtime")?
        .args("RUN")
        .collect::<Vec<_>>()
        .join(" ");
    for pkg in ["ca-certificates", "curl"] {
        assert!(runtime.contains(pkg), "runtime lacks {pkg}");
    }
    Ok(())
}

#[test]
fn the_build_context_leaves_secrets_and_state_out() -> Result<()> {
    let ignore = read("deploy/docker/Dockerfile.dockerignore")?;
    let entries: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in [".env", ".git", "target", ".livegate", "deploy/credentials"] {
        assert!(entries.contains(&must), "{must} not ignored: {entries:?}");
    }
    Ok(())
}

fn healthcheck(args: &[&str]) -> Result<std::process::Output> {
    Command::new("sh")
        .arg(repo_root().join("deploy/docker/healthcheck.sh"))
        .args(args)
        .env("LIVEGATE_HEALTHCHECK_TIMEOUT", "2")
        .output()
        .context("running healthcheck.sh")
}

/// curl with HTTP/2 (what the images install) is needed to run the script here.
fn have_curl_http2() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2"))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn healthcheck_script_speaks_grpc_health_to_auth() -> Result<()> {
    if !have_curl_http2() {
        eprintln!("SKIPPED: curl with HTTP/2 support is not installed");
        return Ok(());
    }
    livegate_test_support::init_crypto();
    let nats = NatsServer::start().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let mut config = livegate_auth::Config::for_nats(nats.url());
    // Nothing listens there: no Google traffic, and nothing asks for a token anyway.
    config.google.metadata_host = Some("127.0.0.1:1".into());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(livegate_auth::run(config, listener, async move {
        let _ = stopped.await;
    }));

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let addr = addr.clone();
        let out = tokio::task::spawn_blocking(move || healthcheck(&["grpc", &addr])).await??;
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "auth never reported SERVING: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let _ = stop.send(());
    server.await??;
    let addr2 = addr.clone();
    let out = tokio::task::spawn_blocking(move || healthcheck(&["grpc", &addr2])).await??;
    assert!(!out.status.success(), "a stopped auth is not healthy");

    // Nothing listening at all.
    let port = free_port()?;
    let out =
        tokio::task::spawn_blocking(move || healthcheck(&["grpc", &format!("127.0.0.1:{port}")]))
            .await??;
    assert!(!out.status.success());
    Ok(())
}

#[tokio::test]
async fn healthcheck_script_checks_http_endpoints() -> Result<()> {
    if !have_curl_http2() {
        eprintln!("SKIPPED: curl with HTTP/2 support is not installed");
        return Ok(());
    }
    let ch = ClickHouseServer::shared().await?;
    let ok = format!("{}/ping", ch.http_url());
    let out = tokio::task::spawn_blocking(move || healthcheck(&["http", &ok])).await??;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port()?;
    let out = tokio::task::spawn_blocking(move || {
        healthcheck(&["http", &format!("http://127.0.0.1:{port}/readyz")])
    })
    .await??;
    assert!(!out.status.success(), "nothing listening is unhealthy");

    let out = tokio::task::spawn_blocking(|| healthcheck(&["bogus"])).await??;
    assert_eq!(out.status.code(), Some(2), "usage error");
    Ok(())
}
