//! `livegate-deploy-tests`: checks the deployment material without Docker or a cluster.
//!
//! The tests (in `tests/it`) parse `docker-compose.yml`, `deploy/docker/Dockerfile`, every
//! manifest under `deploy/k8s` and the Grafana files under `deploy/grafana`, and hold them to
//! the contracts in DESIGN.md / README.md (env var names, ports, health endpoints, drain
//! timing). The dashboard's SQL runs against a real ClickHouse from `livegate-test-support`.
//!
//! This library holds the helpers they share:
//! - [`yaml_documents`]: multi-document YAML (merge keys applied) as JSON values;
//! - [`interpolate`]: Docker Compose variable interpolation (`${VAR:-default}`, `${VAR:?err}`…);
//! - [`known_env_vars`]: every variable name the services read, taken from their sources;
//! - [`dockerfile_stages`]: a Dockerfile's stages and instructions;
//! - [`markdown_sql`]: the SQL queries a README section shows;
//! - [`grafana`]: the dashboard's queries, with Grafana's macros and variables substituted
//!   the way Grafana and the ClickHouse plugin substitute them.

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

pub mod grafana;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .map_or_else(|| here.to_path_buf(), Path::to_path_buf)
}

/// Reads `rel` (relative to the repository root) as UTF-8.
///
/// # Errors
/// When the file is missing or unreadable.
pub fn read(rel: impl AsRef<Path>) -> Result<String> {
    let path = repo_root().join(rel.as_ref());
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Every non-empty document of a (multi-document) YAML text, with `<<` merge keys applied,
/// converted to JSON values (all our YAML uses string keys).
///
/// # Errors
/// When the YAML is invalid or a document has a non-string key.
pub fn yaml_documents(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let mut value = serde_norway::Value::deserialize(doc)
            .with_context(|| format!("YAML document {}", i + 1))?;
        value
            .apply_merge()
            .with_context(|| format!("merge keys in YAML document {}", i + 1))?;
        if value.is_null() {
            continue;
        }
        out.push(
            serde_json::to_value(&value)
                .with_context(|| format!("YAML document {} as JSON", i + 1))?,
        );
    }
    Ok(out)
}

/// The only document of a YAML text.
///
/// # Errors
/// When the YAML is invalid or holds other than one document.
pub fn yaml_document(text: &str) -> Result<Value> {
    let mut docs = yaml_documents(text)?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        n => bail!("expected one YAML document, found {n}"),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Docker Compose interpolation of one string: `$$` → `$`; `$VAR` and `${VAR}`;
/// `${VAR:-default}` / `${VAR-default}`; `${VAR:?error}` / `${VAR?error}` (an error naming
/// the message, as compose refuses to start); `${VAR:+alt}` / `${VAR+alt}`. Defaults may
/// themselves hold interpolations. An unset variable without a default is empty.
///
/// # Errors
/// For `${VAR:?…}` with VAR unset or empty (`${VAR?…}`: unset), or malformed syntax.
pub fn interpolate(s: &str, env: &HashMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(inner) = after.strip_prefix('{') {
            let mut depth = 1usize;
            let mut end = None;
            for (j, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| anyhow!("unterminated ${{…}} in {s:?}"))?;
            out.push_str(&expand(&inner[..end], env)?);
            rest = &inner[end + 1..];
        } else {
            let len = after.find(|c| !is_name_char(c)).unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(env.get(&after[..len]).map_or("", String::as_str));
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand(body: &str, env: &HashMap<String, String>) -> Result<String> {
    let len = body.find(|c| !is_name_char(c)).unwrap_or(body.len());
    let (name, op) = body.split_at(len);
    if name.is_empty() {
        bail!("invalid interpolation ${{{body}}}");
    }
    let value = env.get(name);
    let set = value.is_some();
    let non_empty = value.is_some_and(|v| !v.is_empty());
    let current = value.cloned().unwrap_or_default();
    if op.is_empty() {
        return Ok(current);
    }
    for (prefix, need_non_empty) in [
        (":-", true),
        (":?", true),
        (":+", true),
        ("-", false),
        ("?", false),
        ("+", false),
    ] {
        let Some(arg) = op.strip_prefix(prefix) else {
            continue;
        };
        let present = if need_non_empty { non_empty } else { set };
        return match prefix.trim_start_matches(':') {
            "-" if present => Ok(current),
            "-" => interpolate(arg, env),
            "?" if present => Ok(current),
            "?" => bail!("required variable {name} is missing a value: {arg}"),
            _ if present => interpolate(arg, env),
            _ => Ok(String::new()),
        };
    }
    bail!("invalid interpolation ${{{body}}}")
}

/// [`interpolate`] applied to every string inside `value` (keys are left alone, as compose
/// does).
///
/// # Errors
/// The first interpolation error, with its JSON path.
pub fn interpolate_value(value: &Value, env: &HashMap<String, String>) -> Result<Value> {
    fn walk(v: &Value, env: &HashMap<String, String>, path: &str) -> Result<Value> {
        Ok(match v {
            Value::String(s) => {
                Value::String(interpolate(s, env).with_context(|| format!("at {path}"))?)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| walk(x, env, &format!("{path}/{i}")))
                    .collect::<Result<_>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, x)| Ok((k.clone(), walk(x, env, &format!("{path}/{k}"))?)))
                    .collect::<Result<_>>()?,
            ),
            other => other.clone(),
        })
    }
    walk(value, env, "")
}

