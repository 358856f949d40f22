//! Key records in NATS KV (`livegate_keys`) and spend totals (`livegate_spend`), mirrored into
//! an in-memory index by KV watches so that every replica answers `CheckKey` from memory and
//! sees a create or revoke made on another replica within milliseconds.
//!
//! Layout of `livegate_keys`: `k.<sha256 hex>` → [`KeyRecord`] as JSON; `t.<team_id>` →
//! [`TeamRecord`] as JSON (a team's budget; deleted when cleared). `livegate_auth`
//! (auth's own bucket, which no other NATS user may read): `browser-token-secret` → the HMAC
//! secret for browser tokens (created once, shared by all replicas). `livegate_spend`:
//! `key.<key_id>` / `team.<team_id>` → decimal USD as text, written by metering.
//!
//! Before issue 14 the secret lived in `livegate_keys` as `secret.browser-token`, where every
//! gateway could read it. [`Store::open`] moves it: an existing secret is copied into
//! `livegate_auth` (so browser tokens minted before the upgrade stay valid) and then purged
//! from `livegate_keys`, history included.

use crate::keys::KeyRecord;
use crate::teams::{TEAM_PREFIX, TeamRecord};
use async_nats::jetstream::{self, kv};
use livegate_common::kv as kv_mirror;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

const RECORD_PREFIX: &str = "k.";
/// The secret's key in the auth bucket.
const BROWSER_SECRET_KEY: &str = "browser-token-secret";
/// Where the secret used to be, in the keys bucket (migrated away at start-up).
const LEGACY_BROWSER_SECRET_KEY: &str = "secret.browser-token";
/// History of the auth bucket: only the current secret matters.
const AUTH_HISTORY: i64 = 1;

/// The KV buckets auth uses (names configurable so tests can isolate).
#[derive(Debug, Clone, Copy)]
pub struct Buckets<'a> {
    /// Key records.
    pub keys: &'a str,
    /// Spend totals (read only).
    pub spend: &'a str,
    /// Auth's own bucket: the browser-token secret.
    pub auth: &'a str,
    /// Replicas the buckets are created (or widened) with.
    pub layout: livegate_common::stream::StreamLayout,
}

