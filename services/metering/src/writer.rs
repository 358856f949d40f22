//! Everything metering says to ClickHouse: migrations, row types, inserts, and the reads that
//! keep inserts idempotent (which events are already stored), build session rows (totals of a
//! session's usage) and feed spend back (totals per key and team).
//!
//! Rows are written as given (`RowBinary`, validation off: ClickHouse 18.16 lacks
//! `RowBinaryWithNamesAndTypes`). Money columns are `Decimal(38, 12)`, which `RowBinary` carries
//! as a little-endian `Int128` of 1e-12 USD units: see [`usd`]. Values are bound client-side
//! (`?`), never with server-side `{p:Type}` parameters, which 18.16 does not have. Reads of
//! money go through `toString(sum(…))` and back into [`Decimal`], never through floats.

use crate::config::ClickHouseConfig;
use crate::pricing::COST_SCALE;
use crate::schema;
use clickhouse::{Client, Row};
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

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

/// USD as `Decimal(38, 12)`'s wire form: an integer count of 1e-12 USD.
pub(crate) fn usd(d: Decimal) -> i128 {
    let d = d.round_dp(COST_SCALE);
    let scale = d.scale();
    // scale ≤ COST_SCALE after rounding, so the multiplier is at most 10^12 and the product
    // stays far inside i128 (|mantissa| < 2^96).
    d.mantissa() * 10i128.pow(COST_SCALE - scale)
}

/// The inverse of [`usd`].
pub(crate) fn from_usd(units: i128) -> Decimal {
    Decimal::try_from_i128_with_scale(units, COST_SCALE)
        .unwrap_or(Decimal::MAX)
        .normalize()
}

/// One `usage_events` row (every column but `inserted_at`, which defaults to `now()`).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct UsageRow {
    pub event_id: String,
    pub session_id: String,
    pub seq: u64,
    /// Seconds since the epoch (`DateTime('UTC')`).
    pub ts: u32,
    pub key_id: String,
    pub team_id: String,
    pub user_id: String,
    pub project: String,
    pub location: String,
    pub model: String,
    pub gateway_id: String,
    pub prompt_tokens: u64,
    pub response_tokens: u64,
    pub cached_tokens: u64,
    pub tool_use_tokens: u64,
    pub thoughts_tokens: u64,
    pub total_tokens: u64,
    pub input_text_tokens: u64,
    pub input_audio_tokens: u64,
    pub input_video_tokens: u64,
    pub input_image_tokens: u64,
    pub output_text_tokens: u64,
    pub output_audio_tokens: u64,
    pub input_characters: u64,
    pub input_audio_seconds: f64,
    pub input_video_seconds: f64,
    pub input_video_frames: u64,
    pub input_images: u64,
    pub output_characters: u64,
    pub output_audio_seconds: f64,
    /// Money: 1e-12 USD units (see [`usd`]).
    pub input_text_cost_usd: i128,
    pub input_audio_cost_usd: i128,
    pub input_image_cost_usd: i128,
    pub input_video_cost_usd: i128,
    pub cached_cost_usd: i128,
    pub tool_use_cost_usd: i128,
    pub output_text_cost_usd: i128,
    pub output_audio_cost_usd: i128,
    pub thoughts_cost_usd: i128,
    pub input_cost_usd: i128,
    pub output_cost_usd: i128,
    pub cost_usd: i128,
    pub priced: u8,
    pub pricing_entry: String,
}

/// One `sessions` row (every column but `inserted_at`).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SessionRow {
    pub session_id: String,
    pub key_id: String,
    pub team_id: String,
    pub user_id: String,
    pub project: String,
    pub location: String,
    pub model: String,
    pub gateway_id: String,
    pub started_at: u32,
    pub ended_at: u32,
    pub duration_s: f64,
    pub close_code: u16,
    pub close_reason: String,
    pub closed_by: String,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Reports the gateway says it published.
    pub reports: u64,
    /// Usage rows (reports and the `:end` row) the totals include.
    pub events_counted: u64,
    pub prompt_tokens: u64,
    pub response_tokens: u64,
    pub cached_tokens: u64,
    pub tool_use_tokens: u64,
    pub thoughts_tokens: u64,
    pub total_tokens: u64,
    pub input_characters: u64,
    pub output_characters: u64,
    pub input_audio_seconds: f64,
    pub output_audio_seconds: f64,
    pub input_video_seconds: f64,
    pub input_images: u64,
    pub input_cost_usd: i128,
    pub output_cost_usd: i128,
    pub cost_usd: i128,
    /// `ReplacingMergeTree` version: `events_counted + 1`, so a recount that saw more wins.
    pub version: u64,
}

