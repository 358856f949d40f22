//! Metering's schema on the ClickHouse versions it must run on: the 18.16 the other tests use
//! (a real `clickhouse-server`), and current ClickHouse (what docker-compose runs) through chdb,
//! ClickHouse's engine in process, from PyPI, in the shared test venv.
//!
//! Both take the DDL from `livegate-metering --print-schema`, the binary scripts/test.sh
//! builds, so what operators are told to apply is what is tested.

use anyhow::{Context, Result, ensure};
use livegate_deploy_tests::grafana::{Selection, panel_queries, render, variables};
use livegate_deploy_tests::{markdown_sql, read, repo_root, yaml_document};
use livegate_test_support::{ClickHouseServer, python, run_bounded, workspace::workspace_bin};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// chdb bundles a current ClickHouse engine (chdb 4.4 ships chdb-core 26.9).
const CHDB: (&str, &str) = ("chdb>=4.4,<5", "chdb");
/// Bound for the Python script (it takes a few seconds).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// `livegate-metering --print-schema --database DB`'s output, checked against the library's
/// statements, and those statements.
fn printed_schema(database: &str) -> Result<(String, Vec<String>)> {
    let bin = workspace_bin("livegate-metering")?;
    let out = Command::new(&bin)
        .args(["--print-schema", "--database", database])
        .env_remove("CLICKHOUSE_URL")
        .env("CLICKHOUSE_DATABASE", "ignored_by_print_schema")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let stdout = String::from_utf8(out.stdout)?;
    ensure!(
        out.status.success(),
        "{} --print-schema exited with {}: {}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let statements: Vec<String> = stdout
        .split(";\n\n")
        .map(|s| s.trim().trim_end_matches(';').trim_end().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let expected = livegate_metering::schema_statements(database)?;
    ensure!(
        statements == expected,
        "the binary printed other statements than schema_statements (stale build? run \
         `cargo build --workspace --bins`):\n{stdout}"
    );
    Ok((stdout, statements))
}

#[test]
fn print_schema_rejects_a_bad_database_name_and_needs_no_configuration() -> Result<()> {
    let bin = workspace_bin("livegate-metering")?;
    let out = Command::new(&bin)
        .args(["--print-schema", "--database", "live-gate"])
        .output()?;
    assert_eq!(out.status.code(), Some(64), "EX_USAGE");
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid database name"));
    // The default database, and nothing read from a broken environment.
    let out = Command::new(&bin)
        .arg("--print-schema")
        .env("METERING_BATCH_SIZE", "not a number")
        .env("LIVEGATE_CONFIG", "/nonexistent/livegate.yaml")
        .output()?;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout)?;
    assert!(text.starts_with("CREATE DATABASE IF NOT EXISTS livegate;\n\n"));
    assert!(text.contains("CREATE TABLE IF NOT EXISTS livegate.usage_events ("));
    Ok(())
}

#[tokio::test]
async fn printed_schema_applies_twice_on_the_tested_clickhouse() -> Result<()> {
    let ch = ClickHouseServer::shared().await?;
    let db = livegate_test_support::unique("print_schema");
    let (_, statements) = printed_schema(&db)?;
    for pass in 1..=2 {
        // An ADD COLUMN runs once (18.16 has no IF NOT EXISTS for it; metering's runner checks
        // system.columns instead): the second pass shows every other statement is idempotent.
        for s in statements
            .iter()
            .filter(|s| pass == 1 || !s.starts_with("ALTER TABLE "))
        {
            ch.query(s)
                .await
                .with_context(|| format!("pass {pass}: {s}"))?;
        }
    }
    let tables = ch
        .query(&format!(
            "SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name"
        ))
        .await?;
    let tables: Vec<&str> = tables.lines().collect();
    assert_eq!(
        tables,
        [
            "schema_migrations",
            "session_starts",
            "sessions",
            "spend_daily",
            "spend_daily_sessions_by_start_mv",
            "spend_daily_usage_mv",
            "spend_team_days",
            "spend_totals",
            "spend_totals_by_team",
            "spend_totals_by_team_mv",
            "usage_events",
            "usage_receipts"
        ]
    );
    ch.query(&format!("DROP DATABASE {db}")).await?;
    Ok(())
}

/// Every query to run on current ClickHouse, labelled: the SQL of README.md's "Cost tracking"
/// section and of metering's README ("Query with `FINAL`"), and every Grafana panel and
/// variable query rendered for database `livegate` in three dashboard states.
fn documented_queries() -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for (file, heading) in [
        ("README.md", "## Cost tracking"),
        ("services/metering/README.md", "### Query with `FINAL`"),
    ] {
        let queries = markdown_sql(&read(file)?, heading)?;
        ensure!(!queries.is_empty(), "no SQL under {heading:?} in {file}");
        for (i, sql) in queries.into_iter().enumerate() {
            out.push(json!({
                "label": format!("{file} {heading:?} query {}", i + 1),
                "sql": sql,
            }));
        }
    }

    let dashboard = crate::grafana::dashboard()?;
    let vars = variables(&dashboard);
    let panels = panel_queries(&dashboard);
    ensure!(!panels.is_empty(), "no dashboard queries");
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let all = Selection {
        from: now - 7 * 86_400,
        to: now + 600,
        ..Selection::default()
    };
    let mut t1 = all.clone();
    t1.values.insert("team".into(), vec!["t1".into()]);
    let mut several = all.clone();
    several.values.insert("team".into(), vec!["t2".into()]);
    several
        .values
        .insert("key".into(), vec!["k1".into(), "k2".into()]);
    several
        .values
        .insert("model".into(), vec!["mystery-live-model".into()]);
    for (state, sel) in [
        ("All", &all),
        ("team t1", &t1),
        ("team t2, keys k1+k2, one model", &several),
    ] {
        for q in &panels {
            let sql = render(&q.raw_sql, &vars, sel)
                .with_context(|| format!("panel {} {:?}", q.panel_id, q.title))?;
            out.push(json!({
                "label": format!("Grafana [{state}] panel {} {:?} {}", q.panel_id, q.title, q.ref_id),
                "sql": sql,
            }));
        }
        for v in vars.iter().filter(|v| v.kind == "query") {
            let sql = render(v.query.as_deref().unwrap_or_default(), &vars, sel)?;
            out.push(json!({
                "label": format!("Grafana [{state}] variable {}", v.name),
                "sql": sql,
            }));
        }
    }
    // Everything reads database `livegate`, the one the script creates.
    for q in &out {
        let sql = q["sql"].as_str().unwrap_or_default();
        ensure!(
            sql.contains("livegate."),
            "query not on database livegate: {sql}"
        );
    }
    Ok(out)
}

