//! The Grafana dashboard's queries, and the SQL Grafana sends for them.
//!
//! Grafana first replaces template variables (`${team:singlequote}`, `${database}`; a
//! multi-value variable whose "All" has a custom `allValue` gets that value verbatim), then
//! the ClickHouse plugin expands its macros. [`render`] does both, for the macros this
//! dashboard may use, with the plugin's expansions:
//!
//! | macro | becomes |
//! |---|---|
//! | `$__timeFilter(c)` | `c >= toDateTime(FROM) AND c <= toDateTime(TO)` (Unix seconds) |
//! | `$__dateFilter(c)` | `c >= toDate('YYYY-MM-DD') AND c <= toDate('YYYY-MM-DD')` |
//! | `$__fromTime`, `$__toTime` | `toDateTime(FROM)`, `toDateTime(TO)` |
//!
//! Anything else starting with `$` left after substitution is an error, so a panel cannot use
//! a macro or variable the tests do not know how to run.
//!
//! Prometheus dashboards (the gateway's session telemetry): [`prom_targets`] lists their
//! PromQL, [`metric_names`] the livegate metrics an expression reads, and [`family`] the name
//! each has in the exposition's `# TYPE` line, so a test can hold them against a real
//! gateway's `/metrics`.

use anyhow::{Result, anyhow, bail};
use serde_json::Value;
use std::collections::HashMap;

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// The panel's `id`.
    pub panel_id: i64,
    /// The panel's title.
    pub title: String,
    /// The panel's `type` (`stat`, `table`, `timeseries`, …).
    pub panel_type: String,
    /// The target's `refId`.
    pub ref_id: String,
    /// The target's SQL.
    pub raw_sql: String,
    /// The target's `format` (plugin: 0 time series, 1 table).
    pub format: Option<i64>,
    /// The target's `queryType` (`table`, `timeSeries`, …).
    pub query_type: Option<String>,
    /// The target's `editorType` (`sql` or `builder`).
    pub editor_type: Option<String>,
    /// The datasource uid of the target, else of the panel.
    pub datasource_uid: Option<String>,
}

/// Every panel, rows' nested panels included, in order.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: Option<&'a Value>, out: &mut Vec<&'a Value>) {
        for p in list.and_then(Value::as_array).into_iter().flatten() {
            out.push(p);
            walk(p.get("panels"), out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard.get("panels"), &mut out);
    out
}

fn uid(v: Option<&Value>) -> Option<String> {
    v.and_then(|d| d.get("uid"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Every query target of every panel.
pub fn panel_queries(dashboard: &Value) -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let s = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_string);
            out.push(PanelQuery {
                panel_id: p.get("id").and_then(Value::as_i64).unwrap_or(-1),
                title: p
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                panel_type: p
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                ref_id: s("refId").unwrap_or_default(),
                raw_sql: s("rawSql").unwrap_or_default(),
                format: t.get("format").and_then(Value::as_i64),
                query_type: s("queryType"),
                editor_type: s("editorType"),
                datasource_uid: uid(t.get("datasource")).or_else(|| uid(p.get("datasource"))),
            });
        }
    }
    out
}

/// A dashboard template variable.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Its name (`$name`).
    pub name: String,
    /// `query`, `constant`, `custom`, …
    pub kind: String,
    /// The SQL of a `query` variable, or the value of a `constant`.
    pub query: Option<String>,
    /// Several values may be selected.
    pub multi: bool,
    /// Offers "All".
    pub include_all: bool,
    /// "All"'s custom value, inserted verbatim.
    pub all_value: Option<String>,
    /// The datasource uid of a `query` variable.
    pub datasource_uid: Option<String>,
}

/// The dashboard's template variables.
pub fn variables(dashboard: &Value) -> Vec<Variable> {
    dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| {
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
            // A query may be a plain string or the plugin's {rawSql: …} object.
            let query = match v.get("query") {
                Some(Value::String(q)) => Some(q.clone()),
                Some(q @ Value::Object(_)) => {
                    q.get("rawSql").and_then(Value::as_str).map(str::to_string)
                }
                _ => None,
            };
            Variable {
                name: s("name").unwrap_or_default(),
                kind: s("type").unwrap_or_default(),
                query,
                multi: b("multi"),
                include_all: b("includeAll"),
                all_value: s("allValue").filter(|a| !a.is_empty()),
                datasource_uid: uid(v.get("datasource")),
            }
        })
        .collect()
}

