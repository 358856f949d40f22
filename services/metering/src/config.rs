//! The metering service's configuration: defaults, then the YAML file, then the environment.
//!
//! Each variable is a constant below with its default; what they mean for an operator is
//! documented once, in the README's configuration table and metering's README.

use livegate_common::config::{ConfigError, FileConfig};
use livegate_common::env::{Env, EnvError, EnvExt};
use livegate_common::leases;
use livegate_common::nats::{NatsConfigError, NatsOptions};
use livegate_common::subjects;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How many deliveries a `SessionEnded` waits (one redelivery a second) for reports the
/// gateway published but metering has not stored yet, before its `sessions` row is written
/// with what arrived ([`Config::session_waits`]; the lease reconciler completes the row if the
/// rest land later).
pub const MAX_SESSION_WAITS: u64 = 10;

/// HTTP listen address (`/metrics`, `/healthz`, `/readyz`).
pub const LISTEN: &str = "METERING_LISTEN";
/// Default for [`LISTEN`].
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9464";
/// ClickHouse HTTP URL.
pub const CLICKHOUSE_URL: &str = "CLICKHOUSE_URL";
/// Default for [`CLICKHOUSE_URL`].
pub const DEFAULT_CLICKHOUSE_URL: &str = "http://127.0.0.1:8123";
/// ClickHouse database (created if missing).
pub const CLICKHOUSE_DATABASE: &str = "CLICKHOUSE_DATABASE";
/// Default for [`CLICKHOUSE_DATABASE`].
pub const DEFAULT_CLICKHOUSE_DATABASE: &str = "livegate";
/// ClickHouse user.
pub const CLICKHOUSE_USER: &str = "CLICKHOUSE_USER";
/// Default for [`CLICKHOUSE_USER`].
pub const DEFAULT_CLICKHOUSE_USER: &str = "default";
/// ClickHouse password (default empty).
pub const CLICKHOUSE_PASSWORD: &str = "CLICKHOUSE_PASSWORD";
/// A cluster of ClickHouse's `remote_servers` to lay the schema out on: `ON CLUSTER` DDL,
/// replicated tables behind `Distributed` ones (see `store::migrations`). Unset: one server.
pub const CLICKHOUSE_CLUSTER: &str = "CLICKHOUSE_CLUSTER";
/// A LiteLLM-format pricing file that overrides or extends the built-in table.
pub const PRICING_FILE: &str = "PRICING_FILE";
/// Most events per fetch and per insert.
pub const BATCH_SIZE: &str = "METERING_BATCH_SIZE";
/// Longest a partial batch waits for more events (humantime, e.g. `500ms`).
pub const FLUSH_INTERVAL: &str = "METERING_FLUSH_INTERVAL";
/// JetStream ack wait (humantime).
pub const ACK_WAIT: &str = "METERING_ACK_WAIT";
/// The consumer's `max_ack_pending`.
pub const MAX_ACK_PENDING: &str = "METERING_MAX_ACK_PENDING";
/// Insert attempts per batch.
pub const INSERT_RETRIES: &str = "METERING_INSERT_RETRIES";
/// `true`: look every event up before inserting it, not only redeliveries (see
/// [`Config::verify_first_deliveries`]).
pub const VERIFY_FIRST_DELIVERIES: &str = "METERING_VERIFY_FIRST_DELIVERIES";
/// Drain bound on shutdown (humantime).
pub const SHUTDOWN_TIMEOUT: &str = "METERING_SHUTDOWN_TIMEOUT";
/// How long a gateway process's lease may go unrenewed before its open sessions are closed as
/// lost (humantime, 1s to 10m, default 15s; a gateway whose own `GATEWAY_LEASE` is longer gets
/// that). The reconciler looks every third of it.
pub const LEASE: &str = "METERING_LEASE";

