//! deploy/grafana: provisioning files, the dashboard's structure, and every panel and variable
//! query run against a real ClickHouse holding metering's schema (its own migrations).

use anyhow::{Context, Result, ensure};
use livegate_deploy_tests::grafana::{
    PanelQuery, Selection, Variable, civil_datetime, metric_names, panel_queries, panels,
    prom_targets, render, variables,
};
use livegate_deploy_tests::{
    compose_environment, interpolate, interpolate_value, read, str_at, yaml_document,
};
use livegate_test_support::ClickHouseServer;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

const DASHBOARD: &str = "deploy/grafana/dashboards/livegate-spend.json";
/// The gateway's session telemetry, from its Prometheus metrics.
const SESSIONS_DASHBOARD: &str = "deploy/grafana/dashboards/livegate-sessions.json";
const DATASOURCE: &str = "deploy/grafana/provisioning/datasources/clickhouse.yaml";
const PROVIDER: &str = "deploy/grafana/provisioning/dashboards/livegate.yaml";
const PLUGIN: &str = "grafana-clickhouse-datasource";
const TABLES: &[&str] = &["usage_events", "sessions", "spend_daily"];

pub(crate) fn dashboard() -> Result<Value> {
    serde_json::from_str(&read(DASHBOARD)?).context("dashboard JSON")
}

fn datasource_uid() -> Result<String> {
    let ds = yaml_document(&read(DATASOURCE)?)?;
    str_at(&ds, "/datasources/0/uid")
        .map(str::to_string)
        .context("datasource uid")
}

#[test]
fn provisioning_matches_compose() -> Result<()> {
    let compose = yaml_document(&read("docker-compose.yml")?)?;
    let env: HashMap<String, String> = [
        ("LIVEGATE_MASTER_KEY", "m"),
        ("LIVEGATE_INTERNAL_TOKEN", "i"),
        ("CLICKHOUSE_PASSWORD", "pw"),
        ("LIVEGATE_NATS_GATEWAY_PASSWORD", "g"),
        ("LIVEGATE_NATS_AUTH_PASSWORD", "a"),
        ("LIVEGATE_NATS_METERING_PASSWORD", "me"),
        ("LIVEGATE_NATS_CLI_PASSWORD", "c"),
        ("LIVEGATE_NATS_ADMIN_PASSWORD", "ad"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let compose = interpolate_value(&compose, &env)?;
    let grafana = compose.pointer("/services/grafana").context("grafana")?;
    let genv: HashMap<String, String> = compose_environment(grafana).into_iter().collect();
    assert!(
        genv.get("GF_INSTALL_PLUGINS")
            .is_some_and(|p| p.split(',').any(|x| x.trim().starts_with(PLUGIN))),
        "GF_INSTALL_PLUGINS must install {PLUGIN}"
    );

    // The datasource, with Grafana's environment expansion.
    let ds_text = interpolate(&read(DATASOURCE)?, &genv)?;
    let ds = yaml_document(&ds_text)?;
    let d = ds.pointer("/datasources/0").context("one datasource")?;
    assert_eq!(str_at(d, "/type"), Some(PLUGIN));
    assert_eq!(str_at(d, "/jsonData/protocol"), Some("http"));
    assert_eq!(
        d.pointer("/jsonData/port").and_then(Value::as_u64),
        Some(8123)
    );
    let host = str_at(d, "/jsonData/host").context("host")?;
    assert!(
        compose.pointer(&format!("/services/{host}")).is_some(),
        "datasource host {host} is not a compose service"
    );
    let chenv: HashMap<String, String> = compose_environment(
        compose
            .pointer("/services/clickhouse")
            .context("clickhouse")?,
    )
    .into_iter()
    .collect();
    assert_eq!(
        str_at(d, "/jsonData/username"),
        chenv.get("CLICKHOUSE_USER").map(String::as_str)
    );
    assert_eq!(
        str_at(d, "/secureJsonData/password"),
        chenv.get("CLICKHOUSE_PASSWORD").map(String::as_str)
    );
    assert_eq!(str_at(d, "/jsonData/defaultDatabase"), Some("livegate"));

    // The dashboard provider reads the directory compose mounts the dashboards at.
    let provider = yaml_document(&read(PROVIDER)?)?;
    let path = str_at(&provider, "/providers/0/options/path").context("provider path")?;
    let mounts: Vec<&str> = grafana
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        mounts
            .iter()
            .any(|m| m == &format!("./deploy/grafana/dashboards:{path}:ro")),
        "dashboards not mounted at {path}: {mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./deploy/grafana/provisioning:/etc/grafana/provisioning")),
        "provisioning not mounted: {mounts:?}"
    );
    let home = genv
        .get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
        .context("home dashboard")?;
    let file = home
        .strip_prefix(&format!("{path}/"))
        .context("home dashboard outside the provider path")?;
    assert!(
        livegate_deploy_tests::repo_root()
            .join("deploy/grafana/dashboards")
            .join(file)
            .is_file()
    );
    Ok(())
}