/// Storage failures (→ `UNAVAILABLE` / `INTERNAL` at the gRPC edge).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A KV operation failed; the NATS error is the source.
    #[error("NATS KV {op} failed")]
    Kv {
        /// The operation (`get`, `put`, `purge`).
        op: &'static str,
        /// What NATS said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Creating the browser-token secret failed, and no other replica's secret was there
    /// to read instead.
    #[error("the browser-token secret could not be created")]
    SecretMissing,
    #[error(transparent)]
    Mirror(#[from] kv_mirror::KvError),
    #[error("stored record is not valid JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// Wraps a NATS KV error for `op`, keeping it as the source.
fn kv_err<E>(op: &'static str) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| StoreError::Kv {
        op,
        source: Box::new(e),
    }
}

/// The index the watches keep current. A std `RwLock`: critical sections are a map lookup or
/// insert and never await, and reads (every `CheckKey`) vastly outnumber writes.
#[derive(Default)]
struct Index {
    /// hash → (KV revision, record)
    records: HashMap<String, (u64, KeyRecord)>,
    /// key id → hash (browser tokens name the key by id)
    by_id: HashMap<String, String>,
    /// team id → (KV revision, record)
    teams: HashMap<String, (u64, TeamRecord)>,
    /// spend KV key → USD
    spend: HashMap<String, Decimal>,
}

/// Shared handle to the key and spend stores.
#[derive(Clone)]
pub struct Store {
    keys: kv::Store,
    index: Arc<RwLock<Index>>,
    browser_secret: Arc<Vec<u8>>,
}

impl Store {
    /// Opens (creating if needed) both buckets, loads them, and starts the watches, which run
    /// until `stop` is cancelled.
    ///
    /// # Errors
    /// [`StoreError`] when NATS or JetStream is unreachable.
    pub async fn open(
        js: &jetstream::Context,
        buckets: Buckets<'_>,
        stop: CancellationToken,
    ) -> Result<Self, StoreError> {
        let keys = kv_mirror::open_bucket(
            js,
            buckets.keys,
            livegate_common::subjects::KEYS_HISTORY,
            &buckets.layout,
        )
        .await?;
        let spend = kv_mirror::open_bucket(
            js,
            buckets.spend,
            livegate_common::subjects::SPEND_HISTORY,
            &buckets.layout,
        )
        .await?;
        let auth = kv_mirror::open_bucket(js, buckets.auth, AUTH_HISTORY, &buckets.layout).await?;
        let browser_secret = Arc::new(browser_secret(&auth, &keys).await?);
        let store = Self {
            keys,
            index: Arc::default(),
            browser_secret,
        };
        // Load synchronously so the first CheckKey after start-up sees every key, then keep
        // the index current with watches (which replay current values; revisions keep the
        // replay from going backwards).
        let index = store.index.clone();
        kv_mirror::mirror(
            store.keys.clone(),
            move |e| apply_key_entry(&index, e),
            stop.clone(),
        )
        .await?;
        let index = store.index.clone();
        kv_mirror::mirror(spend, move |e| apply_spend_entry(&index, e), stop).await?;
        Ok(store)
    }

    /// The secret browser tokens are signed with.
    pub fn browser_secret(&self) -> &[u8] {
        &self.browser_secret
    }

    /// The record for a key hash, if any.
    pub fn by_hash(&self, hash: &str) -> Option<KeyRecord> {
        read(&self.index).records.get(hash).map(|(_, r)| r.clone())
    }

    /// The record with this key id.
    pub fn by_id(&self, key_id: &str) -> Option<KeyRecord> {
        let index = read(&self.index);
        let hash = index.by_id.get(key_id)?;
        index.records.get(hash).map(|(_, r)| r.clone())
    }

    /// The record with this key id or alias (a live key wins over revoked ones).
    pub fn find(&self, id_or_alias: &str) -> Option<KeyRecord> {
        let index = read(&self.index);
        let mut matches: Vec<&KeyRecord> = index
            .records
            .values()
            .map(|(_, r)| r)
            .filter(|r| r.key_id == id_or_alias || r.alias == id_or_alias)
            .collect();
        matches.sort_by_key(|r| (r.revoked, r.key_id != id_or_alias));
        matches.first().map(|r| (*r).clone())
    }

    /// All records, sorted by creation time.
    pub fn list(&self) -> Vec<KeyRecord> {
        let mut v: Vec<KeyRecord> = read(&self.index)
            .records
            .values()
            .map(|(_, r)| r.clone())
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.key_id).cmp(&(b.created_at, &b.key_id)));
        v
    }

    /// Running spend in USD (0 when metering has not written one yet).
    pub fn spend(&self, spend_key: &str) -> Decimal {
        read(&self.index)
            .spend
            .get(spend_key)
            .copied()
            .unwrap_or_default()
    }

    /// The team record of `team_id`, if it has one.
    pub fn team(&self, team_id: &str) -> Option<TeamRecord> {
        read(&self.index).teams.get(team_id).map(|(_, r)| r.clone())
    }

    /// All team records, sorted by team id.
    pub fn teams(&self) -> Vec<TeamRecord> {
        let mut v: Vec<TeamRecord> = read(&self.index)
            .teams
            .values()
            .map(|(_, r)| r.clone())
            .collect();
        v.sort_by(|a, b| a.team_id.cmp(&b.team_id));
        v
    }

    /// Stores a team record (create or update) and applies it locally at once.
    ///
    /// # Errors
    /// [`StoreError`] when the KV write fails.
    pub async fn put_team(&self, record: &TeamRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(record)?;
        let revision = self
            .keys
            .put(record.kv_key(), value.into())
            .await
            .map_err(kv_err("put"))?;
        upsert_team(&self.index, revision, record.clone());
        Ok(())
    }

    /// Deletes a team's record (its budget); false when it had none.
    ///
    /// # Errors
    /// [`StoreError`] when the KV delete fails.
    pub async fn delete_team(&self, team_id: &str) -> Result<bool, StoreError> {
        if self.team(team_id).is_none() {
            return Ok(false);
        }
        self.keys
            .delete(format!("{TEAM_PREFIX}{team_id}"))
            .await
            .map_err(kv_err("delete"))?;
        write(&self.index).teams.remove(team_id);
        Ok(true)
    }

    /// Stores a record (create or update) and applies it locally at once, so the caller's
    /// next read on this replica already sees it.
    ///
    /// # Errors
    /// [`StoreError`] when the KV write fails.
    pub async fn put(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(record)?;
        let revision = self
            .keys
            .put(format!("{RECORD_PREFIX}{}", record.hash), value.into())
            .await
            .map_err(kv_err("put"))?;
        upsert(&self.index, revision, record.clone());
        Ok(())
    }
}

