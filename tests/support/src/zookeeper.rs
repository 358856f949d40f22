//! A real ZooKeeper (Debian's `zookeeper` package, standalone mode) on a loopback port, for
//! replicated ClickHouse ([`crate::clickhouse::ClickHouseCluster`]).
//!
//! Runs `java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar
//! org.apache.zookeeper.server.ZooKeeperServerMain <tmp>/zoo.cfg` with its data in the temp
//! dir, the admin HTTP server off, and a pre-picked free client port (ZooKeeper cannot bind
//! port 0 and report it). Readiness is the `srvr` four-letter command reporting a `Mode:`
//! (`ruok` answers `imok` before the server takes sessions, and ClickHouse 18.16 crashes on a
//! ZooKeeper that drops its handshake), bounded by a timeout. `ZOOKEEPER_JAR` and `JAVA_BIN` override the jar and java.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::process::Supervised;

/// Env var naming the ZooKeeper jar (default: Debian's `/usr/share/java/zookeeper.jar`).
pub const ZOOKEEPER_JAR: &str = "ZOOKEEPER_JAR";
/// Env var naming the java executable (default: `java` on `PATH`, then `/usr/bin/java`).
pub const JAVA_BIN: &str = "JAVA_BIN";
/// Upper bound for a start (the JVM takes a second or two).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running ZooKeeper; killed on drop.
#[derive(Debug)]
pub struct ZooKeeper {
    // Declared before `dir` so the server dies before its directory is removed.
    process: Option<Supervised>,
    port: u16,
    dir: TempDir,
}

fn jar() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(ZOOKEEPER_JAR).map_or_else(
        || PathBuf::from("/usr/share/java/zookeeper.jar"),
        PathBuf::from,
    );
    if !path.exists() {
        bail!(
            "ZooKeeper not found at {} (set {ZOOKEEPER_JAR}): run scripts/install-deps.sh (it \
             installs Debian's zookeeper package)",
            path.display()
        );
    }
    Ok(path)
}

fn java() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(JAVA_BIN) {
        return Ok(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("java"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/java")).filter(|p| p.is_file()))
        .context("java not found (set JAVA_BIN): run scripts/install-deps.sh")
}

impl ZooKeeper {
    /// Starts a standalone ZooKeeper on a free loopback port and waits until it serves.
    ///
    /// # Errors
    /// If java or the jar is missing (the message says to run `scripts/install-deps.sh`), the
    /// server exits, or it does not serve within 60 s (the message carries its log).
    pub async fn start() -> anyhow::Result<Self> {
        let jar = jar()?;
        let java = java()?;
        let dir = tempfile::Builder::new()
            .prefix("livegate-zookeeper-")
            .tempdir()
            .context("creating the zookeeper temp dir")?;
        let port = crate::free_port()?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        std::fs::write(
            dir.path().join("zoo.cfg"),
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=ruok,srvr\nmaxSessionTimeout=60000\n",
                dir.path().join("data").display()
            ),
        )?;
        let classpath = format!("/etc/zookeeper/conf:{}", jar.display());
        let args: Vec<OsString> = [
            "-Xmx256m".to_owned(),
            "-cp".to_owned(),
            classpath,
            "org.apache.zookeeper.server.ZooKeeperServerMain".to_owned(),
            dir.path().join("zoo.cfg").display().to_string(),
        ]
        .map(OsString::from)
        .to_vec();
        let log = dir.path().join("zookeeper.log");
        let mut process = Supervised::spawn("zookeeper", &java, &args, dir.path(), &log, None)?;
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if !process.is_running() {
                    bail!("zookeeper exited during start-up");
                }
                if tokio::task::spawn_blocking(move || serving(port))
                    .await
                    .unwrap_or(false)
                {
                    return Ok(());
                }
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => Ok(Self {
                process: Some(process),
                port,
                dir,
            }),
            Ok(Err(e)) => Err(e.context(format!("log tail:\n{}", process.log_tail()))),
            Err(_) => bail!(
                "zookeeper not ready within {START_TIMEOUT:?}; log tail:\n{}",
                process.log_tail()
            ),
        }
    }

    /// The client port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir (config, `data/`, `zookeeper.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills ZooKeeper (SIGKILL) and waits until it is gone.
    ///
    /// # Errors
    /// If the process does not go away within 20 s.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        match self.process.take() {
            Some(p) => p.stop().await,
            None => Ok(()),
        }
    }
}

/// Whether ZooKeeper on `port` serves sessions: its `srvr` answer names its `Mode:` (blocking,
/// 1 s bounds).
fn serving(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"srvr").is_err() {
        return false;
    }
    let mut answer = Vec::new();
    // The server closes the connection after answering; a read timeout ends it too.
    let _ = s.take(64 * 1024).read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).contains("Mode: ")
}
