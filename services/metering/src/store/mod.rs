//! Metering's ClickHouse storage: [`Store`] (the client for one database, built in
//! [`Store::new`], the only place metering constructs a ClickHouse client) and [`StoreError`].
//! Each concern has its own file:
//!
//! - `migrations`: the schema, one file per migration, and the runner [`Store::migrate`].
//! - `rows`: the rows metering writes (`usage_events`, `sessions`), their money encoding and
//!   their inserts.
//! - `dedupe`: the reads that keep writes idempotent (which events and session rows are
//!   already stored).
//! - `session_totals`: a session's usage summed from `usage_events`, for its `sessions` row.
//! - `session_starts`: the sessions started (`session_starts`), those still open, and the
//!   recent session rows that may be short, for the lease reconciler (`crate::leases`).
//! - `spend`: the per-day spend totals (`spend_totals`) and all-time spend per key and per
//!   team from them, for the `livegate_spend` KV bucket.
//!
//! Rows are written as given (`RowBinary`, validation off: ClickHouse 18.16 lacks
//! `RowBinaryWithNamesAndTypes`). Money columns are `Decimal(38, 12)`, which `RowBinary` carries
//! as a little-endian `Int128` of 1e-12 USD units (see `rows::usd`). Values are bound
//! client-side (`?`), never with server-side `{p:Type}` parameters, which 18.16 does not have.
//! Reads of money go through `toString(sum(…))` and back into `Decimal`, never through floats.
//!
//! # Tables
//! - `usage_events`: one row per `UsageReport` (`seq` ≥ 1), plus one row `{session_id}:end`
//!   (`seq` = 0) for the usage a `SessionEnded` carries after the last report, when there is
//!   any. `ReplacingMergeTree` ordered by `(session_id, event_id)`, partitioned by month of `ts`
//!   (the event's own time, so a redelivered copy lands in the same partition).
//! - `sessions`: one row per ended session with its totals, `ReplacingMergeTree(version)`
//!   ordered by `session_id`; `version` grows with the number of usage rows the totals include.
//!   A session closed as lost by the lease reconciler has `version` 0, so the gateway's own
//!   `SessionEnded`, should it arrive after all (a partition, not a crash), replaces it. A row
//!   written before all its reports were stored (`reports_stored < reports`) is rewritten by
//!   the reconciler, with a higher version, when they land.
//! - `session_starts`: one row per `SessionStarted` with the gateway process serving it,
//!   `ReplacingMergeTree` ordered by `session_id`, partitioned by month of `started_at`.
//! - `spend_daily`: one row per usage event and one per session (`sessions = 1`, on the day the
//!   session started), fed by two materialized views, `ReplacingMergeTree` ordered by
//!   `(team_id, key_id, day, model, event_id)`. Not per-day totals: sum it by day (with `FINAL`).
//! - `spend_totals`: one row per key × day × team with that day's cost, recomputed by metering
//!   for the key-days each batch touches, `ReplacingMergeTree(version)` ordered by
//!   `(key_id, day, team_id)`; budgets read all-time spend from it.
//!
//! # Reading the tables exactly
//! A redelivered event may be inserted twice before ClickHouse merges the copies away. Read
//! with `FINAL` (or aggregate over `event_id` first) and every figure is exact:
//!
//! ```sql
//! -- spend per key and day
//! SELECT day, key_id, sum(sessions) AS sessions, sum(prompt_tokens) AS prompt_tokens,
//!        sum(response_tokens) AS response_tokens, sum(cost_usd) AS cost_usd
//! FROM livegate.spend_daily FINAL
//! WHERE day >= today() - 7
//! GROUP BY day, key_id ORDER BY day, key_id;
//!
//! -- one session's events and its row
//! SELECT * FROM livegate.usage_events FINAL WHERE session_id = '…' ORDER BY seq;
//! SELECT * FROM livegate.sessions FINAL WHERE session_id = '…';
//! ```

pub(crate) mod migrations;

mod dedupe;
mod rows;
mod session_starts;
mod session_totals;
mod spend;

pub use rows::{PricedEvent, ReceiptRow, SessionRow, UsageRow};
pub(crate) use rows::{from_usd, usd};
pub use session_starts::SessionStartRow;
pub use session_totals::SessionTotals;
pub use spend::KeyDay;

use crate::config::ClickHouseConfig;
use clickhouse::Client;
use secrecy::ExposeSecret;

/// How many values go into one `IN (…)` list: keeps each query far below ClickHouse's
/// 256 KiB `max_query_size` whatever the batch size.
const IN_CHUNK: usize = 500;

/// A ClickHouse call failed.
#[derive(Debug, thiserror::Error)]
#[error("ClickHouse {op} failed: {source}")]
pub struct StoreError {
    /// What we were doing.
    pub op: &'static str,
    /// The client's error.
    #[source]
    pub source: clickhouse::error::Error,
}

fn err(op: &'static str) -> impl FnOnce(clickhouse::error::Error) -> StoreError {
    move |source| StoreError { op, source }
}

/// The ClickHouse side of metering. Cheap to clone (the client is a handle).
#[derive(Clone)]
pub struct Store {
    client: Client,
    db: String,
    /// One server or a cluster (`CLICKHOUSE_CLUSTER`): how migrations are rendered.
    layout: migrations::Layout,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db", &self.db)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// `?, ?, ?` for `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl Store {
    /// A store for `config`; connects lazily.
    ///
    /// In cluster mode (`config.cluster`) every query runs with `insert_distributed_sync = 1`
    /// (an insert into a `Distributed` table returns once a replica of each shard holds it, so
    /// metering still acknowledges only what is stored), `distributed_product_mode = local`
    /// (an `IN (SELECT …)` over another table reads the shard's own rows: every table is
    /// sharded by session, so a session's rows are all there). Reads and writes go to the
    /// replica the statement entered through when it holds the shard (ClickHouse's default,
    /// and 18.16 writes locally whatever the settings), so metering reads its own writes while
    /// its statements reach one server; through a load balancer that spreads them, or on a
    /// replica catching up after an outage, a read may miss rows just written: the spend
    /// feedback settles for that ([`Store::reads_may_lag`]).
    pub fn new(config: &ClickHouseConfig) -> Self {
        let client = livegate_common::clickhouse::client(
            &config.url,
            &config.user,
            config.password.expose_secret(),
        );
        let (client, layout) = match &config.cluster {
            None => (client, migrations::Layout::Single),
            Some(cluster) => (
                client
                    .with_setting("insert_distributed_sync", "1")
                    .with_setting("distributed_product_mode", "local"),
                migrations::Layout::Cluster(cluster.clone()),
            ),
        };
        Self {
            client,
            db: config.database.clone(),
            layout,
        }
    }

    /// Whether a read may miss rows just written (a cluster: a replica catching up after an
    /// outage serves reads before it holds every part).
    pub fn reads_may_lag(&self) -> bool {
        matches!(self.layout, migrations::Layout::Cluster(_))
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.db
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.db)
    }

    /// `SELECT 1`.
    ///
    /// # Errors
    /// [`StoreError`] when ClickHouse does not answer.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .query("SELECT toUInt8(1)")
            .fetch_one::<u8>()
            .await
            .map(|_| ())
            .map_err(err("ping"))
    }
}
