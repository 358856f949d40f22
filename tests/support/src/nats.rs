//! A real `nats-server` with JetStream on loopback, one per test.
//!
//! Started as `nats-server -a 127.0.0.1 -p -1 -js -sd <tmp>/store --ports_file_dir <tmp>`: the
//! server picks a free port and writes it to `<tmp>/nats-server_<pid>.ports`, which we read.
//! Readiness is a JetStream API round trip (`$JS.API.INFO`), so a returned server is ready
//! for streams and KV. [`NatsServer::stop`] kills it (SIGKILL, store kept) and
//! [`NatsServer::restart`] brings it back on the same port with the same store, for fault
//! tests. Output goes to `<tmp>/nats-server.log`.
//!
//! [`NatsServer::start_secured`] runs the server as livegate deploys it: the users and
//! permissions of `deploy/nats/permissions.conf` (the very file, its `$LIVEGATE_NATS_*_PASSWORD`
//! references replaced by generated passwords), TLS with a throwaway CA, no anonymous access.
//! [`NatsServer::options_for`] gives a service's connection settings for one of its users, and
//! [`NatsServer::client`] then connects as `admin`, so helpers reading streams keep working.
//!
//! [`NatsCluster::start`] runs three such servers as one JetStream cluster (routes between
//! pre-picked loopback cluster ports, one store each), ready for R3 streams and buckets; each
//! node is a [`NatsServer`], so [`NatsServer::stop`] (SIGKILL) and [`NatsServer::restart`]
//! work on one node at a time.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;

use livegate_common::nats::NatsOptions;

use crate::bin::{self, Program};
use crate::process::Supervised;

/// Upper bound for a start or restart, including JetStream recovering its store.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The users `deploy/nats/permissions.conf` defines.
pub const USERS: [&str; 5] = ["gateway", "auth", "metering", "cli", "admin"];

/// The permission file every livegate deployment includes.
fn permissions_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats/permissions.conf")
}

/// Users, passwords and the CA of a server started with [`NatsServer::start_secured`].
#[derive(Debug, Clone)]
struct Secured {
    /// (user, password) for each of [`USERS`].
    passwords: Vec<(&'static str, String)>,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
}

impl Secured {
    /// Generates passwords and a CA plus a certificate for 127.0.0.1, and writes into `dir`
    /// the permission file (passwords filled in) and `nats.conf` including it.
    fn create(dir: &Path) -> anyhow::Result<Self> {
        use rand::Rng as _;
        let passwords: Vec<(&'static str, String)> = USERS
            .iter()
            .map(|u| {
                let pw: String = rand::thread_rng()
                    .sample_iter(rand::distributions::Alphanumeric)
                    .take(24)
                    .map(char::from)
                    .collect();
                (*u, pw)
            })
            .collect();
        let mut permissions = std::fs::read_to_string(permissions_file())
            .context("reading deploy/nats/permissions.conf")?;
        for (user, pw) in &passwords {
            let var = format!("$LIVEGATE_NATS_{}_PASSWORD", user.to_uppercase());
            if !permissions.contains(&var) {
                bail!("deploy/nats/permissions.conf does not use {var}");
            }
            permissions = permissions.replace(&var, &format!("\"{pw}\""));
        }
        std::fs::write(dir.join("permissions.conf"), permissions)?;

        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "livegate test NATS CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?
            .signed_by(&key, &issuer)?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem())?;
        std::fs::write(dir.join("server.pem"), cert.pem())?;
        std::fs::write(dir.join("server-key.pem"), key.serialize_pem())?;
        std::fs::write(
            dir.join("nats.conf"),
            format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n}}\ninclude ./permissions.conf\n",
                dir.join("server.pem").display(),
                dir.join("server-key.pem").display()
            ),
        )?;
        Ok(Self { passwords, ca })
    }

    fn password(&self, user: &str) -> Option<&str> {
        self.passwords
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, p)| p.as_str())
    }
}

/// A running (or deliberately stopped) nats-server; killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    // Declared before `dir` so the server dies before its directory is removed.
    process: Option<Supervised>,
    program: Program,
    port: u16,
    secured: Option<Secured>,
    /// Set on a node of a [`NatsCluster`].
    node: Option<ClusterNode>,
    dir: TempDir,
}

