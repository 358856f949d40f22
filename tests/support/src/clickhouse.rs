//! A real `clickhouse-server` on loopback: Debian's 18.16 here, any current version too.
//!
//! The server runs from a temp dir holding a generated `config.xml` / `users.xml`, its data
//! (`data/`), and its logs (`log/clickhouse-server.log`, `.err.log`, and `stdout.log`). The
//! first start asks for `http_port` and `tcp_port` 0; ClickHouse binds free ports but logs
//! them as `:0`, so the harness reads the process's listening sockets from procfs and tells
//! the two apart with `GET /ping` (the native port answers HTTP with a 400). Restarts pin the
//! ports found. Readiness is `GET /ping` answering `Ok.\n`, bounded by a timeout.
//!
//! Starting takes a second or so; [`ClickHouseServer::shared`] gives every test in a binary
//! the same server, each test isolating itself with [`ClickHouseServer::create_database`].
//!
//! [`ClickHouseCluster::start`] runs replicas of one shard as cluster [`CLUSTER`] with a
//! [`ZooKeeper`]: each replica's config adds the ZooKeeper, `macros` (`{shard}` = `01`,
//! `{replica}` = `r<i>`), `remote_servers` listing every replica (internal replication) and
//! an interserver port for fetching parts, all on pre-picked loopback ports so restarts keep
//! them. Each replica is a [`ClickHouseServer`] that can be stopped and restarted alone.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use tempfile::TempDir;

use crate::bin::{self, Program};
use crate::httpio;
use crate::process::{self, Supervised};
use crate::zookeeper::ZooKeeper;

/// The cluster name [`ClickHouseCluster`] configures (what `CLICKHOUSE_CLUSTER` names).
pub const CLUSTER: &str = "livegate";

/// Upper bound for a start or restart (18.16 needs about 0.2 s here; current versions more).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for one `/ping` or query round trip made by the harness.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A running (or deliberately stopped) clickhouse-server; killed on drop.
#[derive(Debug)]
pub struct ClickHouseServer {
    // Declared before `dir` so the server dies before its directory is removed.
    process: Option<Supervised>,
    program: Program,
    http_port: u16,
    tcp_port: u16,
    /// Set on a replica of a [`ClickHouseCluster`] (boxed: most servers are not one).
    replica: Option<Box<Replica>>,
    dir: Dir,
}

/// What a replica of a [`ClickHouseCluster`] adds to its config.
#[derive(Debug, Clone)]
struct Replica {
    /// `r0`, `r1`, …: the `{replica}` macro.
    name: String,
    interserver_port: u16,
    zookeeper_port: u16,
    /// The native ports of every replica (this one included), for `remote_servers`.
    peers: Vec<u16>,
}

impl Replica {
    fn config(&self) -> String {
        let peers: String = self
            .peers
            .iter()
            .map(|p| format!("<replica><host>127.0.0.1</host><port>{p}</port></replica>"))
            .collect();
        format!(
            r#"    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>{}</interserver_http_port>
    <zookeeper>
        <node><host>127.0.0.1</host><port>{}</port></node>
        <session_timeout_ms>10000</session_timeout_ms>
    </zookeeper>
    <macros><shard>01</shard><replica>{}</replica></macros>
    <remote_servers>
        <{CLUSTER}><shard><internal_replication>true</internal_replication>{peers}</shard></{CLUSTER}>
    </remote_servers>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
"#,
            self.interserver_port, self.zookeeper_port, self.name
        )
    }
}

/// The server's directory: removed on drop, or (shared server) by the process wrapper when
/// the test binary exits, since a `static` is never dropped.
#[derive(Debug)]
enum Dir {
    Temp(TempDir),
    Kept(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Kept(p) => p,
        }
    }
}

