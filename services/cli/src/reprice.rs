//! `livegate spend --reprice FILE`: the stored usage of a period priced again with another
//! price table, next to what was billed, per group.
//!
//! The table is the one metering would use with `PRICING_FILE=FILE` (the built-in table with
//! FILE on top), and the rules are metering's own (`livegate_common::pricing`). Token counts
//! come from each row's receipt (`usage_receipts.usage_json`, Google's `usageMetadata` as sent)
//! and the measurements (characters, seconds, images) from `usage_events`; rows written before
//! receipts existed (migration 3) are repriced from their `usage_events` token columns, whose
//! per-modality split of cached and tool-use tokens is not stored (they price as text).

use crate::spend::{By, ClickHouseArgs, money};
use anyhow::Context;
use livegate_common::pricing::{ByModality, Pricing, Usage, usage_from_metadata};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct StoredRow {
    group: String,
    model: String,
    prompt_tokens: u64,
    response_tokens: u64,
    cached_tokens: u64,
    tool_use_tokens: u64,
    thoughts_tokens: u64,
    input_text_tokens: u64,
    input_audio_tokens: u64,
    input_video_tokens: u64,
    input_image_tokens: u64,
    output_text_tokens: u64,
    output_audio_tokens: u64,
    input_characters: u64,
    input_audio_seconds: f64,
    input_video_seconds: f64,
    input_images: u64,
    output_characters: u64,
    output_audio_seconds: f64,
    cost_usd: String,
    usage_json: String,
}

/// The query: every usage row of the period with its receipt's `usageMetadata` (empty when
/// the row has no receipt). `ANY LEFT JOIN … USING` reads on ClickHouse 18.16 and current.
fn sql(by: By, days: u64, db: &str, with_key: bool) -> String {
    let group = by.usage_events_group();
    let key_filter = if with_key { " AND key_id = ?" } else { "" };
    format!(
        "SELECT `group`, model, prompt_tokens, response_tokens, cached_tokens, tool_use_tokens, \
         thoughts_tokens, input_text_tokens, input_audio_tokens, input_video_tokens, \
         input_image_tokens, output_text_tokens, output_audio_tokens, input_characters, \
         input_audio_seconds, input_video_seconds, input_images, output_characters, \
         output_audio_seconds, cost, usage_json FROM ( \
         SELECT event_id, {group} AS `group`, model, prompt_tokens, response_tokens, \
         cached_tokens, tool_use_tokens, thoughts_tokens, input_text_tokens, input_audio_tokens, \
         input_video_tokens, input_image_tokens, output_text_tokens, output_audio_tokens, \
         input_characters, input_audio_seconds, input_video_seconds, input_images, \
         output_characters, output_audio_seconds, toString(cost_usd) AS cost \
         FROM {db}.usage_events FINAL WHERE toDate(ts) > today() - {days}{key_filter}) \
         ANY LEFT JOIN (SELECT event_id, usage_json FROM {db}.usage_receipts FINAL \
         WHERE toDate(ts) > today() - {days}) USING event_id"
    )
}

/// The usage a stored row stands for.
fn usage_of(r: &StoredRow) -> Usage {
    let tokens = if r.usage_json.is_empty() {
        None
    } else {
        usage_from_metadata(&r.usage_json).ok()
    };
    let tokens = tokens.unwrap_or_else(|| Usage {
        prompt_tokens: r.prompt_tokens,
        prompt: ByModality {
            text: r.input_text_tokens,
            audio: r.input_audio_tokens,
            image: r.input_image_tokens,
            video: r.input_video_tokens,
        },
        response_tokens: r.response_tokens,
        response: ByModality {
            text: r.output_text_tokens,
            audio: r.output_audio_tokens,
            ..ByModality::default()
        },
        cached_tokens: r.cached_tokens,
        tool_use_tokens: r.tool_use_tokens,
        thoughts_tokens: r.thoughts_tokens,
        ..Usage::default()
    });
    Usage {
        input_characters: r.input_characters,
        input_audio_seconds: r.input_audio_seconds,
        input_video_seconds: r.input_video_seconds,
        input_images: r.input_images,
        output_characters: r.output_characters,
        output_audio_seconds: r.output_audio_seconds,
        ..tokens
    }
}

/// One group's figures.
#[derive(Debug, Default)]
struct Line {
    events: u64,
    billed: Decimal,
    repriced: Decimal,
    unpriced: u64,
}

/// Why a sum refused: a repriced figure beyond what `Decimal` holds.
const OVERFLOW: &str = "repriced cost overflows (more than 7.9e28 USD): the new table has an \
                        absurd price for the stored usage";