type SharedIndex = Arc<RwLock<Index>>;

fn read(index: &RwLock<Index>) -> std::sync::RwLockReadGuard<'_, Index> {
    // A poisoned lock only means a panic elsewhere mid-insert of a plain map entry; the map
    // itself is still consistent, so keep serving.
    index
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(index: &RwLock<Index>) -> std::sync::RwLockWriteGuard<'_, Index> {
    index
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn upsert(index: &RwLock<Index>, revision: u64, record: KeyRecord) {
    let mut index = write(index);
    match index.records.get(&record.hash) {
        Some((rev, _)) if *rev > revision => {}
        _ => {
            index
                .by_id
                .insert(record.key_id.clone(), record.hash.clone());
            index
                .records
                .insert(record.hash.clone(), (revision, record));
        }
    }
}

fn upsert_team(index: &RwLock<Index>, revision: u64, record: TeamRecord) {
    let mut index = write(index);
    match index.teams.get(&record.team_id) {
        Some((rev, _)) if *rev > revision => {}
        _ => {
            index
                .teams
                .insert(record.team_id.clone(), (revision, record));
        }
    }
}

fn apply_key_entry(index: &SharedIndex, entry: kv::Entry) {
    apply_keys_value(
        index,
        &entry.key,
        entry.operation,
        entry.revision,
        &entry.value,
    );
}