impl ClickHouseServer {
    /// Starts a private server (for tests that stop or restart it). Most tests should use
    /// [`shared`](Self::shared) instead.
    ///
    /// # Errors
    /// If clickhouse-server cannot be found (the message says to run
    /// `scripts/install-deps.sh`), exits early, or is not ready within 60 s; the message
    /// carries its log tail.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_in(false).await
    }

    /// The server shared by all tests of this test binary, started on first use.
    ///
    /// It lives in a `static` holding only a process handle (no tokio runtime), so it
    /// outlives each `#[tokio::test]`'s runtime; the process wrapper kills it and removes its
    /// directory when the test binary exits. It cannot be stopped or restarted (those need
    /// `&mut`): fault tests use their own [`start`](Self::start).
    ///
    /// # Errors
    /// As for [`start`](Self::start). A failed start is retried by the next caller.
    pub async fn shared() -> anyhow::Result<&'static ClickHouseServer> {
        static SHARED: tokio::sync::OnceCell<ClickHouseServer> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_try_init(|| Self::start_in(true)).await
    }

    async fn start_in(shared: bool) -> anyhow::Result<Self> {
        let program = bin::clickhouse_server()?;
        let temp = tempfile::Builder::new()
            .prefix("livegate-clickhouse-")
            .tempdir()
            .context("creating the clickhouse temp dir")?;
        let dir = if shared {
            Dir::Kept(temp.keep())
        } else {
            Dir::Temp(temp)
        };
        let cleanup = shared.then(|| dir.path().to_owned());
        let (process, http_port, tcp_port) =
            launch(&program, dir.path(), None, cleanup.as_deref(), None).await?;
        Ok(Self {
            process: Some(process),
            program,
            http_port,
            tcp_port,
            replica: None,
            dir,
        })
    }

    /// `http://127.0.0.1:<http_port>`, the URL for the `clickhouse` crate and `CLICKHOUSE_URL`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The HTTP interface port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The native protocol port (for `clickhouse-client --port`).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The server's directory (config, `data/`, `log/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates a database named `t_<prefix>_<random>` and returns its name.
    ///
    /// # Errors
    /// If the server refuses the statement.
    pub async fn create_database(&self, prefix: &str) -> anyhow::Result<String> {
        let name = crate::names::unique(&format!("t_{prefix}"));
        self.query(&format!("CREATE DATABASE {name}")).await?;
        Ok(name)
    }

    /// A `clickhouse` crate client for `database`, with validation off (18.16 lacks
    /// `RowBinaryWithNamesAndTypes`, which validation needs).
    pub fn client(&self, database: &str) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(self.http_url())
            .with_database(database)
            .with_validation(false)
    }

    /// Runs one SQL statement over HTTP in the `default` database (qualify names with the
    /// database) and returns the response body, e.g. `TabSeparated` rows.
    ///
    /// # Errors
    /// If the server is unreachable or answers with a non-200 status (the message carries
    /// ClickHouse's exception text).
    pub async fn query(&self, sql: &str) -> anyhow::Result<String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.http_port));
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(60),
            httpio::send(
                addr,
                Method::POST,
                "/",
                Bytes::copy_from_slice(sql.as_bytes()),
            ),
        )
        .await
        .with_context(|| format!("query timed out: {sql}"))??;
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != StatusCode::OK {
            bail!(
                "ClickHouse answered {status} to `{sql}`: {}",
                body.trim_end()
            );
        }
        Ok(body)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Supervised::is_running)
    }

    /// Kills the server (SIGKILL, like a crash) and waits until it is gone; data is kept.
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

    /// Stops the server if running, then starts it again with the same ports and data.
    ///
    /// # Errors
    /// As for [`start`](Self::start); also if another process took a port meanwhile.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let ports = Some((self.http_port, self.tcp_port));
        let (process, _, _) = launch(
            &self.program,
            self.dir.path(),
            ports,
            None,
            self.replica.as_deref(),
        )
        .await?;
        self.process = Some(process);
        Ok(())
    }
}

/// Writes the config for `ports` (or 0/0), starts the server, waits for `/ping`, and returns
/// it with its HTTP and native ports.
async fn launch(
    program: &Program,
    dir: &Path,
    ports: Option<(u16, u16)>,
    cleanup: Option<&Path>,
    replica: Option<&Replica>,
) -> anyhow::Result<(Supervised, u16, u16)> {
    let (http_port, tcp_port) = ports.unwrap_or((0, 0));
    write_config(dir, http_port, tcp_port, replica)?;
    let mut args = program.leading_args.clone();
    args.push(OsString::from(format!(
        "--config-file={}",
        dir.join("config.xml").display()
    )));
    let log = dir.join("log").join("stdout.log");
    let mut process = Supervised::spawn(
        "clickhouse-server",
        &program.path,
        &args,
        dir,
        &log,
        cleanup,
    )?;
    match tokio::time::timeout(START_TIMEOUT, wait_ready(&mut process, ports)).await {
        Ok(Ok((http, tcp))) => Ok((process, http, tcp)),
        Ok(Err(e)) => Err(e.context(format!(
            "clickhouse-server did not start; log tail:\n{}\n{}",
            process.log_tail(),
            process::tail(&dir.join("log").join("clickhouse-server.err.log"), 20)
        ))),
        Err(_) => bail!(
            "clickhouse-server not ready within {START_TIMEOUT:?}; log tail:\n{}\n{}",
            process.log_tail(),
            process::tail(&dir.join("log").join("clickhouse-server.log"), 20)
        ),
    }
}

/// Waits until the process listens and its HTTP port answers `/ping`.
async fn wait_ready(
    process: &mut Supervised,
    expected: Option<(u16, u16)>,
) -> anyhow::Result<(u16, u16)> {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        if !process.is_running() {
            bail!("clickhouse-server exited during start-up");
        }
        let listening = process::listening_ports(process.pid());
        if let Some((http, tcp)) = expected {
            // Fixed ports: also make sure it is *our* process that listens on them.
            if listening.contains(&http) && listening.contains(&tcp) && ping(http).await {
                return Ok((http, tcp));
            }
            if listening.is_empty() && !Path::new("/proc/self").exists() && ping(http).await {
                return Ok((http, tcp));
            }
            continue;
        }
        if listening.len() < 2 {
            continue;
        }
        let mut http_ports = Vec::new();
        for &port in &listening {
            if ping(port).await {
                http_ports.push(port);
            }
        }
        let others: Vec<u16> = listening
            .iter()
            .copied()
            .filter(|p| !http_ports.contains(p))
            .collect();
        match (http_ports.as_slice(), others.as_slice()) {
            ([http], [tcp]) => return Ok((*http, *tcp)),
            ([], _) => continue, // listening, but not serving yet
            _ => bail!("cannot tell the HTTP and native ports apart among {listening:?}"),
        }
    }
}

