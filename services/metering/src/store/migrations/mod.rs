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
//!
//! # Cluster mode
//! With `CLICKHOUSE_CLUSTER=name` ([`Layout::Cluster`]) every statement of every migration goes
//! through one transformation, [`clustered`], so a migration is written once, for a single
//! server, and never knows about clusters:
//!
//! - `CREATE DATABASE` and every `CREATE …` gain `ON CLUSTER name` (run on every host; each
//!   is still `IF NOT EXISTS`).
//! - A table `T` with a `*MergeTree` engine becomes `T_local` with the replicated engine
//!   (`ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/<db>/T_local', '{replica}', …)`,
//!   the usual macros from each server's config), plus `T` itself as a `Distributed` table
//!   over `T_local`, sharded by a hash of the first `ORDER BY` column. Every reader and writer
//!   keeps using `T`. Rows with the same sorting key (the same event id: every table orders
//!   by its dedupe key) always land on the same shard, where `ReplacingMergeTree` merges
//!   copies away, so `FINAL` over `T` stays exact.
//! - A materialized view reads and writes the `_local` tables: it fires on the replica that
//!   received the insert, and its output replicates like any insert.
//! - `ALTER TABLE T ADD COLUMN` changes `T_local` on every host, then drops `T` and creates it
//!   again over the new `T_local` (ClickHouse will not `ALTER … ON CLUSTER` a `Distributed`
//!   table when shards replicate internally; `T` holds no rows of its own, since metering
//!   inserts with `insert_distributed_sync = 1`). `DROP TABLE` gains `ON CLUSTER`. A backfill
//!   `INSERT … SELECT` runs once, through the `Distributed` tables.
//!
//! Works on ClickHouse 18.16 (replicated engines with explicit ZooKeeper paths, `ON CLUSTER`,
//! `Distributed`, `FINAL` through `Distributed`) and current releases.

mod v0001_usage_sessions_spend;
mod v0002_session_leases;
mod v0003_usage_receipts;
mod v0004_spend_totals;
mod v0005_output_video;
mod v0006_session_connections;
mod v0007_session_reports_stored;

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
    v0007_session_reports_stored::MIGRATION,
];

/// One server, or a cluster (`CLICKHOUSE_CLUSTER`): how each migration statement is rendered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Layout {
    /// One server: the statements as written.
    #[default]
    Single,
    /// The named cluster of `remote_servers` (a plain identifier): see the module docs.
    Cluster(String),
}

/// Suffix of the replicated table behind each `Distributed` one in cluster mode.
pub(crate) const LOCAL_SUFFIX: &str = "_local";

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

/// `sql` (one statement, `{db}` not yet rendered) as the statements that make it on `layout`,
/// rendered for `database`.
pub(crate) fn render_for(sql: &str, database: &str, layout: &Layout) -> Vec<String> {
    match layout {
        Layout::Single => vec![render(sql, database)],
        Layout::Cluster(cluster) => clustered(sql, cluster, &tables())
            .iter()
            .map(|s| render(s, database))
            .collect(),
    }
}

/// The statement [`Store::migrate`] runs first.
pub(crate) fn create_database(database: &str, layout: &Layout) -> String {
    match layout {
        Layout::Single => format!("CREATE DATABASE IF NOT EXISTS {database}"),
        Layout::Cluster(c) => format!("CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {c}"),
    }
}

/// Every table the migrations create (`schema_migrations` included), by the name readers use.
fn tables() -> Vec<String> {
    std::iter::once(SCHEMA_MIGRATIONS)
        .chain(MIGRATIONS.iter().flat_map(|m| m.statements.iter().copied()))
        .filter_map(|s| created(s).filter(|(kind, _)| *kind == "TABLE"))
        .map(|(_, name)| name.to_string())
        .collect()
}

/// The cluster-mode `CREATE` of the `Distributed` table `table`, from the migration that
/// created it (`None` for a table no migration creates as a `MergeTree`).
fn distributed(table: &str, cluster: &str) -> Option<String> {
    let create = std::iter::once(SCHEMA_MIGRATIONS)
        .chain(MIGRATIONS.iter().flat_map(|m| m.statements.iter().copied()))
        .find(|s| created(s) == Some(("TABLE", table)))?;
    let mut both = clustered(create, cluster, &[]);
    (both.len() == 2).then(|| both.swap_remove(1))
}