/// How one node of a [`NatsCluster`] joins the others.
#[derive(Debug, Clone)]
struct ClusterNode {
    /// `n0`, `n1`, …: the JetStream server name.
    name: String,
    /// This node's route port.
    cluster_port: u16,
    /// Every node's route port (its own included: nats-server ignores a route to itself).
    routes: Vec<u16>,
}

impl ClusterNode {
    fn args(&self) -> Vec<OsString> {
        let routes = self
            .routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        [
            "--server_name".to_owned(),
            self.name.clone(),
            "--cluster_name".to_owned(),
            CLUSTER_NAME.to_owned(),
            "--cluster".to_owned(),
            format!("nats://127.0.0.1:{}", self.cluster_port),
            "--routes".to_owned(),
            routes,
        ]
        .map(OsString::from)
        .to_vec()
    }
}

/// The cluster name [`NatsCluster`] nodes share.
const CLUSTER_NAME: &str = "livegate-test";

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
        let (process, port) = launch(&program, dir.path(), None, None, None).await?;
        Ok(Self {
            process: Some(process),
            program,
            port,
            secured: None,
            node: None,
            dir,
        })
    }

    /// Starts a fresh server as livegate deploys it: the users and permissions of
    /// `deploy/nats/permissions.conf` with generated passwords, TLS (a throwaway CA), no
    /// anonymous access.
    ///
    /// # Errors
    /// As for [`start`](Self::start); also when the permission file cannot be read.
    pub async fn start_secured() -> anyhow::Result<Self> {
        // TLS clients (ours, the readiness probe's) need the process-wide rustls provider.
        crate::init_crypto();
        let program = bin::nats_server()?;
        let dir = tempfile::Builder::new()
            .prefix("livegate-nats-")
            .tempdir()
            .context("creating the nats temp dir")?;
        std::fs::create_dir_all(dir.path().join("store"))?;
        let secured = Secured::create(dir.path())?;
        let (process, port) = launch(&program, dir.path(), None, Some(&secured), None).await?;
        Ok(Self {
            process: Some(process),
            program,
            port,
            secured: Some(secured),
            node: None,
            dir,
        })
    }

    /// Connection settings for `user` (one of [`USERS`]) on a secured server: its password
    /// and the CA; on a plain server just the URL.
    ///
    /// # Errors
    /// When `user` is not one of [`USERS`] on a secured server.
    pub fn options_for(&self, user: &str) -> anyhow::Result<NatsOptions> {
        let plain = NatsOptions::from(self.url());
        Ok(match &self.secured {
            None => plain,
            Some(s) => {
                let password = s.password(user).with_context(|| {
                    format!("{user} is not a user of deploy/nats/permissions.conf")
                })?;
                plain
                    .with_user_password(user, password)
                    .with_tls_ca(s.ca.clone())
            }
        })
    }

    /// Connection settings with TLS (when secured) but no credential: an anonymous client.
    pub fn anonymous_options(&self) -> NatsOptions {
        let plain = NatsOptions::from(self.url());
        match &self.secured {
            None => plain,
            Some(s) => plain.with_tls_ca(s.ca.clone()),
        }
    }

    /// The password of `user` on a secured server.
    pub fn password(&self, user: &str) -> Option<&str> {
        self.secured.as_ref()?.password(user)
    }

    /// The CA bundle of a secured server.
    pub fn ca_path(&self) -> Option<&Path> {
        self.secured.as_ref().map(|s| s.ca.as_path())
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

    /// Connects a new client (as `admin` on a secured server).
    ///
    /// # Errors
    /// If the server is stopped or the connection fails.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        admin_connect(&self.url(), self.secured.as_ref()).await
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
        let (process, port) = launch(
            &self.program,
            self.dir.path(),
            Some(self.port),
            self.secured.as_ref(),
            self.node.as_ref(),
        )
        .await?;
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
    secured: Option<&Secured>,
    node: Option<&ClusterNode>,
) -> anyhow::Result<(Supervised, u16)> {
    let process = spawn_server(program, dir, port, secured, node)?;
    wait_launched(process, dir, port, secured).await
}