/// Whether `s` looks like an environment variable name (`[A-Z][A-Z0-9_]*`).
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The services' configuration sources whose `pub const NAME: &str = "VAR";` lines name the
/// environment variables they read.
pub const ENV_SOURCES: &[&str] = &[
    "services/common/src/env.rs",
    "services/common/src/nats.rs",
    "services/common/src/stream.rs",
    "services/common/src/telemetry.rs",
    "services/gateway/src/config.rs",
    "services/auth/src/config.rs",
    "services/metering/src/config.rs",
];

/// Every environment variable name the services read: the string constants of
/// [`ENV_SOURCES`] that look like variable names, plus `HOSTNAME` (the gateway's default id).
///
/// # Errors
/// When a source file is unreadable.
pub fn known_env_vars() -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::from(["HOSTNAME".to_string()]);
    for file in ENV_SOURCES {
        for line in read(file)?.lines() {
            let line = line.trim();
            if !line.starts_with("pub const ") || !line.contains(": &str = \"") {
                continue;
            }
            if let Some(value) = line.split('"').nth(1)
                && is_env_name(value)
            {
                names.insert(value.to_string());
            }
        }
    }
    Ok(names)
}

/// A humantime-style duration as whole seconds, rounded up (`500ms` → 1, `10s`, `5m`, `1h`,
/// `1m30s`).
///
/// # Errors
/// When the text is not such a duration.
pub fn duration_secs(s: &str) -> Result<u64> {
    let s = s.trim();
    let mut millis: u64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        bail!("empty duration");
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            bail!("bad duration {s:?}");
        }
        let n: u64 = rest[..digits].parse()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            other => bail!("unknown unit {other:?} in duration {s:?}"),
        };
        millis += n * factor;
        rest = &rest[unit_len..];
    }
    Ok(millis.div_ceil(1_000))
}

/// One stage of a Dockerfile.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The `AS` name, if any.
    pub name: Option<String>,
    /// The image or stage it starts `FROM`.
    pub base: String,
    /// Instructions after `FROM`: (upper-case keyword, arguments), continuation lines joined.
    pub instructions: Vec<(String, String)>,
}

impl Stage {
    /// Arguments of every instruction `keyword`.
    pub fn args(&self, keyword: &str) -> impl Iterator<Item = &str> {
        self.instructions
            .iter()
            .filter(move |(k, _)| k == keyword)
            .map(|(_, a)| a.as_str())
    }
}

/// The stages of a Dockerfile (comments, parser directives and blank lines skipped; lines
/// ending in `\` joined; `ARG`s before the first `FROM` ignored).
pub fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if !current.is_empty() && trimmed.starts_with('#') {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        logical.push(current);
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_string()),
                _ => None,
            };
            stages.push(Stage {
                name,
                base: words.first().map(|s| (*s).to_string()).unwrap_or_default(),
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((keyword, args));
        }
    }
    stages
}