/// A session's usage totals, summed over its deduplicated `usage_events` rows.
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize)]
#[allow(missing_docs)]
pub struct SessionTotals {
    pub session_id: String,
    pub events: u64,
    pub reports: u64,
    pub prompt_tokens: u64,
    pub response_tokens: u64,
    pub cached_tokens: u64,
    pub tool_use_tokens: u64,
    pub thoughts_tokens: u64,
    pub total_tokens: u64,
    pub input_characters: u64,
    pub output_characters: u64,
    pub input_audio_seconds: f64,
    pub output_audio_seconds: f64,
    pub input_video_seconds: f64,
    pub input_images: u64,
    pub input_cost_usd: String,
    pub output_cost_usd: String,
    pub cost_usd: String,
}

impl SessionTotals {
    /// A money column as a decimal (0 for an empty or unparsable value).
    pub fn money(s: &str) -> Decimal {
        Decimal::from_str(s.trim()).unwrap_or_default().normalize()
    }
}

#[derive(Debug, Row, Deserialize)]
struct Total {
    id: String,
    usd: String,
}

#[derive(Debug, Row, Deserialize)]
struct Version {
    session_id: String,
    version: u64,
}

/// The ClickHouse side of metering. Cheap to clone (the client is a handle).
#[derive(Clone)]
pub struct Store {
    client: Client,
    db: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// `?, ?, ?` for `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl Store {
    /// A store for `config`; connects lazily.
    pub fn new(config: &ClickHouseConfig) -> Self {
        let mut client = Client::default()
            .with_url(&config.url)
            .with_user(&config.user)
            .with_validation(false);
        let password = config.password.expose_secret();
        if !password.is_empty() {
            client = client.with_password(password);
        }
        Self {
            client,
            db: config.database.clone(),
        }
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

    /// Creates the database if needed and applies the migrations not yet recorded in
    /// `schema_migrations`. Returns the versions applied by this call.
    ///
    /// # Errors
    /// [`StoreError`] when a statement fails.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        self.client
            .query(&schema::create_database(&self.db))
            .execute()
            .await
            .map_err(err("create database"))?;
        self.client
            .query(&schema::render(schema::SCHEMA_MIGRATIONS, &self.db))
            .execute()
            .await
            .map_err(err("create schema_migrations"))?;
        let applied: HashSet<u32> = self
            .client
            .query(&format!(
                "SELECT version FROM {} FINAL",
                self.table("schema_migrations")
            ))
            .fetch_all::<u32>()
            .await
            .map_err(err("read schema_migrations"))?
            .into_iter()
            .collect();
        let mut done = Vec::new();
        for m in schema::MIGRATIONS {
            if applied.contains(&m.version) {
                continue;
            }
            for statement in m.statements {
                self.client
                    .query(&schema::render(statement, &self.db))
                    .execute()
                    .await
                    .map_err(err("migrate"))?;
            }
            self.client
                .query(&format!(
                    "INSERT INTO {} (version, name) VALUES (?, ?)",
                    self.table("schema_migrations")
                ))
                .bind(m.version)
                .bind(m.name)
                .execute()
                .await
                .map_err(err("record migration"))?;
            tracing::info!(
                version = m.version,
                name = m.name,
                "applied ClickHouse migration"
            );
            done.push(m.version);
        }
        Ok(done)
    }

    /// The event ids among `rows` that are already stored completely: present in
    /// `usage_events` *and* in `spend_daily` (an insert interrupted between the table and its
    /// materialized view leaves the first without the second; such an event is written again,
    /// which the `ReplacingMergeTree`s absorb).
    ///
    /// # Errors
    /// [`StoreError`] when a query fails.
    pub async fn stored_events(&self, rows: &[&UsageRow]) -> Result<HashSet<String>, StoreError> {
        let mut in_usage: Vec<&UsageRow> = Vec::new();
        for chunk in rows.chunks(IN_CHUNK) {
            let sessions: Vec<&str> = chunk
                .iter()
                .map(|r| r.session_id.as_str())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let sql = format!(
                "SELECT event_id FROM {} WHERE session_id IN ({}) AND event_id IN ({})",
                self.table("usage_events"),
                placeholders(sessions.len()),
                placeholders(chunk.len()),
            );
            let mut q = self.client.query(&sql);
            for s in &sessions {
                q = q.bind(*s);
            }
            for r in chunk {
                q = q.bind(r.event_id.as_str());
            }
            let found: HashSet<String> = q
                .fetch_all::<String>()
                .await
                .map_err(err("look up stored events"))?
                .into_iter()
                .collect();
            in_usage.extend(chunk.iter().filter(|r| found.contains(&r.event_id)));
        }
        let mut stored = HashSet::new();
        for chunk in in_usage.chunks(IN_CHUNK) {
            let teams: HashSet<&str> = chunk.iter().map(|r| r.team_id.as_str()).collect();
            let keys: HashSet<&str> = chunk.iter().map(|r| r.key_id.as_str()).collect();
            let sql = format!(
                "SELECT event_id FROM {} WHERE team_id IN ({}) AND key_id IN ({}) AND event_id IN ({})",
                self.table("spend_daily"),
                placeholders(teams.len()),
                placeholders(keys.len()),
                placeholders(chunk.len()),
            );
            let mut q = self.client.query(&sql);
            for t in teams {
                q = q.bind(t);
            }
            for k in keys {
                q = q.bind(k);
            }
            for r in chunk {
                q = q.bind(r.event_id.as_str());
            }
            stored.extend(
                q.fetch_all::<String>()
                    .await
                    .map_err(err("look up stored spend rows"))?,
            );
        }
        Ok(stored)
    }