/// Applies one change of the keys bucket: a key record (`k.…`) or a team record (`t.…`).
fn apply_keys_value(
    index: &RwLock<Index>,
    kv_key: &str,
    op: kv::Operation,
    revision: u64,
    value: &[u8],
) {
    if let Some(team_id) = kv_key.strip_prefix(TEAM_PREFIX) {
        match op {
            kv::Operation::Put => match serde_json::from_slice::<TeamRecord>(value) {
                Ok(record) if record.team_id == team_id => upsert_team(index, revision, record),
                Ok(_) => {
                    tracing::error!(kv.key = %kv_key, "team record's id does not match its KV key; ignored")
                }
                Err(e) => {
                    tracing::error!(kv.key = %kv_key, error.message = %e, "unreadable team record; ignored")
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                let mut index = write(index);
                if index
                    .teams
                    .get(team_id)
                    .is_some_and(|(rev, _)| *rev < revision)
                {
                    index.teams.remove(team_id);
                }
            }
        }
        return;
    }
    let Some(hash) = kv_key.strip_prefix(RECORD_PREFIX) else {
        return;
    };
    match op {
        // Logged without the KV key (the credential's hash) and without the parser's message,
        // which quotes mistyped values: where the record is broken is enough to find it.
        kv::Operation::Put => match serde_json::from_slice::<KeyRecord>(value) {
            Ok(record) if record.hash == hash => upsert(index, revision, record),
            Ok(record) => {
                tracing::error!(key_id = %record.key_id, "key record's hash does not match its KV key; ignored")
            }
            Err(e) => {
                tracing::error!(
                    error.category = ?e.classify(),
                    error.line = e.line(),
                    error.column = e.column(),
                    "unreadable key record; ignored"
                )
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => {
            let mut index = write(index);
            if let Some((_, r)) = index.records.remove(hash) {
                index.by_id.remove(&r.key_id);
            }
        }
    }
}

fn apply_spend_entry(index: &SharedIndex, entry: kv::Entry) {
    match entry.operation {
        kv::Operation::Put => match livegate_common::spend::parse_usd(&entry.value) {
            Ok(usd) => {
                write(index).spend.insert(entry.key, usd);
            }
            Err(e) => {
                tracing::warn!(kv.key = %entry.key, error.message = %e, "unreadable spend value; ignored");
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => {
            write(index).spend.remove(&entry.key);
        }
    }
}

/// Reads the shared browser-token secret from the auth bucket, creating it on first start
/// (from the legacy copy in the keys bucket when there is one, else random), then purges any
/// legacy copy. Two replicas starting at once race on `create`; the loser reads the winner's
/// value. A replica that stopped between the copy and the purge finishes the purge on its next
/// start, since the purge runs whenever a legacy copy is found.
async fn browser_secret(auth: &kv::Store, keys: &kv::Store) -> Result<Vec<u8>, StoreError> {
    use rand::RngCore;
    let legacy = keys
        .get(LEGACY_BROWSER_SECRET_KEY)
        .await
        .map_err(kv_err("get"))?;
    let current = auth.get(BROWSER_SECRET_KEY).await.map_err(kv_err("get"))?;
    let secret = match current {
        Some(v) => v.to_vec(),
        None => {
            let candidate = match &legacy {
                Some(v) => v.to_vec(),
                None => {
                    let mut fresh = vec![0u8; 32];
                    rand::rngs::OsRng.fill_bytes(&mut fresh);
                    fresh
                }
            };
            match auth
                .create(BROWSER_SECRET_KEY, candidate.clone().into())
                .await
            {
                Ok(_) => {
                    if legacy.is_some() {
                        tracing::info!(
                            "moved the browser-token secret from the keys bucket to the auth bucket"
                        );
                    }
                    candidate
                }
                Err(_) => auth
                    .get(BROWSER_SECRET_KEY)
                    .await
                    .map_err(kv_err("get"))?
                    .map(|v| v.to_vec())
                    .ok_or(StoreError::SecretMissing)?,
            }
        }
    };
    if legacy.is_some() {
        // Purge, not delete: a delete marker would keep the old revisions (the secret) in the
        // bucket's history, readable by every gateway.
        keys.purge(LEGACY_BROWSER_SECRET_KEY)
            .await
            .map_err(kv_err("purge"))?;
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team_json(team_id: &str, budget: &str) -> Vec<u8> {
        let mut r = TeamRecord::new(team_id);
        r.max_budget_usd = Some(budget.parse().unwrap());
        serde_json::to_vec(&r).unwrap()
    }

    fn budget_of(index: &RwLock<Index>, team_id: &str) -> Option<Decimal> {
        read(index)
            .teams
            .get(team_id)
            .and_then(|(_, r)| r.max_budget_usd)
    }

    #[test]
    fn team_records_are_mirrored_from_the_keys_bucket() {
        let index = RwLock::new(Index::default());
        apply_keys_value(
            &index,
            "t.growth",
            kv::Operation::Put,
            3,
            &team_json("growth", "100"),
        );
        assert_eq!(budget_of(&index, "growth"), Some(Decimal::from(100)));
        // A replayed older revision does not go backwards.
        apply_keys_value(
            &index,
            "t.growth",
            kv::Operation::Put,
            2,
            &team_json("growth", "5"),
        );
        assert_eq!(budget_of(&index, "growth"), Some(Decimal::from(100)));
        apply_keys_value(
            &index,
            "t.growth",
            kv::Operation::Put,
            4,
            &team_json("growth", "50"),
        );
        assert_eq!(budget_of(&index, "growth"), Some(Decimal::from(50)));
        // A record under another team's key, or unreadable, is ignored.
        apply_keys_value(
            &index,
            "t.ops",
            kv::Operation::Put,
            5,
            &team_json("growth", "1"),
        );
        apply_keys_value(&index, "t.ops", kv::Operation::Put, 6, b"{not json");
        assert!(!read(&index).teams.contains_key("ops"));
        assert_eq!(budget_of(&index, "growth"), Some(Decimal::from(50)));
        // Team records never land among key records, and key records not among teams.
        assert!(read(&index).records.is_empty());
        // A delete older than the record (replayed) keeps it; a newer one clears it.
        apply_keys_value(&index, "t.growth", kv::Operation::Delete, 4, b"");
        assert_eq!(budget_of(&index, "growth"), Some(Decimal::from(50)));
        apply_keys_value(&index, "t.growth", kv::Operation::Delete, 7, b"");
        assert_eq!(budget_of(&index, "growth"), None);
        assert!(read(&index).teams.is_empty());
    }

    #[test]
    fn key_records_still_mirror_next_to_teams() {
        let index = RwLock::new(Index::default());
        let key = KeyRecord::new(
            "abc".into(),
            "key_1".into(),
            &livegate_proto::auth::KeySettings {
                team_id: "growth".into(),
                ..Default::default()
            },
        )
        .unwrap();
        apply_keys_value(
            &index,
            "k.abc",
            kv::Operation::Put,
            1,
            &serde_json::to_vec(&key).unwrap(),
        );
        apply_keys_value(
            &index,
            "t.growth",
            kv::Operation::Put,
            2,
            &team_json("growth", "1"),
        );
        assert_eq!(
            read(&index).by_id.get("key_1").map(String::as_str),
            Some("abc")
        );
        assert_eq!(read(&index).teams.len(), 1);
        apply_keys_value(&index, "k.abc", kv::Operation::Delete, 3, b"");
        assert!(read(&index).records.is_empty());
        assert_eq!(read(&index).teams.len(), 1);
    }
}
