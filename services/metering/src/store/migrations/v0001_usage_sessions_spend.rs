//! Migration 1: the tables `usage_events`, `sessions` and `spend_daily`, and the two
//! materialized views that feed `spend_daily` (see the `store` module for what each holds).

use super::Migration;

/// Shipped: never edit (add a migration instead).
pub(super) const MIGRATION: Migration = Migration {
    version: 1,
    name: "usage_events, sessions, spend_daily",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {db}.usage_events (
    event_id String,
    session_id String,
    seq UInt64,
    ts DateTime('UTC'),
    key_id String,
    team_id String,
    user_id String,
    project String,
    location String,
    model String,
    gateway_id String,
    prompt_tokens UInt64,
    response_tokens UInt64,
    cached_tokens UInt64,
    tool_use_tokens UInt64,
    thoughts_tokens UInt64,
    total_tokens UInt64,
    input_text_tokens UInt64,
    input_audio_tokens UInt64,
    input_video_tokens UInt64,
    input_image_tokens UInt64,
    output_text_tokens UInt64,
    output_audio_tokens UInt64,
    input_characters UInt64,
    input_audio_seconds Float64,
    input_video_seconds Float64,
    input_video_frames UInt64,
    input_images UInt64,
    output_characters UInt64,
    output_audio_seconds Float64,
    input_text_cost_usd Decimal(38, 12),
    input_audio_cost_usd Decimal(38, 12),
    input_image_cost_usd Decimal(38, 12),
    input_video_cost_usd Decimal(38, 12),
    cached_cost_usd Decimal(38, 12),
    tool_use_cost_usd Decimal(38, 12),
    output_text_cost_usd Decimal(38, 12),
    output_audio_cost_usd Decimal(38, 12),
    thoughts_cost_usd Decimal(38, 12),
    input_cost_usd Decimal(38, 12),
    output_cost_usd Decimal(38, 12),
    cost_usd Decimal(38, 12),
    priced UInt8,
    pricing_entry String,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (session_id, event_id)",
        "CREATE TABLE IF NOT EXISTS {db}.sessions (
    session_id String,
    key_id String,
    team_id String,
    user_id String,
    project String,
    location String,
    model String,
    gateway_id String,
    started_at DateTime('UTC'),
    ended_at DateTime('UTC'),
    duration_s Float64,
    close_code UInt16,
    close_reason String,
    closed_by String,
    frames_in UInt64,
    frames_out UInt64,
    bytes_in UInt64,
    bytes_out UInt64,
    reports UInt64,
    events_counted UInt64,
    prompt_tokens UInt64,
    response_tokens UInt64,
    cached_tokens UInt64,
    tool_use_tokens UInt64,
    thoughts_tokens UInt64,
    total_tokens UInt64,
    input_characters UInt64,
    output_characters UInt64,
    input_audio_seconds Float64,
    output_audio_seconds Float64,
    input_video_seconds Float64,
    input_images UInt64,
    input_cost_usd Decimal(38, 12),
    output_cost_usd Decimal(38, 12),
    cost_usd Decimal(38, 12),
    version UInt64,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ended_at)
ORDER BY session_id",
        "CREATE TABLE IF NOT EXISTS {db}.spend_daily (
    day Date,
    key_id String,
    team_id String,
    model String,
    event_id String,
    sessions UInt64,
    prompt_tokens UInt64,
    response_tokens UInt64,
    input_cost_usd Decimal(38, 12),
    output_cost_usd Decimal(38, 12),
    cost_usd Decimal(38, 12)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (team_id, key_id, day, model, event_id)",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spend_daily_usage_mv TO {db}.spend_daily AS
SELECT
    toDate(ts) AS day,
    key_id,
    team_id,
    model,
    event_id,
    toUInt64(0) AS sessions,
    prompt_tokens,
    response_tokens,
    input_cost_usd,
    output_cost_usd,
    cost_usd
FROM {db}.usage_events",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spend_daily_sessions_mv TO {db}.spend_daily AS
SELECT
    toDate(ended_at) AS day,
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
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_columns_exist() {
        let ddl = MIGRATION.statements.join("\n");
        let table = |name: &str| -> String {
            let start = ddl
                .find(&format!("{{db}}.{name} ("))
                .unwrap_or_else(|| panic!("{name}"));
            let end = ddl[start..].find(") ENGINE").unwrap() + start;
            ddl[start..end].to_string()
        };
        let cols = |t: &str| -> Vec<String> {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        };
        for (t, wanted) in [
            (
                "usage_events",
                "event_id session_id ts key_id team_id user_id project location model prompt_tokens \
                 response_tokens cached_tokens tool_use_tokens thoughts_tokens input_text_tokens \
                 input_audio_tokens input_video_tokens input_image_tokens output_text_tokens \
                 output_audio_tokens input_characters input_audio_seconds input_video_seconds \
                 input_images output_characters output_audio_seconds input_cost_usd \
                 output_cost_usd cost_usd priced",
            ),
            (
                "sessions",
                "session_id key_id team_id user_id project location model started_at ended_at \
                 duration_s close_code closed_by frames_in frames_out bytes_in bytes_out \
                 prompt_tokens response_tokens input_cost_usd output_cost_usd cost_usd",
            ),
            (
                "spend_daily",
                "day key_id team_id model sessions prompt_tokens response_tokens cost_usd",
            ),
        ] {
            let have = cols(&table(t));
            for w in wanted.split_whitespace() {
                assert!(have.iter().any(|h| h == w), "{t}.{w} missing");
            }
        }
    }
}
