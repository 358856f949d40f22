//! Migration 5: VIDEO output (Gemini 3.8 Live avatars) in `usage_events` columns of its own,
//! `output_video_tokens` and `output_video_cost_usd`, instead of folded into the `output_text_*`
//! columns; `usage_receipts.output_video_tokens` (migration 3) keeps holding the same count.
//!
//! ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`: the runner skips an `ADD COLUMN` whose
//! column already exists (see [`super::added_column`]), which keeps these statements
//! idempotent. Rows written before this migration read 0 in both (the defaults).

use super::Migration;

/// Shipped: never edit (add a migration instead).
pub(super) const MIGRATION: Migration = Migration {
    version: 5,
    name: "usage_events output video columns",
    statements: &[
        "ALTER TABLE {db}.usage_events ADD COLUMN output_video_tokens UInt64 DEFAULT 0 AFTER output_audio_tokens",
        "ALTER TABLE {db}.usage_events ADD COLUMN output_video_cost_usd Decimal(38, 12) DEFAULT toDecimal128(0, 12) AFTER output_audio_cost_usd",
    ],
};