/// True if `GET /ping` on `port` answers `Ok.\n`.
async fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    matches!(
        tokio::time::timeout(PING_TIMEOUT, httpio::send(addr, Method::GET, "/ping", Bytes::new())).await,
        Ok(Ok((StatusCode::OK, body))) if body.as_ref() == b"Ok.\n"
    )
}

/// Writes `config.xml` and `users.xml` into `dir`.
///
/// Kept to what both 18.16 and current releases accept: the `<yandex>` root (current
/// versions still read it), `users_config` rather than `user_directories`, no interserver
/// port, listen on 127.0.0.1 only, small caches, UTC.
fn write_config(
    dir: &Path,
    http_port: u16,
    tcp_port: u16,
    replica: Option<&Replica>,
) -> anyhow::Result<()> {
    let d = dir.display();
    let cluster = replica.map(Replica::config).unwrap_or_default();
    let config = format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{d}/log/clickhouse-server.log</log>
        <errorlog>{d}/log/clickhouse-server.err.log</errorlog>
        <size>50M</size>
        <count>1</count>
        <console>0</console>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <max_concurrent_queries>200</max_concurrent_queries>
    <mlock_executable>false</mlock_executable>
{cluster}</yandex>
"#
    );
    let users = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default></default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default></default>
    </quotas>
</yandex>
"#;
    for sub in ["log", "data", "tmp", "user_files", "format_schemas"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(dir.join("config.xml"), config).context("writing config.xml")?;
    std::fs::write(dir.join("users.xml"), users).context("writing users.xml")?;
    Ok(())
}

/// Replicas of one shard forming ClickHouse cluster [`CLUSTER`], with their ZooKeeper; all
/// killed on drop.
#[derive(Debug)]
pub struct ClickHouseCluster {
    // Declared before `zookeeper`: replicas die before their coordinator.
    replicas: Vec<ClickHouseServer>,
    zookeeper: ZooKeeper,
}

impl ClickHouseCluster {
    /// Starts a ZooKeeper, then `replicas` ClickHouse servers as replicas of one shard, and
    /// waits until each answers `/ping`.
    ///
    /// # Errors
    /// As [`ClickHouseServer::start`] and [`ZooKeeper::start`].
    pub async fn start(replicas: usize) -> anyhow::Result<Self> {
        let zookeeper = ZooKeeper::start().await?;
        let program = bin::clickhouse_server()?;
        let ports = (0..replicas)
            .map(|_| {
                Ok((
                    crate::free_port()?,
                    crate::free_port()?,
                    crate::free_port()?,
                ))
            })
            .collect::<anyhow::Result<Vec<(u16, u16, u16)>>>()?;
        let peers: Vec<u16> = ports.iter().map(|p| p.1).collect();
        let mut servers = Vec::new();
        for (i, (http_port, tcp_port, interserver_port)) in ports.into_iter().enumerate() {
            let dir = tempfile::Builder::new()
                .prefix(&format!("livegate-clickhouse-r{i}-"))
                .tempdir()
                .context("creating the clickhouse temp dir")?;
            let replica = Replica {
                name: format!("r{i}"),
                interserver_port,
                zookeeper_port: zookeeper.port(),
                peers: peers.clone(),
            };
            let (process, _, _) = launch(
                &program,
                dir.path(),
                Some((http_port, tcp_port)),
                None,
                Some(&replica),
            )
            .await?;
            servers.push(ClickHouseServer {
                process: Some(process),
                program: program.clone(),
                http_port,
                tcp_port,
                replica: Some(Box::new(replica)),
                dir: Dir::Temp(dir),
            });
        }
        Ok(Self {
            replicas: servers,
            zookeeper,
        })
    }

    /// The cluster's name in `remote_servers` (what `CLICKHOUSE_CLUSTER` takes).
    pub fn name(&self) -> &'static str {
        CLUSTER
    }

    /// Replica `i`.
    ///
    /// # Panics
    /// When there is no replica `i`.
    pub fn replica(&mut self, i: usize) -> &mut ClickHouseServer {
        &mut self.replicas[i]
    }

    /// Every replica.
    pub fn replicas(&self) -> &[ClickHouseServer] {
        &self.replicas
    }

    /// The ZooKeeper the replicas coordinate through.
    pub fn zookeeper(&self) -> &ZooKeeper {
        &self.zookeeper
    }
}