    /// Inserts usage rows in one `INSERT` (atomic in ClickHouse for a batch this size).
    ///
    /// # Errors
    /// [`StoreError`] when the insert fails.
    pub async fn insert_usage(&self, rows: &[&UsageRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert_unescaped::<UsageRow>(&self.table("usage_events"))
            .await
            .map_err(err("insert usage_events"))?;
        for row in rows {
            insert
                .write(*row)
                .await
                .map_err(err("insert usage_events"))?;
        }
        insert.end().await.map_err(err("insert usage_events"))
    }

    /// Totals of the given sessions' usage rows, deduplicated by `FINAL`.
    ///
    /// # Errors
    /// [`StoreError`] when a query fails.
    pub async fn session_totals(
        &self,
        session_ids: &[&str],
    ) -> Result<HashMap<String, SessionTotals>, StoreError> {
        let mut totals = HashMap::new();
        for chunk in session_ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT session_id, count(), countIf(seq > 0), sum(prompt_tokens), \
                 sum(response_tokens), sum(cached_tokens), sum(tool_use_tokens), \
                 sum(thoughts_tokens), sum(total_tokens), sum(input_characters), \
                 sum(output_characters), sum(input_audio_seconds), sum(output_audio_seconds), \
                 sum(input_video_seconds), sum(input_images), toString(sum(input_cost_usd)), \
                 toString(sum(output_cost_usd)), toString(sum(cost_usd)) \
                 FROM {} FINAL WHERE session_id IN ({}) GROUP BY session_id",
                self.table("usage_events"),
                placeholders(chunk.len())
            );
            let mut q = self.client.query(&sql);
            for s in chunk {
                q = q.bind(*s);
            }
            for t in q
                .fetch_all::<SessionTotals>()
                .await
                .map_err(err("sum session usage"))?
            {
                totals.insert(t.session_id.clone(), t);
            }
        }
        Ok(totals)
    }

    /// The highest stored `sessions.version` per session id.
    ///
    /// # Errors
    /// [`StoreError`] when a query fails.
    pub async fn session_versions(
        &self,
        session_ids: &[&str],
    ) -> Result<HashMap<String, u64>, StoreError> {
        let mut versions = HashMap::new();
        for chunk in session_ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT session_id, max(version) FROM {} WHERE session_id IN ({}) GROUP BY session_id",
                self.table("sessions"),
                placeholders(chunk.len())
            );
            let mut q = self.client.query(&sql);
            for s in chunk {
                q = q.bind(*s);
            }
            for v in q
                .fetch_all::<Version>()
                .await
                .map_err(err("read session versions"))?
            {
                versions.insert(v.session_id, v.version);
            }
        }
        Ok(versions)
    }

    /// Inserts session rows.
    ///
    /// # Errors
    /// [`StoreError`] when the insert fails.
    pub async fn insert_sessions(&self, rows: &[SessionRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert_unescaped::<SessionRow>(&self.table("sessions"))
            .await
            .map_err(err("insert sessions"))?;
        for row in rows {
            insert.write(row).await.map_err(err("insert sessions"))?;
        }
        insert.end().await.map_err(err("insert sessions"))
    }

    /// All-time spend per key id (`by = "key_id"`) or team id (`"team_id"`), from
    /// `spend_daily FINAL`. Ids without rows are absent.
    ///
    /// # Errors
    /// [`StoreError`] when a query fails.
    pub async fn spend_totals(
        &self,
        by: SpendBy,
        ids: &[String],
    ) -> Result<HashMap<String, Decimal>, StoreError> {
        let column = match by {
            SpendBy::Key => "key_id",
            SpendBy::Team => "team_id",
        };
        let mut totals = HashMap::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT {column}, toString(sum(cost_usd)) FROM {} FINAL WHERE {column} IN ({}) GROUP BY {column}",
                self.table("spend_daily"),
                placeholders(chunk.len())
            );
            let mut q = self.client.query(&sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for t in q.fetch_all::<Total>().await.map_err(err("sum spend"))? {
                totals.insert(t.id, SessionTotals::money(&t.usd));
            }
        }
        Ok(totals)
    }
}

/// Which spend total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendBy {
    /// Per API key.
    Key,
    /// Per team.
    Team,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_round_trips_at_twelve_places() {
        for s in [
            "0",
            "0.000001234567",
            "12.5",
            "0.0000000000005",
            "123456789.123456789012",
        ] {
            let d = Decimal::from_str(s).unwrap();
            let units = usd(d);
            assert_eq!(from_usd(units), d.round_dp(12).normalize(), "{s}");
        }
        assert_eq!(usd(Decimal::from_str("0.0008").unwrap()), 800_000_000);
    }
}
