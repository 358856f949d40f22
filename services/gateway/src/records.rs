//! The key and team records of `livegate_keys` as this gateway's KV watch sees them, and what
//! live sessions subscribe to so that a record's change reaches them at once: a revoked,
//! deleted or expiring key ends its sessions (4401), and a changed key or team budget is the
//! one their next budget check uses (README, "Keys" and "Budgets").
//!
//! [`Records`] keeps a small view of every record (key id, revoked, expiry, budget; a team's
//! budget), about a hundred bytes a key (a deleted key's only as long as a key check answered
//! before its delete may be served from the gateway's cache), and one `watch` channel per key and per team that has
//! a live session here. The mirror ([`Records::apply`]) updates
//! the view and sends on the channel when something a session obeys changed: one send per
//! change per gateway, however many sessions share the key. A session holds a [`Limits`],
//! whose drop releases the channel when it was the last one.
//!
//! While the keys mirror is disconnected nothing changes here: sessions keep the limits they
//! have (those auth granted, or the last the mirror showed) until it reconnects and replays.

use rust_decimal::Decimal;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// KV key prefix of key records in `livegate_keys` (auth's `store::RECORD_PREFIX`).
const KEY_PREFIX: &str = "k.";
/// KV key prefix of team records (auth's `teams::TEAM_PREFIX`).
const TEAM_PREFIX: &str = "t.";

/// Why a key's sessions must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The record says `revoked`.
    Revoked,
    /// The record was deleted or purged.
    Deleted,
    /// Its `expires_at` passed.
    Expired,
}

impl Ended {
    /// The close reason the client gets (with 4401).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Revoked => "API key revoked",
            Self::Deleted => "API key deleted",
            Self::Expired => "API key expired",
        }
    }

    /// The `reason` label of `livegate_gateway_sessions_key_ended_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Deleted => "deleted",
            Self::Expired => "expired",
        }
    }
}

/// What a live session of a key obeys, as its record says now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyLimits {
    /// Revoked or deleted: the key's sessions end. (Expiry is `expires_at`, checked by time.)
    pub ended: Option<Ended>,
    /// Unix seconds; `None` = never.
    pub expires_at: Option<i64>,
    /// USD; `None` = no budget.
    pub max_budget_usd: Option<Decimal>,
}

/// The part of a key record a gateway reads; unknown fields are ignored, like auth does.
#[derive(Debug, serde::Deserialize)]
struct KeyRecordView {
    /// Must be the record's KV key (`k.<hash>`), as auth requires.
    hash: String,
    key_id: String,
    #[serde(default)]
    revoked: bool,
    #[serde(default)]
    expires_at: Option<i64>,
    #[serde(default)]
    max_budget_usd: Option<Decimal>,
}

/// The part of a team record a gateway reads.
#[derive(Debug, serde::Deserialize)]
struct TeamRecordView {
    team_id: String,
    #[serde(default)]
    max_budget_usd: Option<Decimal>,
}

/// One change of the keys bucket, classified; see [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A readable key record was written (created, updated, revoked).
    Key {
        hash: String,
        key_id: String,
        limits: KeyLimits,
    },
    /// A key record was deleted or purged: its id is only known from an earlier `Key`.
    KeyGone { hash: String },
    /// A team record was written (`Some` budget or none) or cleared (`None`).
    Team {
        team_id: String,
        budget: Option<Decimal>,
    },
}

/// Whether `kv_key` names a key or team record (what [`classify`] reads).
pub fn is_record(kv_key: &str) -> bool {
    kv_key.starts_with(KEY_PREFIX) || kv_key.starts_with(TEAM_PREFIX)
}

/// Reads one entry of the keys bucket. Anything else in the bucket, and records that cannot
/// be read or whose id (team) or hash (key) does not match their KV key, give `None` (logged at debug level with
/// the parser's position only: never the value, never the KV key of a key record).
pub fn classify(kv_key: &str, deleted: bool, value: &[u8]) -> Option<Change> {
    if let Some(team_id) = kv_key.strip_prefix(TEAM_PREFIX) {
        if deleted {
            return Some(Change::Team {
                team_id: team_id.to_string(),
                budget: None,
            });
        }
        return match serde_json::from_slice::<TeamRecordView>(value) {
            Ok(r) if r.team_id == team_id => Some(Change::Team {
                team_id: r.team_id,
                budget: r.max_budget_usd,
            }),
            Ok(_) => {
                tracing::debug!(kv.key = %kv_key, "team record's id does not match its KV key; ignored");
                None
            }
            Err(e) => {
                tracing::debug!(kv.key = %kv_key, error.line = e.line(), error.column = e.column(), "unreadable team record; ignored");
                None
            }
        };
    }
    let hash = kv_key.strip_prefix(KEY_PREFIX)?;
    if deleted {
        return Some(Change::KeyGone {
            hash: hash.to_string(),
        });
    }
    match serde_json::from_slice::<KeyRecordView>(value) {
        Ok(r) if r.hash != hash => {
            tracing::debug!("key record's hash does not match its KV key; ignored");
            None
        }
        Ok(r) => Some(Change::Key {
            hash: hash.to_string(),
            key_id: r.key_id,
            limits: KeyLimits {
                ended: r.revoked.then_some(Ended::Revoked),
                expires_at: r.expires_at,
                max_budget_usd: r.max_budget_usd,
            },
        }),
        Err(e) => {
            tracing::debug!(
                error.line = e.line(),
                error.column = e.column(),
                "unreadable key record; ignored"
            );
            None
        }
    }
}

