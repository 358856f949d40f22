//! The ClickHouse schema as versioned, idempotent migrations (one file per migration, listed
//! in [`MIGRATIONS`]) and their runner, [`Store::migrate`], which applies them at start-up;
//! also the rendering of every statement for `--print-schema` ([`statements`], [`script`]).
//!
//! Every statement is valid on ClickHouse 18.16 (what the tests run) and on current releases:
//! only `String`, `UInt*`, `Float64`, `Decimal(38, 12)`, `Date`, `DateTime('UTC')`,
//! `ReplacingMergeTree`, and `CREATE MATERIALIZED VIEW … TO`. Each statement is itself
//! idempotent (`CREATE … IF NOT EXISTS`, `DROP … IF EXISTS`, an `INSERT … SELECT` into a
//! `ReplacingMergeTree` that writes the same rows again, or an `ALTER TABLE … ADD COLUMN` the
//! runner skips when the column exists, since 18.16 has no `ADD COLUMN IF NOT EXISTS`), and the
//! applied versions are recorded in `schema_migrations`
//! (a `ReplacingMergeTree` on `version`), so running the migrations twice, or from two replicas
//! at once, is harmless.

mod v0001_usage_sessions_spend;
mod v0002_session_leases;
mod v0003_usage_receipts;
mod v0004_spend_totals;
mod v0005_output_video;
mod v0006_session_connections;

use super::{Store, StoreError, err};
use std::collections::HashSet;

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

/// All migrations, in order. Append only: never edit one that has shipped; a new one goes in
/// its own file (`vNNNN_name.rs`) and at the end of this list.
pub(crate) const MIGRATIONS: &[Migration] = &[
    v0001_usage_sessions_spend::MIGRATION,
    v0002_session_leases::MIGRATION,
    v0003_usage_receipts::MIGRATION,
    v0004_spend_totals::MIGRATION,
    v0005_output_video::MIGRATION,
    v0006_session_connections::MIGRATION,
];

/// `sql` with `{db}` replaced by the (validated, unquoted-identifier) database name.
pub(crate) fn render(sql: &str, database: &str) -> String {
    sql.replace("{db}", database)
}

/// The table and column an `ALTER TABLE {db}.t ADD COLUMN c …` statement adds, if it is one.
pub(crate) fn added_column(sql: &str) -> Option<(&str, &str)> {
    let rest = sql.strip_prefix("ALTER TABLE {db}.")?;
    let (table, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("ADD COLUMN ")?;
    let column = rest.split_whitespace().next()?;
    Some((table, column))
}

/// The statement [`Store::migrate`] runs first.
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

impl Store {
    /// Whether `table` of this database has `column` already.
    async fn has_column(&self, table: &str, column: &str) -> Result<bool, StoreError> {
        let n = self
            .client
            .query(
                "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?",
            )
            .bind(self.db.as_str())
            .bind(table)
            .bind(column)
            .fetch_one::<u64>()
            .await
            .map_err(err("read system.columns"))?;
        Ok(n > 0)
    }

    /// Creates the database if needed and applies the migrations not yet recorded in
    /// `schema_migrations`. Returns the versions applied by this call.
    ///
    /// # Errors
    /// [`StoreError`] when a statement fails.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        self.client
            .query(&create_database(&self.db))
            .execute()
            .await
            .map_err(err("create database"))?;
        self.client
            .query(&render(SCHEMA_MIGRATIONS, &self.db))
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
        for m in MIGRATIONS {
            if applied.contains(&m.version) {
                continue;
            }
            for statement in m.statements {
                let added = added_column(statement);
                if let Some((table, column)) = added
                    && self.has_column(table, column).await?
                {
                    continue;
                }
                let done = self
                    .client
                    .query(&render(statement, &self.db))
                    .execute()
                    .await
                    .map_err(err("migrate"));
                match (done, added) {
                    (Ok(()), _) => {}
                    // Another replica added it between our check and our ALTER.
                    (Err(_), Some((table, column))) if self.has_column(table, column).await? => {}
                    (Err(e), _) => return Err(e),
                }
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
                let idempotent = s.starts_with("CREATE TABLE IF NOT EXISTS ")
                    || s.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS ")
                    || s.starts_with("DROP TABLE IF EXISTS ")
                    // Writes rows a ReplacingMergeTree collapses with their copies.
                    || (s.starts_with("INSERT INTO {db}.spend_") && s.contains(" FINAL"))
                    // Skipped by the runner when the column exists.
                    || added_column(s).is_some();
                assert!(idempotent, "not idempotent: {s}");
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
            assert!(
                s.contains("IF NOT EXISTS usage_2")
                    || s.contains("IF EXISTS usage_2")
                    || s.starts_with("INSERT INTO usage_2.")
                    || s.starts_with("ALTER TABLE usage_2."),
                "{s}"
            );
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
    fn added_columns_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE {db}.usage_events ADD COLUMN x UInt64 DEFAULT 0"),
            Some(("usage_events", "x"))
        );
        assert_eq!(
            added_column("CREATE TABLE IF NOT EXISTS {db}.t (x UInt8)"),
            None
        );
        assert_eq!(added_column("ALTER TABLE {db}.t DROP COLUMN x"), None);
    }

    #[test]
    fn script_separates_statements_with_semicolon_and_blank_line() {
        let text = script("livegate");
        assert!(text.starts_with("CREATE DATABASE IF NOT EXISTS livegate;\n\nCREATE TABLE"));
        assert!(text.ends_with("AFTER upstream_connections;\n"), "{text}");
        let parts: Vec<&str> = text
            .split(";\n\n")
            .map(|s| s.trim_end().trim_end_matches(';'))
            .collect();
        assert_eq!(parts, statements("livegate"));
    }
}
