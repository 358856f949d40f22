//! `livegate spend`: spend reports from ClickHouse (`spend_daily`, written by metering); with
//! `--reprice`, the same period priced again with another table (`crate::reprice`).
//!
//! Reads with `FINAL` so that an event ClickHouse has not yet merged away after a redelivery
//! is still counted once (see metering's schema notes).

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use std::io::Write;
use std::time::Duration;

/// ClickHouse connection settings (the same variables metering reads).
#[derive(Debug, ClapArgs)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP URL.
    #[arg(long, env = "CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    pub clickhouse_url: String,
    /// Database metering writes to.
    #[arg(long, env = "CLICKHOUSE_DATABASE", default_value = "livegate")]
    pub clickhouse_database: String,
    /// ClickHouse user.
    #[arg(long, env = "CLICKHOUSE_USER", default_value = "default")]
    pub clickhouse_user: String,
    /// ClickHouse password.
    #[arg(
        long,
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub clickhouse_password: String,
}

impl ClickHouseArgs {
    /// A client for these settings (validation off: ClickHouse 18.16 lacks the format the
    /// crate's schema check uses).
    pub fn client(&self) -> clickhouse::Client {
        livegate_common::clickhouse::client(
            &self.clickhouse_url,
            &self.clickhouse_user,
            &self.clickhouse_password,
        )
    }
}

/// What to group spend by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum By {
    Key,
    Team,
    Model,
    Day,
}

impl By {
    /// The group expression over `usage_events` (whose day is `toDate(ts)`), shared by the
    /// unpriced-usage count and `--reprice`.
    pub(crate) fn usage_events_group(self) -> &'static str {
        match self {
            By::Key => "key_id",
            By::Team => "team_id",
            By::Model => "model",
            By::Day => "toString(toDate(ts))",
        }
    }
}

/// `livegate spend`
#[derive(Debug, ClapArgs)]
pub struct SpendArgs {
    /// Group by.
    #[arg(long, value_enum, default_value = "key")]
    by: By,
    /// How far back, e.g. 7d, 30d (whole days, today included).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    since: Duration,
    /// Only this key id.
    #[arg(long)]
    key: Option<String>,
    /// Price the period's stored usage again with this price table (LiteLLM's format, on top
    /// of the built-in table as metering's PRICING_FILE) and print it next to what was billed.
    #[arg(long, value_name = "PRICING_FILE")]
    reprice: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct SpendRow {
    group: String,
    sessions: u64,
    prompt_tokens: u64,
    response_tokens: u64,
    cost_usd: String,
}

/// The report's SQL (the key filter is bound, not spliced).
fn sql(by: By, days: u64, database: &str, with_key: bool) -> String {
    let group = match by {
        By::Key => "key_id",
        By::Team => "team_id",
        By::Model => "model",
        By::Day => "toString(day)",
    };
    let order = if by == By::Day {
        "`group`"
    } else {
        "sum(cost_usd) DESC, `group`"
    };
    let key_filter = if with_key { " AND key_id = ?" } else { "" };
    format!(
        "SELECT {group} AS `group`, sum(sessions) AS total_sessions, \
         sum(prompt_tokens) AS total_prompt_tokens, sum(response_tokens) AS total_response_tokens, \
         toString(sum(cost_usd)) AS total_cost_usd \
         FROM {database}.spend_daily FINAL \
         WHERE day > today() - {days}{key_filter} \
         GROUP BY `group` ORDER BY {order}"
    )
}

/// Usage rows of the period that no price table entry priced (`priced = 0`: an unknown model,
/// recorded at cost 0), per group and model. `spend_daily` has no `priced` column, so they are
/// counted in `usage_events`, grouped the way `sql` groups (its `day` is `toDate(ts)`).
fn unpriced_sql(by: By, days: u64, database: &str, with_key: bool) -> String {
    let group = by.usage_events_group();
    let key_filter = if with_key { " AND key_id = ?" } else { "" };
    format!(
        "SELECT {group} AS `group`, model, count() AS events \
         FROM {database}.usage_events FINAL \
         WHERE priced = 0 AND toDate(ts) > today() - {days}{key_filter} \
         GROUP BY `group`, model ORDER BY `group`, model"
    )
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct UnpricedRow {
    group: String,
    model: String,
    events: u64,
}

/// Trims a decimal string like `0.001234000000` to `0.001234` (at least 2 decimals).
pub(crate) fn money(s: &str) -> String {
    match s.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            let frac = if frac.len() < 2 {
                format!("{frac:0<2}")
            } else {
                frac.to_string()
            };
            format!("{int}.{frac}")
        }
        None => format!("{s}.00"),
    }
}