/// `("TABLE" | "VIEW" | "MATERIALIZED VIEW", name)` of a `CREATE … IF NOT EXISTS {db}.name`.
fn created(sql: &str) -> Option<(&'static str, &str)> {
    let sql = sql.trim_start();
    let (kind, rest) = [
        ("TABLE", "CREATE TABLE IF NOT EXISTS {db}."),
        (
            "MATERIALIZED VIEW",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.",
        ),
        ("VIEW", "CREATE VIEW IF NOT EXISTS {db}."),
    ]
    .into_iter()
    .find_map(|(kind, prefix)| sql.strip_prefix(prefix).map(|rest| (kind, rest)))?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some((kind, &rest[..end]))
}

/// The cluster-mode form of one statement (`{db}` not yet rendered): see the module docs.
/// `tables` are the names whose `_local` twins a materialized view must use. Statements that
/// create nothing (the backfill INSERTs) pass unchanged: they run once, through the
/// Distributed tables.
pub(crate) fn clustered(sql: &str, cluster: &str, tables: &[String]) -> Vec<String> {
    // Dropped on every host, like it was created.
    if sql.starts_with("DROP TABLE IF EXISTS {db}.") {
        return vec![format!("{sql} ON CLUSTER {cluster}")];
    }
    // A column goes into the replicated local table. The Distributed table over it cannot be
    // altered `ON CLUSTER` (ClickHouse refuses an ALTER of a table that is not replicated on a
    // shard that replicates internally: "Table T isn't replicated, but shard #1 is replicated
    // according to its cluster definition"), so it is dropped and created again from the local
    // table's new structure. It holds no rows of its own: metering inserts with
    // `insert_distributed_sync = 1`.
    if let Some((table, _)) = added_column(sql) {
        let tail = &sql["ALTER TABLE {db}.".len() + table.len()..];
        return match distributed(table, cluster).filter(|_| tables.iter().any(|t| t == table)) {
            Some(create) => vec![
                format!("ALTER TABLE {{db}}.{table}{LOCAL_SUFFIX} ON CLUSTER {cluster}{tail}"),
                format!("DROP TABLE IF EXISTS {{db}}.{table} ON CLUSTER {cluster}"),
                create,
            ],
            None => vec![format!(
                "ALTER TABLE {{db}}.{table} ON CLUSTER {cluster}{tail}"
            )],
        };
    }
    let Some((kind, name)) = created(sql) else {
        return vec![sql.to_string()];
    };
    let head = sql.trim_start();
    // Everything after `{db}.name`.
    let Some(at) = head.find(&format!("{{db}}.{name}")) else {
        return vec![sql.to_string()];
    };
    let after = &head[at + "{db}.".len() + name.len()..];
    let create = &head[..at];
    match kind {
        "TABLE" => match replicated(after, name) {
            Some((body, sharding)) => {
                let local = format!("{name}{LOCAL_SUFFIX}");
                vec![
                    format!("{create}{{db}}.{local} ON CLUSTER {cluster}{body}"),
                    format!(
                        "{create}{{db}}.{name} ON CLUSTER {cluster} AS {{db}}.{local} \
                         ENGINE = Distributed({cluster}, {{db}}, {local}, cityHash64({sharding}))"
                    ),
                ]
            }
            // Not a MergeTree (nothing such today): the same table on every host.
            None => vec![format!("{create}{{db}}.{name} ON CLUSTER {cluster}{after}")],
        },
        "MATERIALIZED VIEW" => vec![format!(
            "{create}{{db}}.{name} ON CLUSTER {cluster}{}",
            to_local(after, tables)
        )],
        _ => vec![format!("{create}{{db}}.{name} ON CLUSTER {cluster}{after}")],
    }
}