#[test]
fn dashboard_is_well_formed_and_covers_the_issue() -> Result<()> {
    let d = dashboard()?;
    let uid = datasource_uid()?;
    assert!(str_at(&d, "/uid").is_some_and(|u| !u.is_empty()));
    assert!(str_at(&d, "/title").is_some());
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let id = p.get("id").and_then(Value::as_i64).context("panel id")?;
        assert!(ids.insert(id), "duplicate panel id {id}");
        assert!(p.get("gridPos").is_some(), "panel {id} has no gridPos");
        let kind = str_at(p, "/type").unwrap_or_default();
        if kind != "row" && kind != "text" {
            assert!(
                p.get("targets")
                    .and_then(Value::as_array)
                    .is_some_and(|t| !t.is_empty()),
                "panel {id} has no query"
            );
        }
    }
    let queries = panel_queries(&d);
    assert!(queries.len() >= 10, "only {} queries", queries.len());
    for q in &queries {
        let what = format!("panel {} {:?}", q.panel_id, q.title);
        assert_eq!(
            q.datasource_uid.as_deref(),
            Some(uid.as_str()),
            "{what}: datasource"
        );
        assert_eq!(q.editor_type.as_deref(), Some("sql"), "{what}: SQL editor");
        assert!(!q.raw_sql.trim().is_empty(), "{what}: no rawSql");
        let timeseries = q.panel_type == "timeseries";
        assert_eq!(
            q.format,
            Some(if timeseries { 0 } else { 1 }),
            "{what}: format"
        );
        assert_eq!(
            q.query_type.as_deref(),
            Some(if timeseries { "timeSeries" } else { "table" }),
            "{what}: queryType"
        );
        uses_final(q)?;
    }
    // What the issue asks the dashboard to show.
    let titles: Vec<String> = queries.iter().map(|q| q.title.to_lowercase()).collect();
    for wanted in [
        "by key",
        "by team",
        "by model",
        "by day",
        "sessions",
        "by modality",
        "unpriced",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted:?}: {titles:?}"
        );
    }
    for table in TABLES {
        assert!(
            queries
                .iter()
                .any(|q| q.raw_sql.contains(&format!("${{database}}.{table}"))),
            "no panel reads {table}"
        );
    }
    // Filters: a constant database (one place to change) and multi-value team/key/model
    // whose "All" is a literal the SQL understands even when the tables are empty.
    let vars = variables(&d);
    let db = vars
        .iter()
        .find(|v| v.name == "database")
        .context("database variable")?;
    assert_eq!(db.kind, "constant");
    assert_eq!(db.query.as_deref(), Some("livegate"));
    for name in ["team", "key", "model"] {
        let v = vars
            .iter()
            .find(|v| v.name == name)
            .with_context(|| format!("{name} variable"))?;
        assert_eq!(v.kind, "query");
        assert!(v.multi && v.include_all, "{name}: multi-value with All");
        assert_eq!(
            v.all_value.as_deref(),
            Some("'__all__'"),
            "{name}: allValue"
        );
        assert_eq!(v.datasource_uid.as_deref(), Some(uid.as_str()));
    }
    Ok(())
}