/// `path` under `value` as a string (`/a/b/0/c` JSON pointer), if it is one.
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// The `KEY=value` or `{KEY: value}` environment of a compose service as pairs.
pub fn compose_environment(service: &Value) -> Vec<(String, String)> {
    match service.get("environment") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| match s.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (s.to_string(), String::new()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The SQL queries of the ```` ```sql ```` blocks in the section of `markdown` whose heading
/// line is `heading` (e.g. `"## Cost tracking"`), up to the next heading of the same or a
/// higher level: each block split on `;`, `--` comment lines dropped, empty pieces skipped.
///
/// # Errors
/// When there is no such heading.
pub fn markdown_sql(markdown: &str, heading: &str) -> Result<Vec<String>> {
    let level = heading.chars().take_while(|&c| c == '#').count();
    let mut lines = markdown.lines();
    lines
        .by_ref()
        .find(|l| l.trim_end() == heading)
        .with_context(|| format!("no heading {heading:?}"))?;
    let mut queries = Vec::new();
    let mut block: Option<String> = None;
    let mut fenced = false;
    for line in lines {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            if let Some(sql) = block.take() {
                queries.extend(
                    sql.split(';')
                        .map(str::trim)
                        .filter(|q| !q.is_empty())
                        .map(str::to_string),
                );
            } else if trimmed.trim_end() == "```sql" {
                block = Some(String::new());
            }
            fenced = !fenced;
            continue;
        }
        if let Some(sql) = block.as_mut() {
            if !trimmed.starts_with("--") {
                sql.push_str(line);
                sql.push('\n');
            }
            continue;
        }
        if !fenced {
            let hashes = line.chars().take_while(|&c| c == '#').count();
            if hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
                break;
            }
        }
    }
    Ok(queries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn interpolation_follows_compose() -> Result<()> {
        let e = env(&[("SET", "x"), ("EMPTY", "")]);
        assert_eq!(interpolate("a$$b", &e)?, "a$b");
        assert_eq!(interpolate("${SET}/$SET/${UNSET}", &e)?, "x/x/");
        assert_eq!(interpolate("${UNSET:-d}${EMPTY:-e}${EMPTY-f}", &e)?, "de");
        assert_eq!(interpolate("${UNSET:-${SET}y}", &e)?, "xy");
        assert_eq!(
            interpolate("${SET:+alt}${EMPTY:+no}${EMPTY+yes}", &e)?,
            "altyes"
        );
        assert_eq!(interpolate("${SET:?need it}", &e)?, "x");
        let err = interpolate("${EMPTY:?set EMPTY please}", &e).unwrap_err();
        assert!(err.to_string().contains("set EMPTY please"), "{err}");
        assert_eq!(interpolate("${EMPTY?unset only}", &e)?, "");
        assert!(interpolate("${UNSET?gone}", &e).is_err());
        assert!(interpolate("${oops", &e).is_err());
        Ok(())
    }

    #[test]
    fn sql_of_one_markdown_section() -> Result<()> {
        let md = "# T\n## A\n```sql\nSELECT 0\n```\n## B\ntext\n```sh\n# not a heading\nls\n```\n\
                  ```sql\n-- one\nSELECT 1\nFROM t;\n\n-- two\nSELECT 2;\n```\n### B.1\n```sql\n\
                  SELECT 3\n```\n## C\n```sql\nSELECT 4\n```\n";
        assert_eq!(
            markdown_sql(md, "## B")?,
            ["SELECT 1\nFROM t", "SELECT 2", "SELECT 3"]
        );
        assert_eq!(markdown_sql(md, "## A")?, ["SELECT 0"]);
        assert!(markdown_sql(md, "## Z").is_err());
        Ok(())
    }

    #[test]
    fn durations() -> Result<()> {
        assert_eq!(duration_secs("10s")?, 10);
        assert_eq!(duration_secs("500ms")?, 1);
        assert_eq!(duration_secs("1m30s")?, 90);
        assert_eq!(duration_secs("1h")?, 3600);
        assert!(duration_secs("soon").is_err());
        Ok(())
    }

    #[test]
    fn dockerfile_parsing() {
        let stages = dockerfile_stages(
            "# syntax=docker/dockerfile:1\nARG X=1\nFROM a:1 AS one\nRUN foo \\\n  # note\n  bar\nFROM one AS two\nUSER 10001\nENTRYPOINT [\"x\"]\n",
        );
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].name.as_deref(), Some("one"));
        assert_eq!(stages[0].args("RUN").collect::<Vec<_>>(), ["foo  bar"]);
        assert_eq!(stages[1].base, "one");
        assert_eq!(stages[1].args("USER").next(), Some("10001"));
    }

    #[test]
    fn env_names_come_from_the_sources() -> Result<()> {
        let names = known_env_vars()?;
        for n in [
            "NATS_URL",
            "CLICKHOUSE_URL",
            "AUTH_URL",
            "GATEWAY_LISTEN",
            "METERING_LISTEN",
            "LIVEGATE_LOG_FORMAT",
            "LIVEGATE_MASTER_KEY",
        ] {
            assert!(names.contains(n), "{n} not found in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains(':')));
        Ok(())
    }
}