/// The rest of a `CREATE TABLE` (columns, engine, keys) with its `*MergeTree` engine made
/// replicated, and the sharding expression (the first `ORDER BY` element). `None` when the
/// engine is not a `MergeTree` or there is no `ORDER BY`.
fn replicated(rest: &str, name: &str) -> Option<(String, String)> {
    let engine_at = rest.find("ENGINE = ")? + "ENGINE = ".len();
    let engine_len = rest[engine_at..]
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len() - engine_at);
    let engine = &rest[engine_at..engine_at + engine_len];
    if !engine.ends_with("MergeTree") || engine.starts_with("Replicated") {
        return None;
    }
    let after_engine = &rest[engine_at + engine_len..];
    // `ReplacingMergeTree(version)`, `ReplacingMergeTree()` or a bare `ReplacingMergeTree`.
    let (args, tail) = match after_engine.strip_prefix('(') {
        Some(a) => {
            let close = a.find(')')?;
            (a[..close].trim(), &a[close + 1..])
        }
        None => ("", after_engine),
    };
    let path = format!("'/clickhouse/tables/{{shard}}/{{db}}/{name}{LOCAL_SUFFIX}', '{{replica}}'");
    let params = if args.is_empty() {
        path
    } else {
        format!("{path}, {args}")
    };
    let body = format!("{}Replicated{engine}({params}){tail}", &rest[..engine_at]);
    let order = tail.find("ORDER BY ")? + "ORDER BY ".len();
    let key = tail[order..].trim_start();
    let first = match key.strip_prefix('(') {
        Some(inner) => first_element(inner),
        None => key
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    (!first.is_empty()).then_some((body, first))
}

/// The first top-level comma-separated element of `s` (which follows an opening parenthesis).
fn first_element(s: &str) -> String {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return s[..i].trim().to_string(),
            ')' => depth -= 1,
            ',' if depth == 0 => return s[..i].trim().to_string(),
            _ => {}
        }
    }
    s.trim().to_string()
}

/// `sql` with every `{db}.T` naming one of `tables` turned into `{db}.T_local`.
fn to_local(sql: &str, tables: &[String]) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    while let Some(at) = rest.find("{db}.") {
        let (before, from) = rest.split_at(at + "{db}.".len());
        out.push_str(before);
        let end = from
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(from.len());
        let ident = &from[..end];
        out.push_str(ident);
        if tables.iter().any(|t| t == ident) {
            out.push_str(LOCAL_SUFFIX);
        }
        rest = &from[end..];
    }
    out.push_str(rest);
    out
}

/// Every statement `Store::migrate` may run to create the schema, in order and rendered for
/// `database`: the database, `schema_migrations`, then each migration's statements. (Not the
/// `INSERT`s recording applied versions: metering adds those itself, and the statements are
/// idempotent, so a schema applied by hand is simply recorded at metering's next start.)
pub(crate) fn statements(database: &str) -> Vec<String> {
    statements_for(database, &Layout::Single)
}

/// [`statements`] for `layout`.
pub(crate) fn statements_for(database: &str, layout: &Layout) -> Vec<String> {
    let mut out = vec![create_database(database, layout)];
    out.extend(render_for(SCHEMA_MIGRATIONS, database, layout));
    for m in MIGRATIONS {
        for s in m.statements {
            out.extend(render_for(s, database, layout));
        }
    }
    out
}

/// [`statements`] as one script: each statement followed by `;`, statements separated by a
/// blank line, ending with a newline (what `clickhouse-client --multiquery` reads).
pub(crate) fn script(database: &str) -> String {
    script_for(database, &Layout::Single)
}