/// Metering's tables are ReplacingMergeTrees: its README tells operators to read them with
/// FINAL so a redelivered event never counts twice. Every panel does.
fn uses_final(q: &PanelQuery) -> Result<()> {
    for table in TABLES {
        let needle = format!("${{database}}.{table}");
        for (i, _) in q.raw_sql.match_indices(&needle) {
            let after = q.raw_sql[i + needle.len()..].trim_start();
            ensure!(
                after.starts_with("FINAL"),
                "panel {} {:?}: {table} read without FINAL",
                q.panel_id,
                q.title
            );
        }
    }
    Ok(())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Rows as metering writes them: two priced events of one session (one of them delivered
/// twice), one unpriced event of another session, and both sessions' rows.
fn fixtures(db: &str, at: i64) -> Vec<String> {
    let ts = civil_datetime(at);
    let started = civil_datetime(at - 60);
    let usage = |event: &str,
                 session: &str,
                 seq: u32,
                 key: &str,
                 team: &str,
                 model: &str,
                 priced: u8,
                 cost: &str,
                 input: &str,
                 output: &str| {
        format!(
            "INSERT INTO {db}.usage_events (event_id, session_id, seq, ts, key_id, team_id, user_id, \
             project, location, model, gateway_id, prompt_tokens, response_tokens, cached_tokens, \
             tool_use_tokens, thoughts_tokens, total_tokens, input_text_tokens, input_audio_tokens, \
             input_video_tokens, input_image_tokens, output_text_tokens, output_audio_tokens, \
             input_characters, input_audio_seconds, input_video_seconds, input_video_frames, \
             input_images, output_characters, output_audio_seconds, input_text_cost_usd, \
             input_audio_cost_usd, input_image_cost_usd, input_video_cost_usd, cached_cost_usd, \
             tool_use_cost_usd, output_text_cost_usd, output_audio_cost_usd, thoughts_cost_usd, \
             input_cost_usd, output_cost_usd, cost_usd, priced, pricing_entry) VALUES \
             ('{event}', '{session}', {seq}, '{ts}', '{key}', '{team}', 'u1', 'proj', \
             'us-central1', '{model}', 'gw-1', 120, 30, 10, 0, 5, 165, 20, 100, 0, 0, 10, 20, \
             80, 3.2, 0, 0, 0, 40, 1.5, 0.0001, {input}, 0, 0, 0, 0, 0.0001, {output}, 0, \
             {input}, {output}, {cost}, {priced}, '{model}')"
        )
    };
    let session = |id: &str, key: &str, team: &str, model: &str, code: u16, cost: &str| {
        format!(
            "INSERT INTO {db}.sessions (session_id, key_id, team_id, user_id, project, location, \
             model, gateway_id, started_at, ended_at, duration_s, close_code, close_reason, \
             closed_by, frames_in, frames_out, bytes_in, bytes_out, reports, events_counted, \
             prompt_tokens, response_tokens, cached_tokens, tool_use_tokens, thoughts_tokens, \
             total_tokens, input_characters, output_characters, input_audio_seconds, \
             output_audio_seconds, input_video_seconds, input_images, input_cost_usd, \
             output_cost_usd, cost_usd, version) VALUES ('{id}', '{key}', '{team}', 'u1', 'proj', \
             'us-central1', '{model}', 'gw-1', '{started}', '{ts}', 60.5, {code}, '', 'client', \
             10, 12, 1000, 2000, 2, 2, 240, 60, 20, 0, 10, 330, 160, 80, 6.4, 3, 0, 0, 0.002, \
             0.001, {cost}, 2)"
        )
    };
    let flash = "gemini-live-2.5-flash";
    vec![
        usage(
            "s1:1", "s1", 1, "k1", "t1", flash, 1, "0.001", "0.0006", "0.0004",
        ),
        usage(
            "s1:2", "s1", 2, "k1", "t1", flash, 1, "0.002", "0.0012", "0.0008",
        ),
        // Redelivered: the same event again. FINAL must count it once.
        usage(
            "s1:1", "s1", 1, "k1", "t1", flash, 1, "0.001", "0.0006", "0.0004",
        ),
        usage(
            "s2:1",
            "s2",
            1,
            "k2",
            "t2",
            "mystery-live-model",
            0,
            "0",
            "0",
            "0",
        ),
        session("s1", "k1", "t1", flash, 1000, "0.003"),
        session("s2", "k2", "t2", "mystery-live-model", 4402, "0"),
    ]
}

/// Runs `sql` and returns its rows (TabSeparatedWithNames) as maps column → text.
async fn rows(ch: &ClickHouseServer, sql: &str) -> Result<Vec<HashMap<String, String>>> {
    let body = ch
        .query(&format!("{sql}\nFORMAT TabSeparatedWithNames"))
        .await?;
    let mut lines = body.lines();
    let names: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split('\t')
        .map(str::to_string)
        .collect();
    Ok(lines
        .map(|l| {
            names
                .iter()
                .cloned()
                .zip(l.split('\t').map(str::to_string))
                .collect()
        })
        .collect())
}

fn number(rows: &[HashMap<String, String>], column: &str) -> Result<f64> {
    let v = rows
        .first()
        .and_then(|r| r.get(column))
        .with_context(|| format!("no {column} in {rows:?}"))?;
    v.parse().with_context(|| format!("{column} = {v:?}"))
}

fn query<'a>(queries: &'a [PanelQuery], title: &str) -> Result<&'a PanelQuery> {
    queries
        .iter()
        .find(|q| q.title == title)
        .with_context(|| format!("no panel {title:?}"))
}

