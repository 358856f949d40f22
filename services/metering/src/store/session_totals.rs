//! A session's usage totals: its deduplicated `usage_events` rows summed
//! ([`Store::session_totals`]), from which the consumer builds the session's `sessions` row.

use super::{IN_CHUNK, Store, StoreError, err, placeholders};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::HashMap;
use std::str::FromStr;

/// A session's usage totals, summed over its deduplicated `usage_events` rows.
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize)]
#[expect(
    missing_docs,
    reason = "one field per column: the columns are documented in the migration"
)]
pub struct SessionTotals {
    pub session_id: String,
    pub events: u64,
    pub reports: u64,
    pub prompt_tokens: u64,
    pub response_tokens: u64,
    pub cached_tokens: u64,
    pub tool_use_tokens: u64,
    pub thoughts_tokens: u64,
    pub total_tokens: u64,
    pub input_characters: u64,
    pub output_characters: u64,
    pub input_audio_seconds: f64,
    pub output_audio_seconds: f64,
    pub input_video_seconds: f64,
    pub input_images: u64,
    pub input_cost_usd: String,
    pub output_cost_usd: String,
    pub cost_usd: String,
}

impl SessionTotals {
    /// A money column as a decimal (0 for an empty or unparsable value).
    pub fn money(s: &str) -> Decimal {
        Decimal::from_str(s.trim()).unwrap_or_default().normalize()
    }
}

impl Store {
    /// Totals of the given sessions' usage rows, deduplicated by `FINAL`.
    ///
    /// # Errors
    /// [`StoreError`] when a query fails.
    pub async fn session_totals(
        &self,
        session_ids: &[&str],
    ) -> Result<HashMap<String, SessionTotals>, StoreError> {
        let mut totals = HashMap::new();
        for chunk in session_ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT session_id, count(), countIf(seq > 0), sum(prompt_tokens), \
                 sum(response_tokens), sum(cached_tokens), sum(tool_use_tokens), \
                 sum(thoughts_tokens), sum(total_tokens), sum(input_characters), \
                 sum(output_characters), sum(input_audio_seconds), sum(output_audio_seconds), \
                 sum(input_video_seconds), sum(input_images), toString(sum(input_cost_usd)), \
                 toString(sum(output_cost_usd)), toString(sum(cost_usd)) \
                 FROM {} FINAL WHERE session_id IN ({}) GROUP BY session_id",
                self.table("usage_events"),
                placeholders(chunk.len())
            );
            let mut q = self.client.query(&sql);
            for s in chunk {
                q = q.bind(*s);
            }
            for t in q
                .fetch_all::<SessionTotals>()
                .await
                .map_err(err("sum session usage"))?
            {
                totals.insert(t.session_id.clone(), t);
            }
        }
        Ok(totals)
    }
}
