//! The spend reads: all-time spend per key or per team from `spend_daily FINAL`
//! ([`Store::spend_totals`]), which the spend feedback writes to the `livegate_spend` KV bucket.

use super::{IN_CHUNK, SessionTotals, Store, StoreError, err, placeholders};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::HashMap;

/// Which spend total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendBy {
    /// Per API key.
    Key,
    /// Per team.
    Team,
}

#[derive(Debug, Row, Deserialize)]
struct Total {
    id: String,
    usd: String,
}

impl Store {
    /// All-time spend per key id (`by = "key_id"`) or team id (`"team_id"`), from
    /// `spend_daily FINAL`. Ids without rows are absent.
    ///
    /// # Errors
    /// [`StoreError`] when a query fails.
    pub async fn spend_totals(
        &self,
        by: SpendBy,
        ids: &[String],
    ) -> Result<HashMap<String, Decimal>, StoreError> {
        let column = match by {
            SpendBy::Key => "key_id",
            SpendBy::Team => "team_id",
        };
        let mut totals = HashMap::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT {column}, toString(sum(cost_usd)) FROM {} FINAL WHERE {column} IN ({}) GROUP BY {column}",
                self.table("spend_daily"),
                placeholders(chunk.len())
            );
            let mut q = self.client.query(&sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for t in q.fetch_all::<Total>().await.map_err(err("sum spend"))? {
                totals.insert(t.id, SessionTotals::money(&t.usd));
            }
        }
        Ok(totals)
    }
}
