//! Migration 3: `usage_receipts`, one row per usage row, with what a bill is reconciled
//! against: the upstream's `usageMetadata` as sent, the traffic type (provisioned throughput
//! is prepaid and recorded at cost 0), the tokens the money columns fold together (prompt
//! tokens without a modality, VIDEO output tokens), and the pricing table that priced it.
//!
//! A table of its own, not columns added to `usage_events`: ClickHouse 18.16 has no
//! `ADD COLUMN IF NOT EXISTS`, and every statement here must be safe to run twice. Metering
//! writes a row's receipt before the row itself, so every stored usage row has its receipt.

use super::Migration;

/// Shipped: never edit (add a migration instead).
pub(super) const MIGRATION: Migration = Migration {
    version: 3,
    name: "usage_receipts",
    statements: &["CREATE TABLE IF NOT EXISTS {db}.usage_receipts (
    event_id String,
    session_id String,
    ts DateTime('UTC'),
    key_id String,
    team_id String,
    model String,
    traffic_type String,
    prepaid UInt8,
    input_residual_tokens UInt64,
    output_video_tokens UInt64,
    usage_json String,
    pricing_entry String,
    pricing_version String,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (session_id, event_id)"],
};