/// Spawns nats-server in `dir` without waiting for it.
fn spawn_server(
    program: &Program,
    dir: &Path,
    port: Option<u16>,
    secured: Option<&Secured>,
    node: Option<&ClusterNode>,
) -> anyhow::Result<Supervised> {
    let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let mut args: Vec<OsString> = program.leading_args.clone();
    if secured.is_some() {
        args.push("-c".into());
        args.push(dir.join("nats.conf").into_os_string());
    }
    args.extend(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"].map(OsString::from));
    args.push(dir.join("store").into_os_string());
    args.push("--ports_file_dir".into());
    args.push(dir.as_os_str().to_owned());
    if let Some(node) = node {
        args.extend(node.args());
    }
    let log = dir.join("nats-server.log");
    Supervised::spawn("nats-server", &program.path, &args, dir, &log, None)
}

/// Waits (bounded) until a spawned server answers JetStream requests on its port.
async fn wait_launched(
    mut process: Supervised,
    dir: &Path,
    port: Option<u16>,
    secured: Option<&Secured>,
) -> anyhow::Result<(Supervised, u16)> {
    match tokio::time::timeout(START_TIMEOUT, wait_ready(&mut process, dir, secured)).await {
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
async fn wait_ready(
    process: &mut Supervised,
    dir: &Path,
    secured: Option<&Secured>,
) -> anyhow::Result<u16> {
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
        if jetstream_ready(&url, secured).await {
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
async fn jetstream_ready(url: &str, secured: Option<&Secured>) -> bool {
    let Ok(client) = admin_connect(url, secured).await else {
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

/// A client for `url`: anonymous on a plain server, `admin` over TLS on a secured one.
async fn admin_connect(url: &str, secured: Option<&Secured>) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
    if let Some(s) = secured {
        let password = s.password("admin").unwrap_or_default().to_string();
        options = options
            .user_and_password("admin".into(), password)
            .add_root_certificates(s.ca.clone())
            .require_tls(true);
    }
    options
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Three nats-servers on loopback forming one JetStream cluster; killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` (at least 3 for R3) servers with JetStream as one cluster and waits until
    /// every node answers JetStream requests (the meta leader is elected).
    ///
    /// # Errors
    /// As [`NatsServer::start`], for any node.
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        let program = bin::nats_server()?;
        let routes = (0..size)
            .map(|_| crate::free_port())
            .collect::<anyhow::Result<Vec<u16>>>()?;
        // Client ports picked too (not ephemeral): a node restarts on its own port.
        let clients = (0..size)
            .map(|_| crate::free_port())
            .collect::<anyhow::Result<Vec<u16>>>()?;
        let mut spawned = Vec::new();
        for (i, (cluster_port, client_port)) in routes.iter().zip(&clients).enumerate() {
            let dir = tempfile::Builder::new()
                .prefix(&format!("livegate-nats-n{i}-"))
                .tempdir()
                .context("creating the nats temp dir")?;
            std::fs::create_dir_all(dir.path().join("store"))?;
            let node = ClusterNode {
                name: format!("n{i}"),
                cluster_port: *cluster_port,
                routes: routes.clone(),
            };
            let process =
                spawn_server(&program, dir.path(), Some(*client_port), None, Some(&node))?;
            spawned.push((process, dir, node, *client_port));
        }
        // All spawned first: no node is ready (no JetStream meta leader) until a quorum runs.
        let mut nodes = Vec::new();
        for (process, dir, node, client_port) in spawned {
            let (process, port) =
                wait_launched(process, dir.path(), Some(client_port), None).await?;
            nodes.push(NatsServer {
                process: Some(process),
                program: program.clone(),
                port,
                secured: None,
                node: Some(node),
                dir,
            });
        }
        Ok(Self { nodes })
    }

    /// Every node's client URL, comma-separated (what `NATS_URL` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`.
    ///
    /// # Panics
    /// When there is no node `i`.
    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A client given every node's URL, so it fails over like a service's.
    ///
    /// # Errors
    /// If no node accepts the connection.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let addrs = self
            .nodes
            .iter()
            .map(|n| n.url().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .context("node URLs")?;
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(addrs)
            .await
            .context("connecting to the NATS cluster")
    }
}