#[derive(Default)]
struct Index {
    /// KV key hash → (revision, key id, limits). A deleted key stays a while as
    /// `Ended::Deleted` (see `deleted`), so a session that a check answered before the delete
    /// lets in still sees it.
    keys: HashMap<String, (u64, String, KeyLimits)>,
    /// Deletes applied, oldest first: (when, hash, revision). A deleted key is forgotten once
    /// no check answered before its delete can be served any more, so the view holds the
    /// bucket's records and the recent deletes, not every key the bucket ever had.
    deleted: VecDeque<(Instant, String, u64)>,
    /// Key id → hash.
    by_id: HashMap<String, String>,
    /// Team id → (revision, budget); a cleared record stays as `None`.
    teams: HashMap<String, (u64, Option<Decimal>)>,
    /// Channels of the keys and teams with a live session on this gateway.
    key_watch: HashMap<String, watch::Sender<KeyLimits>>,
    team_watch: HashMap<String, watch::Sender<Option<Decimal>>>,
}

/// The records and the live sessions' channels. Cheap to clone. A std mutex: every critical
/// section is a few map operations and never awaits.
#[derive(Clone)]
pub struct Records {
    index: Arc<Mutex<Index>>,
    /// How long a deleted key's record is kept (`AuthClient::answers_outlive_changes_by`).
    keep_deleted: Duration,
}

impl Default for Records {
    /// Deleted keys kept a minute (tests; the gateway sizes it from its key-check cache).
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl Index {
    /// Forgets the keys deleted more than `keep` before `now` (unless written again since).
    fn forget_deleted(&mut self, now: Instant, keep: Duration) {
        while let Some((at, _, _)) = self.deleted.front() {
            if now.duration_since(*at) < keep {
                break;
            }
            let Some((_, hash, revision)) = self.deleted.pop_front() else {
                break;
            };
            if !matches!(self.keys.get(&hash), Some((rev, _, l)) if *rev == revision && l.ended == Some(Ended::Deleted))
            {
                continue;
            }
            if let Some((_, key_id, _)) = self.keys.remove(&hash)
                && self.by_id.get(&key_id) == Some(&hash)
            {
                self.by_id.remove(&key_id);
            }
        }
    }
}

/// What [`Records::apply`] changed: whose cached key checks are stale.
#[derive(Debug, PartialEq, Eq)]
pub enum Stale {
    Key(String),
    Team(String),
}

impl Records {
    /// Records that keep a deleted key's record `keep_deleted` after its delete.
    pub fn new(keep_deleted: Duration) -> Self {
        Self {
            index: Arc::default(),
            keep_deleted,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies one change of the keys bucket at `revision` (older than what is held: a
    /// replay, ignored) and tells the sessions it concerns. Returns whose cached checks the
    /// change makes stale (also for a replay, which costs one cache miss at most).
    pub fn apply(&self, revision: u64, change: Change) -> Option<Stale> {
        let mut index = self.lock();
        let now = Instant::now();
        index.forget_deleted(now, self.keep_deleted);
        match change {
            Change::Key {
                hash,
                key_id,
                limits,
            } => {
                if !matches!(index.keys.get(&hash), Some((rev, _, _)) if *rev > revision) {
                    index.by_id.insert(key_id.clone(), hash.clone());
                    index
                        .keys
                        .insert(hash, (revision, key_id.clone(), limits.clone()));
                    if let Some(tx) = index.key_watch.get(&key_id) {
                        tx.send_if_modified(|held| replace(held, limits));
                    }
                }
                Some(Stale::Key(key_id))
            }
            Change::KeyGone { hash } => {
                let entry = index.keys.get_mut(&hash)?;
                if entry.0 > revision {
                    return None;
                }
                entry.0 = revision;
                entry.2.ended = Some(Ended::Deleted);
                let (key_id, limits) = (entry.1.clone(), entry.2.clone());
                index.deleted.push_back((now, hash, revision));
                if let Some(tx) = index.key_watch.get(&key_id) {
                    tx.send_if_modified(|held| replace(held, limits));
                }
                Some(Stale::Key(key_id))
            }
            Change::Team { team_id, budget } => {
                if !matches!(index.teams.get(&team_id), Some((rev, _)) if *rev > revision) {
                    index.teams.insert(team_id.clone(), (revision, budget));
                    if let Some(tx) = index.team_watch.get(&team_id) {
                        tx.send_if_modified(|held| replace(held, budget));
                    }
                }
                Some(Stale::Team(team_id))
            }
        }
    }

    /// Subscribes a session of `key_id` (in `team_id`, may be empty) to its records. `granted`
    /// and `team_budget` are what auth answered; the mirror's view wins where it has the
    /// record (it is at least as new), and the channel another live session of the key holds
    /// is shared.
    pub fn subscribe(
        &self,
        key_id: &str,
        team_id: &str,
        granted: KeyLimits,
        team_budget: Option<Decimal>,
    ) -> Limits {
        let mut index = self.lock();
        let mirrored = index
            .by_id
            .get(key_id)
            .and_then(|h| index.keys.get(h))
            .map(|(_, _, l)| l.clone());
        let key = match index.key_watch.get(key_id) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(mirrored.unwrap_or(granted));
                index.key_watch.insert(key_id.to_string(), tx);
                rx
            }
        };
        let team = if team_id.is_empty() {
            None
        } else {
            let mirrored = index.teams.get(team_id).map(|(_, b)| *b);
            Some(match index.team_watch.get(team_id) {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = watch::channel(mirrored.unwrap_or(team_budget));
                    index.team_watch.insert(team_id.to_string(), tx);
                    rx
                }
            })
        };
        Limits {
            key,
            team,
            _release: Some(Release {
                records: self.clone(),
                key_id: key_id.to_string(),
                team_id: team_id.to_string(),
            }),
        }
    }

