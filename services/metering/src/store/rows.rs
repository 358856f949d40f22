//! The rows metering writes, one type per table (`usage_events`, `sessions`), their money
//! encoding ([`usd`], [`from_usd`]) and the inserts that write them as given.

use super::{Store, StoreError, err};
use clickhouse::Row;
use livegate_common::pricing::COST_SCALE;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// USD as `Decimal(38, 12)`'s wire form: an integer count of 1e-12 USD.
///
/// After rounding, scale ≤ COST_SCALE, so the exponent cannot underflow and the multiplier is
/// at most 10^12. The product fits i128 while |d| < i128::MAX / 10^12 (about 1.7e26 USD),
/// which covers every value a `Decimal(38, 12)` column can hold (|d| < 10^26). A usage row
/// never comes near it (`events::MAX_EVENT_USD` sets one aside from 10^20 USD), but `d` itself
/// may reach about 7.9e28, so the product is checked and saturates rather than panicking or
/// wrapping to a wrong (even negative) amount.
pub(crate) fn usd(d: Decimal) -> i128 {
    let d = d.round_dp(COST_SCALE);
    let scale = d.scale();
    let units = d.mantissa().checked_mul(10i128.pow(COST_SCALE - scale));
    match units {
        Some(u) => u,
        None if d.is_sign_negative() => i128::MIN,
        None => i128::MAX,
    }
}

/// The inverse of [`usd`].
pub(crate) fn from_usd(units: i128) -> Decimal {
    Decimal::try_from_i128_with_scale(units, COST_SCALE)
        .unwrap_or(Decimal::MAX)
        .normalize()
}

/// One `usage_events` row (every column but `inserted_at`, which defaults to `now()`).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[expect(
    missing_docs,
    reason = "one field per column: the columns are documented in the migration"
)]
pub struct UsageRow {
    pub event_id: String,
    pub session_id: String,
    pub seq: u64,
    /// Seconds since the epoch (`DateTime('UTC')`).
    pub ts: u32,
    pub key_id: String,
    pub team_id: String,
    pub user_id: String,
    pub project: String,
    pub location: String,
    pub model: String,
    pub gateway_id: String,
    pub prompt_tokens: u64,
    pub response_tokens: u64,
    pub cached_tokens: u64,
    pub tool_use_tokens: u64,
    pub thoughts_tokens: u64,
    pub total_tokens: u64,
    pub input_text_tokens: u64,
    pub input_audio_tokens: u64,
    pub input_video_tokens: u64,
    pub input_image_tokens: u64,
    pub output_text_tokens: u64,
    pub output_audio_tokens: u64,
    /// Migration 5.
    pub output_video_tokens: u64,
    pub input_characters: u64,
    pub input_audio_seconds: f64,
    pub input_video_seconds: f64,
    pub input_video_frames: u64,
    pub input_images: u64,
    pub output_characters: u64,
    pub output_audio_seconds: f64,
    /// Money: 1e-12 USD units (`Decimal(38, 12)`'s wire form).
    pub input_text_cost_usd: i128,
    pub input_audio_cost_usd: i128,
    pub input_image_cost_usd: i128,
    pub input_video_cost_usd: i128,
    pub cached_cost_usd: i128,
    pub tool_use_cost_usd: i128,
    pub output_text_cost_usd: i128,
    pub output_audio_cost_usd: i128,
    /// Migration 5.
    pub output_video_cost_usd: i128,
    pub thoughts_cost_usd: i128,
    pub input_cost_usd: i128,
    pub output_cost_usd: i128,
    pub cost_usd: i128,
    pub priced: u8,
    pub pricing_entry: String,
}

/// One `usage_receipts` row (every column but `inserted_at`).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct ReceiptRow {
    /// The usage row's event id.
    pub event_id: String,
    /// Its session.
    pub session_id: String,
    /// Its time (epoch seconds).
    pub ts: u32,
    /// Its key.
    pub key_id: String,
    /// Its team.
    pub team_id: String,
    /// The model as the session named it.
    pub model: String,
    /// Google's `trafficType` as sent (empty when not sent).
    pub traffic_type: String,
    /// 1 for provisioned throughput: recorded at cost 0.
    pub prepaid: u8,
    /// Prompt tokens beyond Google's per-modality details (priced as TEXT).
    pub input_residual_tokens: u64,
    /// VIDEO output tokens (in `usage_events.output_text_tokens` too).
    pub output_video_tokens: u64,
    /// The `usageMetadata` object exactly as the upstream sent it (empty for a `:end` row).
    pub usage_json: String,
    /// The price-table key that priced it (empty when unpriced).
    pub pricing_entry: String,
    /// Which tables were in force (`Pricing::version`).
    pub pricing_version: String,
}