/// [`script`] for `layout`.
pub(crate) fn script_for(database: &str, layout: &Layout) -> String {
    let mut out = statements_for(database, layout).join(";\n\n");
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
        // DDL answers uncompressed: ClickHouse 18.16 aborts the HTTP response of an
        // `ON CLUSTER` statement (its per-host status table) when asked to compress it.
        let ddl = self
            .client
            .clone()
            .with_compression(clickhouse::Compression::None);
        ddl.query(&create_database(&self.db, &self.layout))
            .execute()
            .await
            .map_err(err("create database"))?;
        for statement in render_for(SCHEMA_MIGRATIONS, &self.db, &self.layout) {
            ddl.query(&statement)
                .execute()
                .await
                .map_err(err("create schema_migrations"))?;
        }
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
                // The table readers use gets the column last (in cluster mode its Distributed
                // table is created again after the local one changed): if it has it, the whole
                // statement was applied.
                if let Some((table, column)) = added
                    && self.has_column(table, column).await?
                {
                    continue;
                }
                for rendered in render_for(statement, &self.db, &self.layout) {
                    // The table this ALTER changes (`T` or, in cluster mode, `T_local`).
                    let altered = added.filter(|_| rendered.starts_with("ALTER TABLE ")).map(
                        |(table, column)| {
                            let local = format!("{table}{LOCAL_SUFFIX}");
                            let on_local =
                                rendered.starts_with(&format!("ALTER TABLE {}.{local} ", self.db));
                            (if on_local { local } else { table.to_string() }, column)
                        },
                    );
                    if let Some((table, column)) = &altered
                        && self.has_column(table, column).await?
                    {
                        continue;
                    }
                    let done = ddl.query(&rendered).execute().await.map_err(err("migrate"));
                    match (done, &altered) {
                        (Ok(()), _) => {}
                        // Another replica added it between our check and our ALTER.
                        (Err(_), Some((table, column)))
                            if self.has_column(table, column).await? => {}
                        (Err(e), _) => return Err(e),
                    }
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
        assert!(text.ends_with("AFTER reports;\n"), "{text}");
        let parts: Vec<&str> = text
            .split(";\n\n")
            .map(|s| s.trim_end().trim_end_matches(';'))
            .collect();
        assert_eq!(parts, statements("livegate"));
    }

    fn cluster() -> Layout {
        Layout::Cluster("lgc".to_string())
    }

    #[test]
    fn cluster_mode_replicates_every_table_behind_a_distributed_one() {
        let got = statements_for("db1", &cluster());
        assert_eq!(got[0], "CREATE DATABASE IF NOT EXISTS db1 ON CLUSTER lgc");
        for table in tables() {
            let local = got
                .iter()
                .find(|s| {
                    s.starts_with(&format!(
                        "CREATE TABLE IF NOT EXISTS db1.{table}_local ON CLUSTER lgc ("
                    ))
                })
                .unwrap_or_else(|| panic!("no local table for {table}"));
            assert!(
                local.contains(&format!(
                    "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/db1/{table}_local', '{{replica}}'"
                )),
                "{local}"
            );
            let dist = got
                .iter()
                .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS db1.{table} ON CLUSTER lgc AS db1.{table}_local ENGINE = Distributed(lgc, db1, {table}_local, cityHash64(")))
                .unwrap_or_else(|| panic!("no distributed table for {table}"));
            assert!(!dist.contains('\n'), "{dist}");
        }
        // ReplacingMergeTree(version) keeps its version column after the path and replica.
        assert!(got.iter().any(|s| s.contains(
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db1/sessions_local', '{replica}', version)"
        )));
        // Sharded by session wherever a table has one; schema_migrations by version.
        assert!(got.iter().any(|s| {
            s.contains("Distributed(lgc, db1, usage_events_local, cityHash64(session_id))")
        }));
        assert!(got.iter().any(|s| {
            s.contains("Distributed(lgc, db1, schema_migrations_local, cityHash64(version))")
        }));
        // Views read and write the replicated tables.
        let mv = got
            .iter()
            .find(|s| s.contains("spend_daily_usage_mv"))
            .expect("the usage view");
        assert!(
            mv.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS db1.spend_daily_usage_mv ON CLUSTER lgc TO db1.spend_daily_local AS"),
            "{mv}"
        );
        assert!(mv.contains("FROM db1.usage_events_local"), "{mv}");
        for s in &got {
            assert!(!s.contains(';') && !s.contains("\n\n"), "{s}");
            if s.starts_with("INSERT INTO db1.") {
                // A backfill writes once, through the Distributed table, from one server.
                assert!(!s.contains("ON CLUSTER"), "{s}");
                assert!(!s.contains("_local"), "{s}");
                continue;
            }
            assert!(s.contains("ON CLUSTER lgc"), "{s}");
            assert!(
                s.contains("IF NOT EXISTS")
                    || s.starts_with("DROP TABLE IF EXISTS db1.")
                    || s.starts_with("ALTER TABLE db1.")
                    || s.starts_with("CREATE TABLE IF NOT EXISTS db1."),
                "{s}"
            );
        }
        // A column added to a replicated table goes into its local table, and its Distributed
        // table is created again over it (ClickHouse does not ALTER it ON CLUSTER); a dropped
        // view goes from every host.
        for table in ["usage_events", "sessions"] {
            let alter = got
                .iter()
                .position(|s| {
                    s.starts_with(&format!(
                        "ALTER TABLE db1.{table}_local ON CLUSTER lgc ADD COLUMN "
                    ))
                })
                .unwrap_or_else(|| panic!("no ADD COLUMN on {table}_local"));
            assert!(
                !got.iter()
                    .any(|s| s.starts_with(&format!("ALTER TABLE db1.{table} "))),
                "the Distributed {table} is altered"
            );
            assert_eq!(
                got[alter + 1],
                format!("DROP TABLE IF EXISTS db1.{table} ON CLUSTER lgc")
            );
            let create = format!(
                "CREATE TABLE IF NOT EXISTS db1.{table} ON CLUSTER lgc AS db1.{table}_local ENGINE = Distributed(lgc, db1, {table}_local, cityHash64("
            );
            assert!(got[alter + 2].starts_with(&create), "{}", got[alter + 2]);
        }
        assert!(
            got.iter()
                .any(|s| s.starts_with("DROP TABLE IF EXISTS db1.")
                    && s.ends_with(" ON CLUSTER lgc"))
        );
        // One server: nothing changes.
        assert_eq!(statements_for("db1", &Layout::Single), statements("db1"));
    }

    #[test]
    fn cluster_mode_needs_nothing_from_a_new_migration() {
        // What a future migration may look like: a bare engine name, an expression key, a
        // view over two tables. The transformation handles it without knowing it.
        let tables = vec!["a".to_string(), "b".to_string()];
        let t = clustered(
            "CREATE TABLE IF NOT EXISTS {db}.a (\n    k String,\n    v UInt64\n) ENGINE = ReplacingMergeTree\nORDER BY (lower(k), v)",
            "c",
            &tables,
        );
        assert_eq!(t.len(), 2);
        assert!(
            t[0].starts_with(
                "CREATE TABLE IF NOT EXISTS {db}.a_local ON CLUSTER c (\n    k String"
            ),
            "{}",
            t[0]
        );
        assert!(t[0].contains("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/a_local', '{replica}')\nORDER BY (lower(k), v)"), "{}", t[0]);
        assert!(
            t[1].ends_with("Distributed(c, {db}, a_local, cityHash64(lower(k)))"),
            "{}",
            t[1]
        );
        let plain = clustered(
            "CREATE TABLE IF NOT EXISTS {db}.b (k String) ENGINE = MergeTree() ORDER BY k",
            "c",
            &tables,
        );
        assert!(plain[0].contains("ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{db}/b_local', '{replica}') ORDER BY k"), "{}", plain[0]);
        assert!(plain[1].ends_with("cityHash64(k))"), "{}", plain[1]);
        let mv = clustered(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.a_mv TO {db}.b AS SELECT k FROM {db}.a WHERE k NOT IN (SELECT k FROM {db}.ab)",
            "c",
            &tables,
        );
        assert_eq!(
            mv,
            vec!["CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.a_mv ON CLUSTER c TO {db}.b_local AS SELECT k FROM {db}.a_local WHERE k NOT IN (SELECT k FROM {db}.ab)".to_string()]
        );
        let view = clustered(
            "CREATE VIEW IF NOT EXISTS {db}.v AS SELECT * FROM {db}.a",
            "c",
            &tables,
        );
        assert_eq!(
            view,
            vec![
                "CREATE VIEW IF NOT EXISTS {db}.v ON CLUSTER c AS SELECT * FROM {db}.a".to_string()
            ]
        );
        let other = clustered("SELECT 1", "c", &tables);
        assert_eq!(other, vec!["SELECT 1".to_string()]);
    }
}
