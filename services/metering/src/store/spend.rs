//! The spend reads behind budgets: [`Store::recompute_key_days`] rewrites the `spend_totals`
//! rows (one per key, day and team) of the key-days a batch touched from `spend_daily FINAL`,
//! and then the `spend_team_days` rows of their team-days from those; [`Store::spend_of_keys`]
//! and [`Store::spend_of_teams`] sum the per-day rows into all-time totals, which the spend
//! feedback writes to the `livegate_spend` KV bucket.
//!
//! What each refresh reads: the touched key-days' rows of `spend_daily` (its primary key
//! starts `(team_id, key_id, day)`), the touched team-days' key rows (`spend_totals_by_team`,
//! ordered `(team_id, day, key_id)`), and one row per day of each touched key and team. Never
//! the events of other days.

use super::{IN_CHUNK, SessionTotals, Store, StoreError, err, placeholders};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A key's spend on one UTC day, as the consumer marks it dirty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDay {
    /// `YYYY-MM-DD` (UTC), the `day` of the `spend_daily` rows.
    pub day: String,
    pub team_id: String,
    pub key_id: String,
}

impl KeyDay {
    /// The key-day of an event at `ts` (seconds since the epoch, UTC).
    pub fn of(team_id: &str, key_id: &str, ts: u32) -> Self {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(ts));
        let mut day = humantime::format_rfc3339_seconds(at).to_string();
        day.truncate("YYYY-MM-DD".len());
        Self {
            day,
            team_id: team_id.to_string(),
            key_id: key_id.to_string(),
        }
    }
}

#[derive(Debug, Row, Deserialize)]
struct Total {
    id: String,
    usd: String,
}

impl Store {
    /// Rewrites the `spend_totals` rows of `dirty` (and of any other key-day in the same
    /// teams × keys × days cross product, which is harmless: each row is recomputed whole) from
    /// `spend_daily FINAL`.
    ///
    /// # Errors
    /// [`StoreError`] when a statement fails.
    pub async fn recompute_key_days(&self, dirty: &[KeyDay]) -> Result<(), StoreError> {
        // One statement per day and chunk of keys: a batch touches one or two days.
        let mut by_day: BTreeMap<&str, Vec<&KeyDay>> = BTreeMap::new();
        for kd in dirty {
            by_day.entry(kd.day.as_str()).or_default().push(kd);
        }
        for (day, kds) in by_day {
            for chunk in kds.chunks(IN_CHUNK) {
                let teams: BTreeSet<&str> = chunk.iter().map(|k| k.team_id.as_str()).collect();
                let keys: BTreeSet<&str> = chunk.iter().map(|k| k.key_id.as_str()).collect();
                let sql = format!(
                    "INSERT INTO {totals} (key_id, day, team_id, cost_usd, events, version) \
                     SELECT key_id, day, team_id, sum(cost_usd), count(), count() \
                     FROM {daily} FINAL \
                     WHERE team_id IN ({t}) AND key_id IN ({k}) AND day = toDate(?) \
                     GROUP BY key_id, day, team_id",
                    totals = self.table("spend_totals"),
                    daily = self.table("spend_daily"),
                    t = placeholders(teams.len()),
                    k = placeholders(keys.len()),
                );
                let mut q = self.client.query(&sql);
                for t in teams {
                    q = q.bind(t);
                }
                for k in keys {
                    q = q.bind(k);
                }
                q.bind(day)
                    .execute()
                    .await
                    .map_err(err("recompute spend_totals"))?;
            }
            // The teams' days, from the key rows just written (read through the team-ordered
            // copy the view keeps).
            let teams: Vec<&str> = kds
                .iter()
                .map(|k| k.team_id.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for chunk in teams.chunks(IN_CHUNK) {
                let sql = format!(
                    "INSERT INTO {team_days} (team_id, day, cost_usd, events, version) \
                     SELECT team_id, day, sum(cost_usd), sum(events), sum(events) \
                     FROM {by_team} FINAL \
                     WHERE team_id IN ({t}) AND day = toDate(?) \
                     GROUP BY team_id, day",
                    team_days = self.table("spend_team_days"),
                    by_team = self.table("spend_totals_by_team"),
                    t = placeholders(chunk.len()),
                );
                let mut q = self.client.query(&sql);
                for t in chunk {
                    q = q.bind(*t);
                }
                q.bind(day)
                    .execute()
                    .await
                    .map_err(err("recompute spend_team_days"))?;
            }
        }
        Ok(())
    }

    /// All-time spend per key id, from `spend_totals FINAL`. Ids without rows are absent.
    ///
    /// # Errors
    /// [`StoreError`] when a query fails.
    pub async fn spend_of_keys(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Decimal>, StoreError> {
        self.sum_totals("spend_totals", "key_id", ids).await
    }

    /// All-time spend per team id, from `spend_team_days FINAL`. Ids without rows are absent.
    ///
    /// # Errors
    /// [`StoreError`] when a query fails.
    pub async fn spend_of_teams(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Decimal>, StoreError> {
        self.sum_totals("spend_team_days", "team_id", ids).await
    }

    async fn sum_totals(
        &self,
        table: &'static str,
        column: &'static str,
        ids: &[String],
    ) -> Result<HashMap<String, Decimal>, StoreError> {
        let mut totals = HashMap::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT {column}, toString(sum(cost_usd)) FROM {} FINAL WHERE {column} IN ({}) GROUP BY {column}",
                self.table(table),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_days_are_utc_days() {
        assert_eq!(KeyDay::of("t", "k", 0).day, "1970-01-01");
        // 2026-12-05T23:59:59Z and a second later.
        assert_eq!(KeyDay::of("t", "k", 1_796_515_199).day, "2026-12-05");
        assert_eq!(KeyDay::of("t", "k", 1_796_515_200).day, "2026-12-06");
    }
}
