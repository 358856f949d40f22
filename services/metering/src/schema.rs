//! ClickHouse schema and its versioned, idempotent migrations, applied at start-up.
//!
//! Every statement is valid on ClickHouse 18.16 (what the tests run) and on current releases:
//! only `String`, `UInt*`, `Float64`, `Decimal(38, 12)`, `Date`, `DateTime('UTC')`,
//! `ReplacingMergeTree`, and `CREATE MATERIALIZED VIEW … TO`. Each statement is itself
//! idempotent (`IF NOT EXISTS`), and the applied versions are recorded in `schema_migrations`
//! (a `ReplacingMergeTree` on `version`), so running the migrations twice, or from two replicas
//! at once, is harmless.
//!
//! # Tables
//! - `usage_events`: one row per `UsageReport` (`seq` ≥ 1), plus one row `{session_id}:end`
//!   (`seq` = 0) for the usage a `SessionEnded` carries after the last report, when there is
//!   any. `ReplacingMergeTree` ordered by `(session_id, event_id)`, partitioned by month of `ts`
//!   (the event's own time, so a redelivered copy lands in the same partition).
//! - `sessions`: one row per ended session with its totals, `ReplacingMergeTree(version)`
//!   ordered by `session_id`; `version` grows with the number of usage rows the totals include.
//! - `spend_daily`: per day × key × team × model, fed by two materialized views (one row per
//!   usage event, and one per session with `sessions = 1`), `ReplacingMergeTree` ordered by
//!   `(team_id, key_id, day, model, event_id)`.
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

/// One migration: a version, a name, and statements with `{db}` standing for the database.
pub(crate) struct Migration {
    pub(crate) version: u32,
    pub(crate) name: &'static str,
    pub(crate) statements: &'static [&'static str],
}

/// The bookkeeping table, created before anything else.
pub(crate) const SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree() ORDER BY version";

/// All migrations, in order. Append only: never edit one that has shipped.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
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
}];

/// `sql` with `{db}` replaced by the (validated, unquoted-identifier) database name.
pub(crate) fn render(sql: &str, database: &str) -> String {
    sql.replace("{db}", database)
}

/// The statement `Store::migrate` runs first (kept identical to the one in `writer.rs`; the
/// test `create_database_matches_what_migrate_runs` holds them together).
pub(crate) fn create_database(database: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS {database}")
}

/// Every statement `Store::migrate` may run to create the schema, in order and rendered for
/// `database`: the database, `schema_migrations`, then each migration's statements. (Not the
/// `INSERT`s recording applied versions: metering adds those itself, and the statements are
/// idempotent, so a schema applied by hand is simply recorded at metering's next start.)
pub(crate) fn statements(database: &str) -> Vec<String> {
    let mut out = vec![
        create_database(database),
        render(SCHEMA_MIGRATIONS, database),
    ];
    for m in MIGRATIONS {
        out.extend(m.statements.iter().map(|s| render(s, database)));
    }
    out
}

/// [`statements`] as one script: each statement followed by `;`, statements separated by a
/// blank line, ending with a newline (what `clickhouse-client --multiquery` reads).
pub(crate) fn script(database: &str) -> String {
    let mut out = statements(database).join(";\n\n");
    out.push_str(";\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_statements_are_idempotent() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "migration {} out of order", m.name);
            last = m.version;
            for s in m.statements {
                assert!(s.contains("IF NOT EXISTS"), "not idempotent: {s}");
            }
        }
    }

    #[test]
    fn statements_are_rendered_in_migration_order() {
        let got = statements("usage_2");
        let wanted = 2 + MIGRATIONS.iter().map(|m| m.statements.len()).sum::<usize>();
        assert_eq!(got.len(), wanted);
        assert_eq!(got[0], "CREATE DATABASE IF NOT EXISTS usage_2");
        assert!(
            got[1].starts_with("CREATE TABLE IF NOT EXISTS usage_2.schema_migrations ("),
            "{}",
            got[1]
        );
        let from_migrations: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|m| m.statements.iter().map(|s| s.replace("{db}", "usage_2")))
            .collect();
        assert_eq!(got[2..], from_migrations[..]);
        for s in &got {
            assert!(!s.contains("{db}"), "unrendered: {s}");
            assert!(s.contains("IF NOT EXISTS usage_2"), "{s}");
            assert!(!s.trim_end().ends_with(';'), "{s}");
            // The script splits on `;` + blank line: no statement may hold either.
            assert!(!s.contains(';') && !s.contains("\n\n"), "{s}");
        }
        // The views read and write the rendered database only.
        assert!(got.iter().any(
            |s| s.contains("spend_daily_usage_mv TO usage_2.spend_daily AS")
                && s.contains("FROM usage_2.usage_events")
        ));
    }

    #[test]
    fn script_separates_statements_with_semicolon_and_blank_line() {
        let text = script("livegate");
        assert!(text.starts_with("CREATE DATABASE IF NOT EXISTS livegate;\n\nCREATE TABLE"));
        assert!(text.ends_with("FROM livegate.sessions;\n"), "{text}");
        let parts: Vec<&str> = text
            .split(";\n\n")
            .map(|s| s.trim_end().trim_end_matches(';'))
            .collect();
        assert_eq!(parts, statements("livegate"));
    }

    #[test]
    fn the_issue_columns_exist() {
        let ddl = MIGRATIONS[0].statements.join("\n");
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