#[tokio::test]
async fn every_query_runs_on_clickhouse_with_metering_schema() -> Result<()> {
    let ch = ClickHouseServer::shared().await?;
    let db = ch.create_database("deploy_grafana").await?;
    // The real schema: metering's own migrations.
    let store = livegate_metering::Store::new(&livegate_metering::config::ClickHouseConfig {
        url: ch.http_url(),
        database: db.clone(),
        user: "default".into(),
        password: secrecy::SecretString::from(String::new()),
        cluster: None,
    });
    store.migrate().await?;
    let at = now() - 3_600;
    for stmt in fixtures(&db, at) {
        ch.query(&stmt).await?;
    }

    let d = dashboard()?;
    let vars: Vec<Variable> = variables(&d);
    let queries = panel_queries(&d);
    let base = Selection {
        from: now() - 7 * 86_400,
        to: now() + 600,
        values: HashMap::new(),
        constants: HashMap::from([("database".to_string(), db.clone())]),
    };
    let selections: Vec<(&str, Selection)> = vec![
        ("All", base.clone()),
        ("team t1", {
            let mut s = base.clone();
            s.values.insert("team".into(), vec!["t1".into()]);
            s
        }),
        ("team t2, two keys, one model", {
            let mut s = base.clone();
            s.values.insert("team".into(), vec!["t2".into()]);
            s.values
                .insert("key".into(), vec!["k1".into(), "k2".into()]);
            s.values
                .insert("model".into(), vec!["mystery-live-model".into()]);
            s
        }),
    ];

    for (label, sel) in &selections {
        for q in &queries {
            let sql = render(&q.raw_sql, &vars, sel)
                .with_context(|| format!("panel {} {:?}", q.panel_id, q.title))?;
            rows(ch, &sql)
                .await
                .with_context(|| format!("[{label}] panel {} {:?}", q.panel_id, q.title))?;
        }
        for v in vars.iter().filter(|v| v.kind == "query") {
            let sql = render(v.query.as_deref().unwrap_or_default(), &vars, sel)?;
            let values = rows(ch, &sql)
                .await
                .with_context(|| format!("variable {}", v.name))?;
            assert!(!values.is_empty(), "variable {} offers nothing", v.name);
        }
    }

    // The figures are right (FINAL: the redelivered event counts once).
    let run = |title: &'static str, sel: &Selection| {
        let q = query(&queries, title).map(|q| q.raw_sql.clone());
        let vars = vars.clone();
        let sel = sel.clone();
        async move { rows(ch, &render(&q?, &vars, &sel)?).await }
    };
    let all = &selections[0].1;
    let t1 = &selections[1].1;
    let t2 = &selections[2].1;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(
        number(&run("Spend", all).await?, "spend_usd")?,
        0.003
    ));
    assert!(close(number(&run("Spend", t1).await?, "spend_usd")?, 0.003));
    assert!(close(number(&run("Spend", t2).await?, "spend_usd")?, 0.0));
    assert!(close(
        number(&run("Sessions", all).await?, "sessions_ended")?,
        2.0
    ));
    assert!(close(number(&run("Tokens", all).await?, "prompt")?, 360.0));
    assert!(close(
        number(&run("Unpriced events", all).await?, "unpriced_events")?,
        1.0
    ));
    assert!(close(
        number(&run("Unpriced events", t1).await?, "unpriced_events")?,
        0.0
    ));
    assert!(close(
        number(&run("Unpriced events", t2).await?, "unpriced_events")?,
        1.0
    ));
    let unpriced = run("Unpriced models", all).await?;
    assert_eq!(unpriced.len(), 1);
    assert_eq!(unpriced[0]["model_id"], "mystery-live-model");
    let by_key = run("Spend by key", all).await?;
    assert_eq!(by_key.len(), 2, "{by_key:?}");
    assert_eq!(by_key[0]["key"], "k1");
    assert!(close(by_key[0]["spend_usd"].parse()?, 0.003));
    let input = run("Input tokens by modality", all).await?;
    assert!(close(number(&input, "audio")?, 300.0), "{input:?}");
    let codes = run("Close codes", all).await?;
    assert_eq!(codes.len(), 2, "{codes:?}");
    let recent = run("Recent sessions", all).await?;
    assert_eq!(recent.len(), 2);
    Ok(())
}

