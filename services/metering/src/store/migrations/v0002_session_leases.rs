//! Migration 2: `session_starts`, one row per `SessionStarted` with the gateway process
//! (`gateway_instance`) that serves it, so every metering replica can see which sessions are
//! open (a start without a `sessions` row) and whose lease they hang on (see `crate::leases`).

use super::Migration;

/// Shipped: never edit (add a migration instead).
pub(super) const MIGRATION: Migration = Migration {
    version: 2,
    name: "session_starts",
    statements: &["CREATE TABLE IF NOT EXISTS {db}.session_starts (
    session_id String,
    key_id String,
    team_id String,
    user_id String,
    project String,
    location String,
    model String,
    gateway_id String,
    gateway_instance String,
    started_at DateTime('UTC'),
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(started_at)
ORDER BY session_id"],
};