/// The dashboard state a query is rendered for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Time range start, Unix seconds.
    pub from: i64,
    /// Time range end, Unix seconds.
    pub to: i64,
    /// Selected values of query variables; a variable not listed has "All" selected.
    pub values: HashMap<String, Vec<String>>,
    /// Values for constants, overriding the dashboard's (e.g. the test's database).
    pub constants: HashMap<String, String>,
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
pub fn civil_date(unix: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `YYYY-MM-DD hh:mm:ss` (UTC) of a Unix time, as ClickHouse parses a `DateTime('UTC')`.
pub fn civil_datetime(unix: i64) -> String {
    let secs = unix.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02}",
        civil_date(unix),
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

fn format_values(values: &[String], format: Option<&str>, multi: bool) -> Result<String> {
    let quote = |v: &String, q: char| {
        let escaped = v.replace('\\', "\\\\").replace(q, &format!("\\{q}"));
        format!("{q}{escaped}{q}")
    };
    Ok(match format {
        Some("singlequote") => values
            .iter()
            .map(|v| quote(v, '\''))
            .collect::<Vec<_>>()
            .join(","),
        Some("doublequote") => values
            .iter()
            .map(|v| quote(v, '"'))
            .collect::<Vec<_>>()
            .join(","),
        Some("sqlstring") => values
            .iter()
            .map(|v| format!("'{}'", v.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(","),
        Some("csv") => values.join(","),
        Some("raw") => values.join(","),
        None if multi && values.len() > 1 => format!("{{{}}}", values.join(",")),
        None => values.join(","),
        Some(other) => bail!("variable format {other:?} not supported by the tests"),
    })
}

fn substitute_variables(sql: &str, vars: &[Variable], sel: &Selection) -> Result<String> {
    let resolve = |name: &str, format: Option<&str>| -> Result<Option<String>> {
        let Some(var) = vars.iter().find(|v| v.name == name) else {
            return Ok(None);
        };
        if let Some(value) = sel.constants.get(name) {
            return Ok(Some(value.clone()));
        }
        match var.kind.as_str() {
            "constant" | "textbox" => Ok(var.query.clone()),
            _ => match sel.values.get(name) {
                Some(values) => format_values(values, format, var.multi).map(Some),
                None => match (&var.all_value, var.include_all) {
                    (Some(all), true) if format != Some("text") => Ok(Some(all.clone())),
                    _ => bail!(
                        "variable {name} has All selected but no custom allValue: its SQL would \
                         depend on the data (and is invalid when there is none)"
                    ),
                },
            },
        }
    };
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| anyhow!("unterminated ${{ in {sql}"))?;
            let body = &inner[..end];
            let (name, format) = match body.split_once(':') {
                Some((n, f)) => (n, Some(f)),
                None => (body, None),
            };
            match resolve(name, format)? {
                Some(v) => out.push_str(&v),
                None => bail!("unknown variable ${{{body}}}"),
            }
            rest = &inner[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..len];
            match resolve(name, None)? {
                Some(v) if !name.starts_with("__") => out.push_str(&v),
                _ => {
                    // Not a variable (a macro such as $__timeFilter): keep it.
                    out.push('$');
                    out.push_str(name);
                }
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_macros(sql: &str, sel: &Selection) -> Result<String> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find("$__") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 3..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..len];
        let mut tail = &after[len..];
        let mut args: Vec<String> = Vec::new();
        if let Some(inner) = tail.strip_prefix('(') {
            let end = inner
                .find(')')
                .ok_or_else(|| anyhow!("unterminated $__{name}( in {sql}"))?;
            args = inner[..end]
                .split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect();
            tail = &inner[end + 1..];
        }
        let one = |args: &[String]| -> Result<String> {
            match args {
                [a] => Ok(a.clone()),
                _ => bail!("$__{name} takes one column, got {args:?}"),
            }
        };
        let (from, to) = (sel.from, sel.to);
        let expanded = match name {
            "timeFilter" => {
                let c = one(&args)?;
                format!("{c} >= toDateTime({from}) AND {c} <= toDateTime({to})")
            }
            "dateFilter" => {
                let c = one(&args)?;
                format!(
                    "{c} >= toDate('{}') AND {c} <= toDate('{}')",
                    civil_date(from),
                    civil_date(to)
                )
            }
            "fromTime" => format!("toDateTime({from})"),
            "toTime" => format!("toDateTime({to})"),
            other => bail!("macro $__{other} is not supported by the tests"),
        };
        out.push_str(&expanded);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// The SQL Grafana runs for `sql` in the state `sel`: variables replaced, then macros
/// expanded (see the module docs).
///
/// # Errors
/// For an unknown variable or macro, or anything starting with `$` left afterwards.
pub fn render(sql: &str, vars: &[Variable], sel: &Selection) -> Result<String> {
    let with_vars = substitute_variables(sql, vars, sel)?;
    let rendered = expand_macros(&with_vars, sel)?;
    if let Some(i) = rendered.find('$') {
        let end = (i + 30).min(rendered.len());
        bail!(
            "unsubstituted `{}` left in: {rendered}",
            rendered.get(i..end).unwrap_or("$")
        );
    }
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<Variable> {
        vec![
            Variable {
                name: "database".into(),
                kind: "constant".into(),
                query: Some("livegate".into()),
                multi: false,
                include_all: false,
                all_value: None,
                datasource_uid: None,
            },
            Variable {
                name: "team".into(),
                kind: "query".into(),
                query: Some("SELECT 1".into()),
                multi: true,
                include_all: true,
                all_value: Some("'__all__'".into()),
                datasource_uid: None,
            },
        ]
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(951_782_400), "2000-02-29");
        assert_eq!(civil_date(1_700_000_000), "2023-11-14");
        assert_eq!(civil_datetime(1_700_000_000), "2023-11-14 22:13:20");
    }

    #[test]
    fn renders_like_grafana() -> Result<()> {
        let sql = "SELECT 1 FROM ${database}.t WHERE $__timeFilter(ts) AND $__dateFilter(day) \
                   AND team_id IN (${team:singlequote})";
        let mut sel = Selection {
            from: 1_700_000_000,
            to: 1_700_086_400,
            ..Selection::default()
        };
        assert_eq!(
            render(sql, &vars(), &sel)?,
            "SELECT 1 FROM livegate.t WHERE ts >= toDateTime(1700000000) AND ts <= \
             toDateTime(1700086400) AND day >= toDate('2023-11-14') AND day <= \
             toDate('2023-11-15') AND team_id IN ('__all__')"
        );
        sel.values
            .insert("team".into(), vec!["a".into(), "o'b".into()]);
        sel.constants.insert("database".into(), "t_1".into());
        let out = render(sql, &vars(), &sel)?;
        assert!(out.contains("FROM t_1.t"), "{out}");
        assert!(out.ends_with("IN ('a','o\\'b')"), "{out}");
        assert!(render("SELECT $__timeInterval(ts)", &vars(), &sel).is_err());
        assert!(render("SELECT ${nope}", &vars(), &sel).is_err());
        assert!(render("SELECT $other", &vars(), &sel).is_err());
        Ok(())
    }
}

/// One PromQL target of a panel.
#[derive(Debug, Clone)]
pub struct PromTarget {
    /// The panel's `id`.
    pub panel_id: i64,
    /// The panel's title.
    pub title: String,
    /// The panel's `type`.
    pub panel_type: String,
    /// The target's `expr`.
    pub expr: String,
    /// The datasource uid of the target, else of the panel.
    pub datasource_uid: Option<String>,
}

/// Every target of every panel that has an `expr` (PromQL).
pub fn prom_targets(dashboard: &Value) -> Vec<PromTarget> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(expr) = t.get("expr").and_then(Value::as_str) else {
                continue;
            };
            let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default();
            out.push(PromTarget {
                panel_id: p.get("id").and_then(Value::as_i64).unwrap_or(-1),
                title: s("title").to_string(),
                panel_type: s("type").to_string(),
                expr: expr.to_string(),
                datasource_uid: uid(t.get("datasource")).or_else(|| uid(p.get("datasource"))),
            });
        }
    }
    out
}