    /// Drops the channels no session holds any more (the caller's receivers are gone).
    fn release(&self, key_id: &str, team_id: &str) {
        let mut index = self.lock();
        if index
            .key_watch
            .get(key_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            index.key_watch.remove(key_id);
        }
        if index
            .team_watch
            .get(team_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            index.team_watch.remove(team_id);
        }
    }

    /// Key records held (for tests).
    #[cfg(test)]
    fn keys_held(&self) -> usize {
        self.lock().keys.len()
    }

    /// Channels held open (for tests).
    #[cfg(test)]
    fn channels(&self) -> (usize, usize) {
        let index = self.lock();
        (index.key_watch.len(), index.team_watch.len())
    }
}

/// `send_if_modified`'s closure: replaces the held value, true when it changed.
fn replace<T: PartialEq>(held: &mut T, new: T) -> bool {
    if *held == new {
        false
    } else {
        *held = new;
        true
    }
}

/// Releases a session's channels when it ends. The last field of [`Limits`]: fields drop in
/// declaration order, so the session's receivers are gone when this runs and the counts are
/// those of the other sessions.
struct Release {
    records: Records,
    key_id: String,
    team_id: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.records.release(&self.key_id, &self.team_id);
    }
}

/// One live session's view of its key's and team's current limits. Dropping it releases the
/// channels when no other session of the key (team) holds them.
pub struct Limits {
    key: watch::Receiver<KeyLimits>,
    team: Option<watch::Receiver<Option<Decimal>>>,
    /// Last: see [`Release`].
    _release: Option<Release>,
}

impl Limits {
    /// Limits that never change.
    #[cfg(test)]
    pub fn fixed(key: KeyLimits, team: Option<Decimal>) -> Self {
        Self {
            key: watch::channel(key).1,
            team: Some(watch::channel(team).1),
            _release: None,
        }
    }

    /// The key's budget now.
    pub fn key_budget(&self) -> Option<Decimal> {
        self.key.borrow().max_budget_usd
    }

    /// The team's budget now (`None` without a team).
    pub fn team_budget(&self) -> Option<Decimal> {
        self.team.as_ref().and_then(|t| *t.borrow())
    }

    /// Why the key may not be used now (revoked, deleted, or its expiry passed), without
    /// waiting: a session checks it before it opens an upstream connection, so a key that
    /// ended before (a stale cached check, a resumption) costs no upstream connection.
    pub fn ended_now(&self) -> Option<Ended> {
        let l = self.key.borrow();
        l.ended.or_else(|| {
            l.expires_at
                .is_some_and(|at| until_unix(at).is_zero())
                .then_some(Ended::Expired)
        })
    }

    /// Resolves when the key's sessions must end: at once when it is revoked or deleted,
    /// else when that happens or its expiry passes. Never resolves for a usable key whose
    /// record can no longer change.
    pub async fn ended(&self) -> Ended {
        let mut rx = self.key.clone();
        loop {
            let (ended, expires_at) = {
                let l = rx.borrow_and_update();
                (l.ended, l.expires_at)
            };
            if let Some(e) = ended {
                return e;
            }
            let expiry = expires_at.map(until_unix);
            if expiry == Some(Duration::ZERO) {
                return Ended::Expired;
            }
            tokio::select! {
                () = sleep_opt(expiry) => return Ended::Expired,
                changed = rx.changed() => {
                    if changed.is_err() {
                        // No more changes: only the expiry (if any) can end the session.
                        sleep_opt(expiry).await;
                        return Ended::Expired;
                    }
                }
            }
        }
    }
}

/// Time left until Unix second `at` (zero once it passed).
fn until_unix(at: i64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = Duration::from_secs(u64::try_from(at).unwrap_or(0));
    at.saturating_sub(now)
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