/// Why the configuration is unusable (the binary exits with `EX_USAGE`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable is set but invalid.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The YAML file is unreadable or invalid.
    #[error(transparent)]
    File(#[from] ConfigError),
    /// The NATS settings (`NATS_URL`, credentials, TLS) are unusable.
    #[error(transparent)]
    Nats(#[from] NatsConfigError),
}

/// Everything the metering service needs, loaded once in `main` and passed down.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`METERING_LISTEN`; port 0 binds an ephemeral port).
    pub listen: SocketAddr,
    /// `NATS_URL`, credentials and TLS.
    pub nats: NatsOptions,
    /// ClickHouse connection.
    pub clickhouse: ClickHouseConfig,
    /// `PRICING_FILE`.
    pub pricing_file: Option<PathBuf>,
    /// Most events per fetch and per insert (`METERING_BATCH_SIZE`).
    pub batch_size: usize,
    /// Longest a partial batch waits (`METERING_FLUSH_INTERVAL`).
    pub flush_interval: Duration,
    /// JetStream ack wait (`METERING_ACK_WAIT`).
    pub ack_wait: Duration,
    /// The durable consumer's `max_ack_pending` (`METERING_MAX_ACK_PENDING`).
    pub max_ack_pending: i64,
    /// Insert attempts per batch before it is handed back with a NAK (`METERING_INSERT_RETRIES`).
    pub insert_retries: u32,
    /// Upper bound for draining on shutdown (`METERING_SHUTDOWN_TIMEOUT`).
    pub shutdown_timeout: Duration,
    /// JetStream stream (tests isolate with their own name).
    pub stream: String,
    /// Durable consumer name, shared by all replicas.
    pub consumer: String,
    /// KV bucket the spend totals are written to.
    pub spend_bucket: String,
    /// `METERING_LEASE`: see [`LEASE`].
    pub lease: Duration,
    /// Most deliveries of a `SessionEnded` waiting for its reports: [`MAX_SESSION_WAITS`].
    /// Not read from the environment (the default suits every deployment): a knob for tests
    /// and embedding, which set it lower to see a row written short without waiting 10 s.
    pub session_waits: u64,
    /// `METERING_VERIFY_FIRST_DELIVERIES`: look up every event before inserting it, not only
    /// the ones JetStream redelivers, so an event id published again as a new message with
    /// other content (a buggy or replaying publisher) is skipped instead of billed on a second
    /// day, key or model. Off by default: the lookup roughly halves insert throughput
    /// (services/metering/README.md, "Exactly once").
    pub verify_first_deliveries: bool,
}

/// Where ClickHouse is.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// HTTP URL, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database; must be a plain identifier (`[A-Za-z_][A-Za-z0-9_]*`).
    pub database: String,
    /// User.
    pub user: String,
    /// Password (empty = none).
    pub password: SecretString,
    /// `CLICKHOUSE_CLUSTER`: the cluster the schema is laid out on; `None` for one server.
    /// A plain identifier, like the database.
    pub cluster: Option<String>,
}

impl Config {
    /// Builds the configuration from the file and the environment (env wins).
    ///
    /// # Errors
    /// [`Error`] when a value is present but invalid.
    pub fn load(_file: &FileConfig, env: &impl Env) -> Result<Self, Error> {
        let listen = match env.parse::<SocketAddr>(LISTEN)? {
            Some(a) => a,
            None => SocketAddr::from(([0, 0, 0, 0], 9464)),
        };
        let database = env.var_or(CLICKHOUSE_DATABASE, DEFAULT_CLICKHOUSE_DATABASE);
        if !is_identifier(&database) {
            return Err(EnvError {
                name: CLICKHOUSE_DATABASE.to_string(),
                value: database,
                reason: "must be letters, digits and underscores, not starting with a digit"
                    .to_string(),
            }
            .into());
        }
        let batch_size = env.parse::<usize>(BATCH_SIZE)?.unwrap_or(5000);
        if batch_size == 0 {
            return Err(positive(BATCH_SIZE, "0"));
        }
        let max_ack_pending = env.parse::<i64>(MAX_ACK_PENDING)?.unwrap_or(20_000);
        if max_ack_pending < batch_size as i64 {
            return Err(EnvError {
                name: MAX_ACK_PENDING.to_string(),
                value: max_ack_pending.to_string(),
                reason: format!("must be at least {BATCH_SIZE} ({batch_size})"),
            }
            .into());
        }
        let insert_retries = env.parse::<u32>(INSERT_RETRIES)?.unwrap_or(5).max(1);
        let mut config = Self::for_servers(
            NatsOptions::from_env(env)?,
            env.var_or(CLICKHOUSE_URL, DEFAULT_CLICKHOUSE_URL),
            database,
        );
        config.listen = listen;
        config.clickhouse.user = env.var_or(CLICKHOUSE_USER, DEFAULT_CLICKHOUSE_USER);
        config.clickhouse.password =
            SecretString::from(env.get(CLICKHOUSE_PASSWORD).unwrap_or_default());
        config.clickhouse.cluster = env.var(CLICKHOUSE_CLUSTER);
        if let Some(cluster) = &config.clickhouse.cluster
            && !is_identifier(cluster)
        {
            return Err(EnvError {
                name: CLICKHOUSE_CLUSTER.to_string(),
                value: cluster.clone(),
                reason: "must be letters, digits and underscores, not starting with a digit"
                    .to_string(),
            }
            .into());
        }
        config.pricing_file = env.var(PRICING_FILE).map(PathBuf::from);
        config.batch_size = batch_size;
        config.flush_interval = duration(env, FLUSH_INTERVAL, config.flush_interval)?;
        config.ack_wait = duration(env, ACK_WAIT, config.ack_wait)?;
        config.max_ack_pending = max_ack_pending;
        config.insert_retries = insert_retries;
        config.verify_first_deliveries =
            env.parse::<bool>(VERIFY_FIRST_DELIVERIES)?.unwrap_or(false);
        config.shutdown_timeout = duration(env, SHUTDOWN_TIMEOUT, config.shutdown_timeout)?;
        config.lease = duration(env, LEASE, config.lease)?;
        if !(leases::MIN_LEASE..=leases::MAX_LEASE).contains(&config.lease) {
            return Err(EnvError {
                name: LEASE.to_string(),
                value: env.var(LEASE).unwrap_or_default(),
                reason: format!(
                    "must be between {:?} and {:?}",
                    leases::MIN_LEASE,
                    leases::MAX_LEASE
                ),
            }
            .into());
        }
        Ok(config)
    }

