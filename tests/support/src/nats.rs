//! A real `nats-server` with JetStream on loopback, one per test.
//!
//! Started as `nats-server -a 127.0.0.1 -p -1 -js -sd <tmp>/store --ports_file_dir <tmp>`: the
//! server picks a free port and writes it to `<tmp>/nats-server_<pid>.ports`, which we read.
//! Readiness is a JetStream API round trip (`$JS.API.INFO`), so a returned server is ready
//! for streams and KV. [`NatsServer::stop`] kills it (SIGKILL, store kept) and
//! [`NatsServer::restart`] brings it back on the same port with the same store, for fault
//! tests. Output goes to `<tmp>/nats-server.log`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::bin::{self, Program};
use crate::process::Supervised;

/// Upper bound for a start or restart, including JetStream recovering its store.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or deliberately stopped) nats-server; killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    // Declared before `dir` so the server dies before its directory is removed.
    process: Option<Supervised>,
    program: Program,
    port: u16,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a fresh server with JetStream on an ephemeral loopback port.
    ///
    /// # Errors
    /// If nats-server cannot be found (the message says to run `scripts/install-deps.sh`),
    /// exits early, or is not ready within 30 s; the message carries its log tail.
    pub async fn start() -> anyhow::Result<Self> {
        let program = bin::nats_server()?;
        let dir = tempfile::Builder::new()
            .prefix("livegate-nats-")
            .tempdir()
            .context("creating the nats temp dir")?;
        std::fs::create_dir_all(dir.path().join("store"))?;
        let (process, port) = launch(&program, dir.path(), None).await?;
        Ok(Self {
            process: Some(process),
            program,
            port,
            dir,
        })
    }

    /// `nats://127.0.0.1:<port>`; stays the same across [`restart`](Self::restart).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir holding the store (`store/`) and the server log (`nats-server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's combined stdout/stderr log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Connects a new client.
    ///
    /// # Errors
    /// If the server is stopped or the connection fails.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.url())
            .await
            .with_context(|| format!("connecting to {}", self.url()))
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Supervised::is_running)
    }

    /// Kills the server (SIGKILL, like a crash) and waits until it is gone. The store is kept.
    /// Stopping a stopped server does nothing.
    ///
    /// # Errors
    /// If the process does not go away within 20 s.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        match self.process.take() {
            Some(p) => p.stop().await,
            None => Ok(()),
        }
    }

    /// Stops the server if running, then starts it again on the same port with the same
    /// store, and waits until JetStream is ready (streams recovered).
    ///
    /// # Errors
    /// As for [`start`](Self::start); also if another process took the port meanwhile.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let (process, port) = launch(&self.program, self.dir.path(), Some(self.port)).await?;
        debug_assert_eq!(port, self.port);
        self.process = Some(process);
        Ok(())
    }
}

/// Starts nats-server in `dir` (on `port`, or an ephemeral one) and waits until it is ready.
async fn launch(
    program: &Program,
    dir: &Path,
    port: Option<u16>,
) -> anyhow::Result<(Supervised, u16)> {
    let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let mut args: Vec<OsString> = program.leading_args.clone();
    args.extend(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"].map(OsString::from));
    args.push(dir.join("store").into_os_string());
    args.push("--ports_file_dir".into());
    args.push(dir.as_os_str().to_owned());
    let log = dir.join("nats-server.log");
    let mut process = Supervised::spawn("nats-server", &program.path, &args, dir, &log, None)?;
    match tokio::time::timeout(START_TIMEOUT, wait_ready(&mut process, dir)).await {
        Ok(Ok(found)) => {
            if port.is_some_and(|p| p != found) {
                bail!("nats-server came up on port {found}, expected {port:?}");
            }
            Ok((process, found))
        }
        Ok(Err(e)) => Err(e.context(format!(
            "nats-server did not start; log tail:\n{}",
            process.log_tail()
        ))),
        Err(_) => bail!(
            "nats-server not ready within {START_TIMEOUT:?}; log tail:\n{}",
            process.log_tail()
        ),
    }
}

/// Polls for the ports file, then for a JetStream API reply.
async fn wait_ready(process: &mut Supervised, dir: &Path) -> anyhow::Result<u16> {
    let suffix = format!("_{}.ports", process.pid());
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let port = loop {
        tick.tick().await;
        if !process.is_running() {
            bail!("nats-server exited during start-up");
        }
        if let Some(port) = read_ports_file(dir, &suffix) {
            break port;
        }
    };
    let url = format!("nats://127.0.0.1:{port}");
    loop {
        if !process.is_running() {
            bail!("nats-server exited during start-up");
        }
        if jetstream_ready(&url).await {
            return Ok(port);
        }
        tick.tick().await;
    }
}

/// The client port from `<dir>/<exe>_<pid>.ports`: `{"nats":["nats://127.0.0.1:PORT"],…}`.
fn read_ports_file(dir: &Path, suffix: &str) -> Option<u16> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(suffix))?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    // The key is "nats" in current servers ("client" in some older ones).
    let url = ["nats", "client"]
        .iter()
        .find_map(|k| json.get(k)?.get(0)?.as_str())?;
    url.rsplit_once(':')?.1.parse().ok()
}

/// True once the server answers a JetStream account-info request without an error.
async fn jetstream_ready(url: &str) -> bool {
    let Ok(client) = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
    else {
        return false;
    };
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        client.request("$JS.API.INFO", bytes::Bytes::new()),
    )
    .await;
    match reply {
        Ok(Ok(msg)) => serde_json::from_slice::<serde_json::Value>(&msg.payload)
            .is_ok_and(|v| v.get("error").is_none()),
        _ => false,
    }
}