#[test]
fn schema_and_queries_work_on_current_clickhouse() -> Result<()> {
    let (schema, _) = printed_schema("livegate")?;
    let queries = documented_queries()?;
    let started = Instant::now();
    let py = python::venv(&[CHDB])?;
    let venv_time = started.elapsed();

    let dir = tempfile::tempdir()?;
    let schema_file = dir.path().join("schema.sql");
    let queries_file = dir.path().join("queries.json");
    std::fs::write(&schema_file, &schema)?;
    std::fs::write(&queries_file, serde_json::to_vec_pretty(&queries)?)?;
    let mut cmd = Command::new(&py);
    cmd.arg(repo_root().join("tests/deploy/current_clickhouse.py"))
        .arg(&schema_file)
        .arg(&queries_file)
        .current_dir(dir.path());
    let started = Instant::now();
    let (status, output) = run_bounded(cmd, SCRIPT_TIMEOUT)?;
    let script_time = started.elapsed();
    println!("{output}");
    println!(
        "venv ready in {venv_time:.1?}, script ran {} queries in {script_time:.1?}",
        queries.len()
    );
    assert!(
        status.success(),
        "current ClickHouse (chdb) rejected metering's schema or a documented query:\n{output}"
    );
    assert!(
        output.contains(", 0 failed"),
        "unexpected output:\n{output}"
    );

    // What docker-compose runs is a current release too (the script checked chdb's ≥ 24).
    let compose = yaml_document(&read("docker-compose.yml")?)?;
    let image = compose
        .pointer("/services/clickhouse/image")
        .and_then(serde_json::Value::as_str)
        .context("services.clickhouse.image")?;
    let major: u32 = image
        .rsplit(':')
        .next()
        .and_then(|tag| tag.split('.').next())
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("no version in {image}"))?;
    assert!(
        major >= 24,
        "compose runs {image}, older than what is tested"
    );
    Ok(())
}