/// A priced usage event: its `usage_events` row and its receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct PricedEvent {
    /// The money row.
    pub usage: UsageRow,
    /// The receipt.
    pub receipt: ReceiptRow,
}

/// One `sessions` row (every column but `inserted_at`).
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
#[expect(
    missing_docs,
    reason = "one field per column: the columns are documented in the migration"
)]
pub struct SessionRow {
    pub session_id: String,
    pub key_id: String,
    pub team_id: String,
    pub user_id: String,
    pub project: String,
    pub location: String,
    pub model: String,
    pub gateway_id: String,
    pub started_at: u32,
    pub ended_at: u32,
    pub duration_s: f64,
    pub close_code: u16,
    pub close_reason: String,
    pub closed_by: String,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Upstream connections the session used (migration 6; 0 = not reported).
    pub upstream_connections: u32,
    /// Transparent resumptions that succeeded (migration 6).
    pub resumptions: u32,
    /// Reports the gateway says it published.
    pub reports: u64,
    /// Reports the totals include (migration 7): below `reports` when the row was written
    /// without all of them, and the lease reconciler completes it when they land.
    pub reports_stored: u64,
    /// Usage rows (reports and the `:end` row) the totals include.
    pub events_counted: u64,
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
    pub input_cost_usd: i128,
    pub output_cost_usd: i128,
    pub cost_usd: i128,
    /// `ReplacingMergeTree` version: `events_counted + 1`, so a recount that saw more wins.
    pub version: u64,
}

impl Store {
    /// Writes `rows` to `table` in one `INSERT` (atomic in ClickHouse for a batch this size);
    /// nothing at all for no rows. `op` names the step in errors.
    pub(super) async fn insert_rows<T>(
        &self,
        table: &str,
        op: &'static str,
        rows: &[&T],
    ) -> Result<(), StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert_unescaped::<T>(&self.table(table))
            .await
            .map_err(err(op))?;
        for row in rows {
            insert.write(*row).await.map_err(err(op))?;
        }
        insert.end().await.map_err(err(op))
    }

    /// Inserts usage rows in one `INSERT`.
    ///
    /// # Errors
    /// [`StoreError`] when the insert fails.
    pub async fn insert_usage(&self, rows: &[&UsageRow]) -> Result<(), StoreError> {
        self.insert_rows("usage_events", "insert usage_events", rows)
            .await
    }

    /// Inserts receipts in one `INSERT`. Called before [`Store::insert_usage`] for the same
    /// events, so a stored usage row always has its receipt (a retry may write a receipt
    /// twice, which the `ReplacingMergeTree` absorbs).
    ///
    /// # Errors
    /// [`StoreError`] when the insert fails.
    pub async fn insert_receipts(&self, rows: &[&ReceiptRow]) -> Result<(), StoreError> {
        self.insert_rows("usage_receipts", "insert usage_receipts", rows)
            .await
    }

    /// Inserts session rows.
    ///
    /// # Errors
    /// [`StoreError`] when the insert fails.
    pub async fn insert_sessions(&self, rows: &[SessionRow]) -> Result<(), StoreError> {
        let rows: Vec<&SessionRow> = rows.iter().collect();
        self.insert_rows("sessions", "insert sessions", &rows).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn usd_round_trips_at_twelve_places() {
        for s in [
            "0",
            "0.000001234567",
            "12.5",
            "0.0000000000005",
            "123456789.123456789012",
        ] {
            let d = Decimal::from_str(s).unwrap();
            let units = usd(d);
            assert_eq!(from_usd(units), d.round_dp(12).normalize(), "{s}");
        }
        assert_eq!(usd(Decimal::from_str("0.0008").unwrap()), 800_000_000);
    }

    #[test]
    fn usd_fits_i128_up_to_what_the_column_holds() {
        // 10^26 USD is past the largest Decimal(38, 12) value; it still fits (10^38 units).
        let d = Decimal::from_i128_with_scale(10i128.pow(26), 0);
        assert_eq!(usd(d), 10i128.pow(38));
        assert_eq!(usd(-d), -(10i128.pow(38)));
    }

    #[test]
    fn usd_saturates_instead_of_wrapping() {
        // Decimal::MAX (what pricing saturates to) is 7.9e28 USD: 7.9e40 units, past i128.
        assert_eq!(usd(Decimal::MAX), i128::MAX);
        assert_eq!(usd(Decimal::MIN), i128::MIN);
    }
}
