//! The reads that keep metering's writes idempotent: which events of a batch are already
//! stored ([`Store::stored_events`], so a redelivery writes nothing), and which version of a
//! session's row is stored ([`Store::session_versions`], so a rewritten row is counted and
//! logged once).

use super::{IN_CHUNK, Store, StoreError, UsageRow, err, placeholders};
use clickhouse::Row;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Row, Deserialize)]
struct Version {
    session_id: String,
    version: u64,
}

impl Store {
    /// The event ids among `rows` that are already stored completely: present in
    /// `usage_events` *and* in `spend_daily` (an insert interrupted between the table and its
    /// materialized view leaves the first without the second; such an event is written again,
    /// which the `ReplacingMergeTree`s absorb).
    ///
    /// # Errors
    /// [`StoreError`] when a query fails.
    pub async fn stored_events(&self, rows: &[&UsageRow]) -> Result<HashSet<String>, StoreError> {
        let mut in_usage: Vec<&UsageRow> = Vec::new();
        for chunk in rows.chunks(IN_CHUNK) {
            let sessions: Vec<&str> = chunk
                .iter()
                .map(|r| r.session_id.as_str())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let sql = format!(
                "SELECT event_id FROM {} WHERE session_id IN ({}) AND event_id IN ({})",
                self.table("usage_events"),
                placeholders(sessions.len()),
                placeholders(chunk.len()),
            );
            let mut q = self.client.query(&sql);
            for s in &sessions {
                q = q.bind(*s);
            }
            for r in chunk {
                q = q.bind(r.event_id.as_str());
            }
            let found: HashSet<String> = q
                .fetch_all::<String>()
                .await
                .map_err(err("look up stored events"))?
                .into_iter()
                .collect();
            in_usage.extend(chunk.iter().filter(|r| found.contains(&r.event_id)));
        }
        let mut stored = HashSet::new();
        for chunk in in_usage.chunks(IN_CHUNK) {
            let teams: HashSet<&str> = chunk.iter().map(|r| r.team_id.as_str()).collect();
            let keys: HashSet<&str> = chunk.iter().map(|r| r.key_id.as_str()).collect();
            let sql = format!(
                "SELECT event_id FROM {} WHERE team_id IN ({}) AND key_id IN ({}) AND event_id IN ({})",
                self.table("spend_daily"),
                placeholders(teams.len()),
                placeholders(keys.len()),
                placeholders(chunk.len()),
            );
            let mut q = self.client.query(&sql);
            for t in teams {
                q = q.bind(t);
            }
            for k in keys {
                q = q.bind(k);
            }
            for r in chunk {
                q = q.bind(r.event_id.as_str());
            }
            stored.extend(
                q.fetch_all::<String>()
                    .await
                    .map_err(err("look up stored spend rows"))?,
            );
        }
        Ok(stored)
    }

    /// The highest stored `sessions.version` per session id.
    ///
    /// # Errors
    /// [`StoreError`] when a query fails.
    pub async fn session_versions(
        &self,
        session_ids: &[&str],
    ) -> Result<HashMap<String, u64>, StoreError> {
        let mut versions = HashMap::new();
        for chunk in session_ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT session_id, max(version) FROM {} WHERE session_id IN ({}) GROUP BY session_id",
                self.table("sessions"),
                placeholders(chunk.len())
            );
            let mut q = self.client.query(&sql);
            for s in chunk {
                q = q.bind(*s);
            }
            for v in q
                .fetch_all::<Version>()
                .await
                .map_err(err("read session versions"))?
            {
                versions.insert(v.session_id, v.version);
            }
        }
        Ok(versions)
    }
}