/// The livegate metric names (`livegate_…`) a PromQL expression reads.
///
/// ```
/// use livegate_deploy_tests::grafana::metric_names;
/// let names = metric_names(r#"sum by (le) (rate(livegate_gateway_turn_seconds_bucket{model=~"$model"}[5m]))"#);
/// assert_eq!(names.into_iter().collect::<Vec<_>>(), ["livegate_gateway_turn_seconds_bucket"]);
/// ```
pub fn metric_names(expr: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("livegate_") {
        // Only a whole identifier: not inside a longer name or a label value.
        let before = rest[..i].chars().next_back();
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '"') {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// The family a sample name belongs to, as the exposition's `# TYPE` line names it: a
/// histogram's `_bucket`, `_count` and `_sum` and a counter's `_total` stripped.
///
/// ```
/// use livegate_deploy_tests::grafana::family;
/// assert_eq!(family("livegate_gateway_turn_seconds_bucket"), "livegate_gateway_turn_seconds");
/// assert_eq!(family("livegate_gateway_turns_total"), "livegate_gateway_turns");
/// assert_eq!(family("livegate_gateway_sessions_active"), "livegate_gateway_sessions_active");
/// ```
pub fn family(sample: &str) -> &str {
    ["_bucket", "_count", "_sum", "_total"]
        .iter()
        .find_map(|s| sample.strip_suffix(s))
        .unwrap_or(sample)
}
