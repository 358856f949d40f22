//! `livegate-test-support`: the harness livegate's tests run on.
//!
//! Real servers on loopback, never mocks, and Google auth without Google:
//! - [`nats`]: [`NatsServer`], a `nats-server -js` per test on an ephemeral port, with
//!   `stop`/`restart` (same port, same store) for fault tests; [`NatsCluster`], three of them
//!   as one JetStream cluster.
//! - [`clickhouse`]: [`ClickHouseServer`], a `clickhouse-server` (Debian's 18.16 or current)
//!   in a temp dir; [`ClickHouseServer::shared`] gives one per test binary, and tests isolate
//!   with [`ClickHouseServer::create_database`].
//! - [`zookeeper`]: [`ZooKeeper`], Debian's ZooKeeper standalone on a loopback port, for
//!   [`clickhouse::ClickHouseCluster`].
//! - [`names`]: [`unique`] names for streams, buckets and databases.
//! - [`google`]: a generated service-account key whose self-signed JWTs the emulator accepts,
//!   a fake OAuth token endpoint for `authorized_user` files, and a fake GCE metadata server,
//!   all driven through the real `google-cloud-auth` crate.
//! - [`live`]: the client side of a Live session (setup and turn frames, bounded readers).
//! - [`python`]: [`python::venv`], the one Python virtualenv (`~/.cache/livegate-py`) the
//!   tests that run Python share, its packages installed on demand under a lock.
//! - [`node`]: [`node::modules`], the Node packages of a `package-lock.json` installed once
//!   into `~/.cache/livegate-node` (playwright-core, the JS Live SDK).
//! - [`workspace`]: [`workspace::workspace_bin`], the workspace's binaries as built by
//!   `scripts/test.sh`, for tests of other packages.
//! - `process` (internal): servers run under a `sh` wrapper that kills them when the test
//!   process goes away, however it goes; `bin` (internal): finding the executables
//!   ([`NATS_SERVER_BIN`], [`CLICKHOUSE_SERVER_BIN`], `PATH`, pip's and Debian's locations).
//!
//! Servers missing from the machine make `start` fail with a message saying to run
//! `scripts/install-deps.sh`.

// Test support, not service code: it reads the test machine's environment (PATH, HOME, binary
// overrides) directly and runs small servers whose tasks the calling test owns.
#![allow(
    clippy::disallowed_methods,
    reason = "test support: direct environment reads and test-owned tasks"
)]

mod bin;
pub mod clickhouse;
pub mod google;
mod httpio;
pub mod live;
pub mod names;
pub mod nats;
pub mod node;
mod process;
pub use process::run_bounded;
pub mod python;
pub mod workspace;
pub mod zookeeper;

pub use bin::{CLICKHOUSE_SERVER_BIN, NATS_SERVER_BIN};
pub use clickhouse::{ClickHouseCluster, ClickHouseServer};
pub use google::{FakeMetadataServer, FakeTokenEndpoint, TestServiceAccount};
pub use names::unique;
pub use nats::{NatsCluster, NatsServer};
pub use zookeeper::ZooKeeper;

/// A free loopback port for servers whose peers must know the port before they start
/// (cluster routes, ZooKeeper, ClickHouse replicas) and which restart on the same port.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), never from it: a port
/// handed out as the local end of some outgoing connection could otherwise be in use when a
/// killed server comes back. Checked by binding it (then released: a tiny window remains).
///
/// # Errors
/// If no such port can be bound after 200 tries.
pub fn free_port() -> anyhow::Result<u16> {
    use rand::Rng as _;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(12_000);
    for _ in 0..200 {
        let port = rand::thread_rng().gen_range(10_000..ephemeral_low);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port below {ephemeral_low}")
}

/// Installs rustls' ring provider as the process default, once; later calls do nothing.
///
/// Both ring and aws-lc-rs are compiled into the workspace (google-cloud-auth pulls the
/// latter), so rustls cannot pick a default by itself and `ClientConfig::builder()` panics.
/// Call this at the start of every test that makes TLS or Google-auth clients.
pub fn init_crypto() {
    // Err means a provider is installed already (by us or by the code under test): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sends `tracing` output to the test harness's captured output, filtered by `LIVEGATE_LOG`
/// (default `warn`). Safe to call from every test; only the first call installs.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIVEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