    /// A configuration for tests and embedding: listens on `127.0.0.1:0`, the contract's
    /// stream, consumer and bucket names, built-in prices, default batching.
    pub fn for_servers(
        nats: impl Into<NatsOptions>,
        clickhouse_url: impl Into<String>,
        database: impl Into<String>,
    ) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            nats: nats.into(),
            clickhouse: ClickHouseConfig {
                url: clickhouse_url.into(),
                database: database.into(),
                user: DEFAULT_CLICKHOUSE_USER.to_string(),
                password: SecretString::from(String::new()),
                cluster: None,
            },
            pricing_file: None,
            batch_size: 5000,
            flush_interval: Duration::from_millis(500),
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 20_000,
            insert_retries: 5,
            shutdown_timeout: Duration::from_secs(20),
            stream: subjects::STREAM.to_string(),
            consumer: subjects::METERING_CONSUMER.to_string(),
            spend_bucket: subjects::SPEND_BUCKET.to_string(),
            lease: leases::DEFAULT_LEASE,
            session_waits: MAX_SESSION_WAITS,
            verify_first_deliveries: false,
        }
    }
}

fn positive(name: &str, value: &str) -> Error {
    EnvError {
        name: name.to_string(),
        value: value.to_string(),
        reason: "must be positive".to_string(),
    }
    .into()
}

/// A positive duration from `name` (humantime, e.g. `500ms`), or `default` when unset.
fn duration(env: &impl Env, name: &str, default: Duration) -> Result<Duration, Error> {
    let d = env.duration(name, default)?;
    if d.is_zero() {
        return Err(positive(name, &env.var(name).unwrap_or_default()));
    }
    Ok(d)
}

pub(crate) use livegate_common::clickhouse::is_identifier;

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_design() {
        let c = Config::load(&FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            c.nats.servers_for_log(),
            livegate_common::env::DEFAULT_NATS_URL
        );
        assert_eq!(c.clickhouse.url, DEFAULT_CLICKHOUSE_URL);
        assert_eq!(c.clickhouse.database, "livegate");
        assert_eq!(c.clickhouse.user, "default");
        assert_eq!(c.clickhouse.password.expose_secret(), "");
        assert_eq!(c.pricing_file, None);
        assert_eq!(c.stream, subjects::STREAM);
        assert_eq!(c.consumer, subjects::METERING_CONSUMER);
        assert_eq!(c.spend_bucket, subjects::SPEND_BUCKET);
        assert_eq!(c.lease, Duration::from_secs(15));
        assert_eq!(c.clickhouse.cluster, None);
        assert!(!c.verify_first_deliveries);
        let c = Config::load(&FileConfig::default(), &env(&[(LEASE, "2s")])).unwrap();
        assert_eq!(c.lease, Duration::from_secs(2));
    }

    #[test]
    fn env_overrides() {
        let c = Config::load(
            &FileConfig::default(),
            &env(&[
                (LISTEN, "127.0.0.1:0"),
                (CLICKHOUSE_DATABASE, "usage_2"),
                (CLICKHOUSE_PASSWORD, "pw"),
                (PRICING_FILE, "/etc/prices.json"),
                (BATCH_SIZE, "50"),
                (FLUSH_INTERVAL, "250ms"),
                (ACK_WAIT, "5s"),
                (MAX_ACK_PENDING, "100"),
                (CLICKHOUSE_CLUSTER, "livegate"),
                (VERIFY_FIRST_DELIVERIES, "true"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.clickhouse.database, "usage_2");
        assert_eq!(c.clickhouse.password.expose_secret(), "pw");
        assert_eq!(c.pricing_file, Some(PathBuf::from("/etc/prices.json")));
        assert_eq!(c.batch_size, 50);
        assert_eq!(c.flush_interval, Duration::from_millis(250));
        assert_eq!(c.ack_wait, Duration::from_secs(5));
        assert_eq!(c.max_ack_pending, 100);
        assert_eq!(c.clickhouse.cluster.as_deref(), Some("livegate"));
        assert!(c.verify_first_deliveries);
    }

    #[test]
    fn bad_values_are_errors() {
        for (k, v) in [
            (LISTEN, "nope"),
            (CLICKHOUSE_DATABASE, "drop table"),
            (CLICKHOUSE_CLUSTER, "a b"),
            (BATCH_SIZE, "0"),
            (FLUSH_INTERVAL, "soon"),
            (ACK_WAIT, "0s"),
            (MAX_ACK_PENDING, "10"),
            (VERIFY_FIRST_DELIVERIES, "yes"),
            (LEASE, "0s"),
            (LEASE, "999ms"),
            (LEASE, "11m"),
        ] {
            assert!(
                Config::load(&FileConfig::default(), &env(&[(k, v)])).is_err(),
                "{k}={v} accepted"
            );
        }
    }
}
