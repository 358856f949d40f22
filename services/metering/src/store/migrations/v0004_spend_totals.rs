//! Migration 4: the per-day spend totals budgets read, and the session count in `spend_daily`
//! moved to the session's start day.
//!
//! - `spend_totals`: one row per (key, day, team) with that day's cost, recomputed by metering
//!   from `spend_daily FINAL` for the key-days a batch touched (`crate::spend`); ordered by key,
//!   so a key's all-time spend reads one row per day.
//! - `spend_totals_by_team`: the same rows ordered by team and day (fed by
//!   `spend_totals_by_team_mv`), so a team-day's total reads that day's key rows of the team.
//! - `spend_team_days`: one row per (team, day), recomputed from `spend_totals_by_team` for the
//!   team-days a batch touched; a team's all-time spend reads one row per day.
//!
//! A budget refresh so reads the touched key-days' events and per-day rows, never all history.
//! Every table is `ReplacingMergeTree(version)` with `version` = the number of `spend_daily` rows
//! the figure sums: rows only ever join a day, so the row computed from the most rows is the
//! newest, whichever replica wrote it and in whatever order the writes landed. The backfill
//! `INSERT … SELECT`s compute the same rows from the history already stored; run twice they
//! write the same rows again, which the engine collapses (read with `FINAL`).
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
        "CREATE TABLE IF NOT EXISTS {db}.spend_totals_by_team (
    team_id String,
    day Date,
    key_id String,
    cost_usd Decimal(38, 12),
    events UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYear(day)
ORDER BY (team_id, day, key_id)",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spend_totals_by_team_mv TO {db}.spend_totals_by_team AS
SELECT team_id, day, key_id, cost_usd, events, version
FROM {db}.spend_totals",
        "CREATE TABLE IF NOT EXISTS {db}.spend_team_days (
    team_id String,
    day Date,
    cost_usd Decimal(38, 12),
    events UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYear(day)
ORDER BY (team_id, day)",
        "INSERT INTO {db}.spend_totals (key_id, day, team_id, cost_usd, events, version)
SELECT key_id, day, team_id, sum(cost_usd), count(), count()
FROM {db}.spend_daily FINAL
GROUP BY key_id, day, team_id",
        "INSERT INTO {db}.spend_team_days (team_id, day, cost_usd, events, version)
SELECT team_id, day, sum(cost_usd), sum(events), sum(events)
FROM {db}.spend_totals_by_team FINAL
GROUP BY team_id, day",
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