pub(crate) async fn run_spend(a: SpendArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let db = &a.clickhouse.clickhouse_database;
    anyhow::ensure!(
        livegate_common::clickhouse::is_identifier(db),
        "CLICKHOUSE_DATABASE {db:?} is not a plain identifier"
    );
    let days = a.since.as_secs().div_ceil(86_400).max(1);
    if let Some(table) = &a.reprice {
        return crate::reprice::run(
            table,
            a.by,
            days,
            a.key.as_deref(),
            a.json,
            &a.clickhouse,
            out,
        )
        .await;
    }
    let client = a.clickhouse.client();
    let mut query = client.query(&sql(a.by, days, db, a.key.is_some()));
    if let Some(k) = &a.key {
        query = query.bind(k.as_str());
    }
    let rows: Vec<SpendRow> = query.fetch_all().await.with_context(|| {
        format!(
            "cannot read spend from ClickHouse at {} (is metering running and the schema applied?)",
            a.clickhouse.clickhouse_url
        )
    })?;
    // Unpriced usage costs 0, so the figures above understate what the period used: say so.
    let mut query = client.query(&unpriced_sql(a.by, days, db, a.key.is_some()));
    if let Some(k) = &a.key {
        query = query.bind(k.as_str());
    }
    let unpriced: Vec<UnpricedRow> = query
        .fetch_all()
        .await
        .context("cannot count unpriced usage in ClickHouse")?;
    let unpriced_in = |group: &str| -> u64 {
        unpriced
            .iter()
            .filter(|u| u.group == group)
            .map(|u| u.events)
            .sum()
    };
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "group": r.group, "sessions": r.sessions, "prompt_tokens": r.prompt_tokens,
                    "response_tokens": r.response_tokens, "cost_usd": money(&r.cost_usd),
                    "unpriced_events": unpriced_in(&r.group),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(v))?;
        return Ok(());
    }
    let title = format!("{:?}", a.by).to_uppercase();
    writeln!(
        out,
        "{title:<28} {:>9} {:>14} {:>14} {:>16}",
        "SESSIONS", "PROMPT_TOK", "RESPONSE_TOK", "COST_USD"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<28} {:>9} {:>14} {:>14} {:>16}",
            if r.group.is_empty() { "-" } else { &r.group },
            r.sessions,
            r.prompt_tokens,
            r.response_tokens,
            format!("${}", money(&r.cost_usd))
        )?;
    }
    if rows.is_empty() {
        writeln!(out, "(no spend in the last {days} day(s))")?;
    }
    let mut models: Vec<(&str, u64)> = Vec::new();
    for u in &unpriced {
        match models.iter_mut().find(|(m, _)| *m == u.model) {
            Some((_, n)) => *n += u.events,
            None => models.push((&u.model, u.events)),
        }
    }
    if !models.is_empty() {
        let list: Vec<String> = models
            .iter()
            .map(|(m, n)| format!("{m} ({n} event(s))"))
            .collect();
        writeln!(
            out,
            "warning: usage of models without a price is counted at $0 above: {}; add them to \
             PRICING_FILE (and reprice with --reprice)",
            list.join(", ")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_trimmed_not_rounded() {
        assert_eq!(money("0.001234000000"), "0.001234");
        assert_eq!(money("12.000000000000"), "12.00");
        assert_eq!(money("3"), "3.00");
        assert_eq!(money("0.100000000000"), "0.10");
    }

    #[test]
    fn sql_groups_and_filters() {
        let q = sql(By::Team, 7, "livegate", true);
        assert!(q.contains("team_id AS `group`"));
        assert!(q.contains("FROM livegate.spend_daily FINAL"));
        assert!(q.contains("day > today() - 7 AND key_id = ?"));
        assert!(sql(By::Day, 1, "db", false).ends_with("ORDER BY `group`"));
        let q = unpriced_sql(By::Day, 7, "livegate", true);
        assert!(q.contains("toString(toDate(ts)) AS `group`"), "{q}");
        assert!(q.contains("FROM livegate.usage_events FINAL"), "{q}");
        assert!(
            q.contains("priced = 0 AND toDate(ts) > today() - 7 AND key_id = ?"),
            "{q}"
        );
    }
}