/// The session telemetry dashboard: well formed, every query PromQL on the dashboard's
/// Prometheus datasource variable and filtered by gateway instance, and a panel for each
/// thing issue 16 asks to see. (That every metric it reads exists is checked against a real
/// gateway's `/metrics` in the system tests, `telemetry.rs`.)
#[test]
fn sessions_dashboard_is_well_formed_and_covers_the_issue() -> Result<()> {
    let d: Value = serde_json::from_str(&read(SESSIONS_DASHBOARD)?).context("dashboard JSON")?;
    assert_eq!(str_at(&d, "/uid"), Some("livegate-sessions"));
    let spend = dashboard()?;
    assert_ne!(
        str_at(&d, "/uid"),
        str_at(&spend, "/uid"),
        "two dashboards, one uid"
    );
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let id = p.get("id").and_then(Value::as_i64).context("panel id")?;
        assert!(ids.insert(id), "duplicate panel id {id}");
        assert!(p.get("gridPos").is_some(), "panel {id} has no gridPos");
        if str_at(p, "/type") != Some("row") {
            assert!(
                p.get("targets")
                    .and_then(Value::as_array)
                    .is_some_and(|t| !t.is_empty()),
                "panel {id} has no query"
            );
        }
    }
    let targets = prom_targets(&d);
    assert!(targets.len() >= 10, "only {} queries", targets.len());
    let mut read_metrics = BTreeSet::new();
    for t in &targets {
        let what = format!("panel {} {:?}", t.panel_id, t.title);
        assert_eq!(t.datasource_uid.as_deref(), Some("${datasource}"), "{what}");
        assert!(
            t.expr.contains("instance=~\"$instance\""),
            "{what}: {}",
            t.expr
        );
        let names = metric_names(&t.expr);
        assert!(!names.is_empty(), "{what} reads no livegate metric");
        read_metrics.extend(names);
    }
    let vars = variables(&d);
    let ds = vars
        .iter()
        .find(|v| v.name == "datasource")
        .context("datasource variable")?;
    assert_eq!(
        (ds.kind.as_str(), ds.query.as_deref()),
        ("datasource", Some("prometheus"))
    );
    for name in ["instance", "model"] {
        let v = vars
            .iter()
            .find(|v| v.name == name)
            .with_context(|| format!("{name} variable"))?;
        assert!(v.multi && v.include_all, "{name}: multi-value with All");
        assert_eq!(v.all_value.as_deref(), Some(".*"), "{name}: allValue");
    }
    let titles: Vec<String> = targets.iter().map(|t| t.title.to_lowercase()).collect();
    for wanted in [
        "active sessions by key",
        "active sessions by model",
        "session duration",
        "first response",
        "first audio",
        "turn latency",
        "interruptions",
        "upstream closes",
        "refused by budget",
        "resumptions",
        "ended by key",
        "price reloads",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted:?}: {titles:?}"
        );
    }
    for metric in [
        "livegate_gateway_sessions_active_by_key",
        "livegate_gateway_session_duration_seconds_bucket",
        "livegate_gateway_turn_seconds_bucket",
        "livegate_gateway_turn_first_response_seconds_bucket",
        "livegate_gateway_turn_first_audio_seconds_bucket",
        "livegate_gateway_interruptions_total",
        "livegate_gateway_upstream_closes_total",
        "livegate_gateway_turns_refused_budget_total",
        "livegate_gateway_resumptions_total",
        "livegate_gateway_upstream_go_aways_total",
        "livegate_gateway_sessions_key_ended_total",
        "livegate_gateway_pricing_reloads_total",
    ] {
        assert!(read_metrics.contains(metric), "no panel reads {metric}");
    }
    Ok(())
}