impl Line {
    /// Adds `other` in, refusing to overflow: `Decimal`'s `+` would panic, and pricing
    /// saturates a cost it cannot hold, so an absurd price in the new table is an error,
    /// never a crash or a wrong figure.
    fn add(&mut self, other: &Line) -> anyhow::Result<()> {
        self.events += other.events;
        self.unpriced += other.unpriced;
        let sum = |a: Decimal, b: Decimal| {
            a.checked_add(b)
                .filter(|s| *s < Decimal::MAX)
                .context(OVERFLOW)
        };
        self.billed = sum(self.billed, other.billed)?;
        self.repriced = sum(self.repriced, other.repriced)?;
        Ok(())
    }
}

/// Reprices the period and writes the comparison.
pub(crate) async fn run(
    table: &Path,
    by: By,
    days: u64,
    key: Option<&str>,
    json: bool,
    clickhouse: &ClickHouseArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let pricing = Pricing::load(Some(table))
        .with_context(|| format!("cannot load the price table {}", table.display()))?;
    let db = &clickhouse.clickhouse_database;
    let client = clickhouse.client();
    let mut query = client.query(&sql(by, days, db, key.is_some()));
    if let Some(k) = key {
        query = query.bind(k);
    }
    let mut cursor = query
        .fetch::<StoredRow>()
        .context("cannot query usage_events")?;
    let mut lines: BTreeMap<String, Line> = BTreeMap::new();
    while let Some(r) = cursor.next().await.with_context(|| {
        format!(
            "cannot read usage from ClickHouse at {} (is the schema applied?)",
            clickhouse.clickhouse_url
        )
    })? {
        let priced = pricing.price(&r.model, &usage_of(&r));
        let line = lines.entry(r.group.clone()).or_default();
        let billed = Decimal::from_str(r.cost_usd.trim())
            .with_context(|| format!("a stored cost_usd {:?} is not a decimal", r.cost_usd))?;
        line.add(&Line {
            events: 1,
            billed,
            repriced: priced.cost.total(),
            unpriced: u64::from(priced.entry.is_none()),
        })
        .with_context(|| format!("group {:?} (model {:?})", r.group, r.model))?;
    }
    let mut total = Line::default();
    for l in lines.values() {
        total.add(l).context("the total")?;
    }
    let usd = |d: Decimal| money(&d.normalize().to_string());
    if json {
        let groups: Vec<_> = lines
            .iter()
            .map(|(g, l)| {
                serde_json::json!({
                    "group": g, "events": l.events, "billed_usd": usd(l.billed),
                    "repriced_usd": usd(l.repriced), "difference_usd": usd(l.repriced - l.billed),
                    "unpriced_events": l.unpriced,
                })
            })
            .collect();
        let v = serde_json::json!({
            "pricing_version": pricing.version().as_ref(),
            "groups": groups,
            "total": {
                "events": total.events, "billed_usd": usd(total.billed),
                "repriced_usd": usd(total.repriced),
                "difference_usd": usd(total.repriced - total.billed),
                "unpriced_events": total.unpriced,
            },
        });
        writeln!(out, "{v}")?;
        return Ok(());
    }
    writeln!(
        out,
        "repriced with {} (pricing version {}), last {days} day(s)",
        table.display(),
        pricing.version()
    )?;
    let title = format!("{by:?}").to_uppercase();
    writeln!(
        out,
        "{title:<28} {:>9} {:>16} {:>16} {:>16}",
        "EVENTS", "BILLED_USD", "REPRICED_USD", "DIFFERENCE_USD"
    )?;
    for (g, l) in lines
        .iter()
        .chain(std::iter::once((&"TOTAL".to_string(), &total)))
    {
        writeln!(
            out,
            "{:<28} {:>9} {:>16} {:>16} {:>16}",
            if g.is_empty() { "-" } else { g },
            l.events,
            format!("${}", usd(l.billed)),
            format!("${}", usd(l.repriced)),
            format!("${}", usd(l.repriced - l.billed)),
        )?;
    }
    if total.unpriced > 0 {
        writeln!(
            out,
            "{} event(s) have no price in the new table (counted at 0)",
            total.unpriced
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_joins_receipts_and_filters() {
        let q = sql(By::Day, 30, "livegate", true);
        assert!(q.contains("toString(toDate(ts)) AS `group`"));
        assert!(q.contains(
            "FROM livegate.usage_events FINAL WHERE toDate(ts) > today() - 30 AND key_id = ?"
        ));
        assert!(q.contains(
            "ANY LEFT JOIN (SELECT event_id, usage_json FROM livegate.usage_receipts FINAL"
        ));
    }
}
