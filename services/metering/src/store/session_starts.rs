//! Open sessions: `session_starts` rows (one per `SessionStarted`, [`Store::insert_session_starts`])
//! and the starts that have no `sessions` row yet ([`Store::open_sessions`]), which the lease
//! reconciler (`crate::leases`) closes when their gateway process is gone; and the recent
//! `sessions` rows that may be short ([`Store::sessions_to_refresh`]), which it completes.

use super::{SessionRow, Store, StoreError, err};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// Sessions older than this are not looked at by [`Store::open_sessions`]: a Live session
/// lasts minutes to hours, and the bound keeps the scan to the newest partitions.
pub(crate) const OPEN_SESSION_HORIZON_HOURS: u32 = 48;
/// Most open sessions read per reconciler pass (the rest wait for the next pass).
const OPEN_SESSIONS_LIMIT: u32 = 10_000;
/// Session rows that may still grow (closed as lost, or written short) and ended longer ago
/// than this are no longer refreshed by [`Store::sessions_to_refresh`]' caller: reports queued
/// behind a metering backlog, a stuck replica or a bus outage land well within it.
pub(crate) const REFRESH_WINDOW_SECS: u32 = 3600;

/// One `session_starts` row (every column but `inserted_at`).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct SessionStartRow {
    pub session_id: String,
    pub key_id: String,
    pub team_id: String,
    pub user_id: String,
    pub project: String,
    pub location: String,
    pub model: String,
    pub gateway_id: String,
    pub gateway_instance: String,
    /// Unix seconds.
    pub started_at: u32,
}

impl Store {
    /// Inserts session starts (a redelivered copy is absorbed by the `ReplacingMergeTree`).
    ///
    /// # Errors
    /// [`StoreError`] when the insert fails.
    pub async fn insert_session_starts(&self, rows: &[SessionStartRow]) -> Result<(), StoreError> {
        let rows: Vec<&SessionStartRow> = rows.iter().collect();
        self.insert_rows("session_starts", "insert session_starts", &rows)
            .await
    }

    /// Sessions started within [`OPEN_SESSION_HORIZON_HOURS`] by a gateway that has leases
    /// (non-empty `gateway_instance`) and without a `sessions` row.
    ///
    /// # Errors
    /// [`StoreError`] when the query fails.
    pub async fn open_sessions(&self) -> Result<Vec<SessionStartRow>, StoreError> {
        let sql = format!(
            "SELECT session_id, key_id, team_id, user_id, project, location, model, gateway_id, \
             gateway_instance, started_at FROM {starts} FINAL \
             WHERE started_at >= now() - {h} * 3600 AND gateway_instance != '' \
             AND session_id NOT IN (SELECT session_id FROM {sessions} \
             WHERE ended_at >= now() - {h} * 3600 - 86400) \
             LIMIT {OPEN_SESSIONS_LIMIT}",
            starts = self.table("session_starts"),
            sessions = self.table("sessions"),
            h = OPEN_SESSION_HORIZON_HOURS,
        );
        self.client
            .query(&sql)
            .fetch_all::<SessionStartRow>()
            .await
            .map_err(err("read open sessions"))
    }

    /// The `sessions` rows whose totals may be short, as they read now (`FINAL`), with
    /// `ended_at` within [`REFRESH_WINDOW_SECS`]: those closed as lost (by the lease
    /// reconciler; a real end that replaced one is not returned) and those written without
    /// every report the gateway published (`reports_stored < reports`, migration 7). A complete
    /// row never qualifies, so the answer stays small; at most [`OPEN_SESSIONS_LIMIT`] rows.
    ///
    /// # Errors
    /// [`StoreError`] when the query fails.
    pub async fn sessions_to_refresh(&self) -> Result<Vec<SessionRow>, StoreError> {
        let sql = format!(
            "SELECT ?fields FROM {} FINAL WHERE ended_at >= now() - {REFRESH_WINDOW_SECS} \
             AND (closed_by = 'lost' OR reports_stored < reports) LIMIT {OPEN_SESSIONS_LIMIT}",
            self.table("sessions"),
        );
        self.client
            .query(&sql)
            .fetch_all::<SessionRow>()
            .await
            .map_err(err("read sessions to refresh"))
    }
}
