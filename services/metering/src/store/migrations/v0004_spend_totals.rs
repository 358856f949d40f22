//! Migration 4: `spend_totals`, the running spend per key, team and day that budgets read, and
//! the session count in `spend_daily` moved to the session's start day.
//!
//! `spend_totals` holds one row per (key, day, team) with that day's cost, recomputed by
//! metering from `spend_daily FINAL` for the key-days a batch touched (`crate::spend`), so a
//! budget refresh reads the touched key-days' events and the keys' per-day rows, never all
//! history. `ReplacingMergeTree(version)` with `version` = the number of `spend_daily` rows the
//! figure sums: rows only ever join a key-day, so the row computed from the most rows is the
//! newest, whichever replica wrote it and in whatever order the writes landed. The backfill
//! `INSERT … SELECT` computes the same rows from the history already stored; run twice it
//! writes the same rows again, which the engine collapses (read with `FINAL`).
//!
//! Sessions were counted in `spend_daily` on the day they ended. A session closed as lost by
//! the lease reconciler and ended again by its gateway's late `SessionEnded` on another day then
//! counted twice (the two rows differ in `day`). Both rows share the start time, so counting
//! on the start day lets the engine collapse them. The new view is created before the old one
//! is dropped: a session inserted meanwhile is counted, at worst twice on the same day, which
//! the engine collapses.

use super::Migration;

/// Shipped: never edit (add a migration instead).
pub(super) const MIGRATION: Migration = Migration {
    version: 4,
    name: "spend_totals, sessions counted on their start day",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {db}.spend_totals (
    key_id String,
    day Date,
    team_id String,
    cost_usd Decimal(38, 12),
    events UInt64,
    version UInt64,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYear(day)
ORDER BY (key_id, day, team_id)",
        "INSERT INTO {db}.spend_totals (key_id, day, team_id, cost_usd, events, version)
SELECT key_id, day, team_id, sum(cost_usd), count(), count()
FROM {db}.spend_daily FINAL
GROUP BY key_id, day, team_id",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spend_daily_sessions_by_start_mv TO {db}.spend_daily AS
SELECT
    toDate(started_at) AS day,
    key_id,
    team_id,
    model,
    concat(session_id, ':session') AS event_id,
    toUInt64(1) AS sessions,
    toUInt64(0) AS prompt_tokens,
    toUInt64(0) AS response_tokens,
    toDecimal128(0, 12) AS input_cost_usd,
    toDecimal128(0, 12) AS output_cost_usd,
    toDecimal128(0, 12) AS cost_usd
FROM {db}.sessions",
        "DROP TABLE IF EXISTS {db}.spend_daily_sessions_mv",
    ],
};
