//! Spend feedback: after batches commit, the spend of every key-day they touched is
//! recomputed from ClickHouse (`spend_daily FINAL`, that key and day only) into `spend_totals`,
//! and the all-time spend of the touched keys and teams (the sum of their `spend_totals` rows,
//! one per day) is written to the `livegate_spend` KV bucket as decimal USD text
//! (`key.<key_id>`, `team.<team_id>`), where auth and the gateway read it to enforce budgets.
//!
//! Recomputing instead of incrementing makes the feedback exact and idempotent: a redelivered
//! event, a retried batch or a crash between insert and KV write can never count twice or be
//! lost (the next refresh of that key-day rewrites its true total). A refresh reads the touched
//! key-days and the touched keys' per-day rows, so its cost grows with the keys touched and
//! their days of history, not with all events ever stored. Refreshes run in their own task
//! and coalesce: keys touched while one runs are refreshed together by the next, so the work is
//! bounded by the number of distinct key-days, not by the event rate.
//!
//! Several replicas may refresh the same key concurrently and finish out of order. Spend only
//! grows, so a write is a compare-and-set that only ever raises the stored value: a slower
//! replica holding an older, smaller total cannot overwrite a newer one.
//!
//! On a ClickHouse cluster a read may still miss rows another replica holds and this one has
//! not fetched yet (metering's statements go to the first healthy replica, see
//! [`Store::new`], but a replica back from an outage serves reads while it catches up). A total
//! computed then is too small; raising only, it changes nothing, yet nothing would mark that
//! key-day again until its key spends more. So in cluster mode every refreshed key-day is
//! refreshed again after each of [`SETTLE_AFTER`] ("settling"): once replication catches up,
//! the stored spend is exact without any new usage. Settling is kept in memory: a metering
//! stopped within a minute of a refresh leaves its remaining rounds undone (the key-day's next
//! usage, on any replica, refreshes it again).

use crate::metrics::Metrics;
use crate::store::{KeyDay, Store};
use async_nats::jetstream::kv;
use livegate_common::subjects::{spend_key_for_key, spend_key_for_team};
use rust_decimal::Decimal;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Compare-and-set attempts per KV key before giving up until the next refresh.
const CAS_ATTEMPTS: usize = 5;
/// Pause after a failed refresh (the dirty ids are kept and retried).
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Upper bound for one refresh (a hung ClickHouse or NATS must not stall the feedback).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for the last refresh at shutdown.
const FINAL_REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// In cluster mode, how long after a refresh each of its key-days is refreshed again: the
/// first catches ordinary replication lag, the later ones a replica catching up after an
/// outage (ClickHouse retries a postponed fetch with a growing pause).
pub(crate) const SETTLE_AFTER: [Duration; 3] = [
    Duration::from_secs(5),
    Duration::from_secs(20),
    Duration::from_secs(60),
];

/// Key-days whose totals must be recomputed (and with them their keys' and teams' totals),
/// each with its settling round: 0 for new usage, `n` for the `n`-th re-refresh.
#[derive(Default)]
struct Dirty {
    key_days: HashMap<KeyDay, usize>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.key_days.is_empty()
    }

    /// Adds `kd` at `round`; a key-day already dirty keeps the lower round (new usage restarts
    /// its settling).
    fn add(&mut self, kd: KeyDay, round: usize) {
        self.key_days
            .entry(kd)
            .and_modify(|r| *r = (*r).min(round))
            .or_insert(round);
    }
}

/// Refreshed key-days waiting for their next settling refresh. Holds at most the key-days
/// refreshed within the last `SETTLE_AFTER` span, one entry each.
#[derive(Default)]
struct Settling {
    /// Key-day → (when, round it will be refreshed as).
    due: HashMap<KeyDay, (Instant, usize)>,
}

impl Settling {
    /// Schedules the next round of each key-day refreshed at `now` (none after the last).
    fn refreshed(&mut self, dirty: &Dirty, now: Instant, after: &[Duration]) {
        for (kd, &round) in &dirty.key_days {
            match after.get(round) {
                Some(wait) => {
                    self.due.insert(kd.clone(), (now + *wait, round + 1));
                }
                None => {
                    self.due.remove(kd);
                }
            }
        }
    }

    /// The earliest time a key-day is due.
    fn next(&self) -> Option<Instant> {
        self.due.values().map(|(at, _)| *at).min()
    }

    /// Removes and returns the key-days due at `now`, with their rounds.
    fn take_due(&mut self, now: Instant) -> Vec<(KeyDay, usize)> {
        let due: Vec<KeyDay> = self
            .due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(kd, _)| kd.clone())
            .collect();
        due.into_iter()
            .filter_map(|kd| self.due.remove(&kd).map(|(_, round)| (kd, round)))
            .collect()
    }
}

/// The hand-off between the consumer (marks ids dirty) and the refresh task.
#[derive(Default)]
pub(crate) struct SpendFeed {
    /// A std `Mutex`: held only for set inserts and a swap, never across an await.
    dirty: Mutex<Dirty>,
    notify: Notify,
}

impl SpendFeed {
    /// Marks key-days dirty and wakes the refresh task. Usage with neither a key nor a team is
    /// skipped (no budget can apply to it).
    pub(crate) fn mark(&self, key_days: impl IntoIterator<Item = KeyDay>) {
        {
            let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
            for kd in key_days
                .into_iter()
                .filter(|kd| !kd.key_id.is_empty() || !kd.team_id.is_empty())
            {
                dirty.add(kd, 0);
            }
        }
        // Stores a permit if the task is busy, so no wake-up is lost.
        self.notify.notify_one();
    }

    fn take(&self) -> Dirty {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Marks key-days dirty again at their rounds (a failed refresh, or settling ones due).
    /// Wakes the refresh task only when something was added (an empty put-back must not spin
    /// the loop).
    fn put_back(&self, key_days: impl IntoIterator<Item = (KeyDay, usize)>) {
        let mut added = false;
        {
            let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
            for (kd, round) in key_days {
                dirty.add(kd, round);
                added = true;
            }
        }
        if added {
            self.notify.notify_one();
        }
    }
}

/// Least time between two refreshes (keys touched meanwhile are refreshed together).
const MIN_REFRESH_GAP: std::time::Duration = std::time::Duration::from_millis(500);

/// Refreshes dirty totals until `stop`, then once more (bounded) for what is left. In cluster
/// mode refreshed key-days settle (see the module's documentation).
pub(crate) async fn run(
    feed: std::sync::Arc<SpendFeed>,
    store: Store,
    bucket: kv::Store,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let settle_after: &[Duration] = if store.reads_may_lag() {
        &SETTLE_AFTER
    } else {
        &[]
    };
    let mut settling = Settling::default();
    loop {
        let next_settle = settling.next();
        tokio::select! {
            () = stop.cancelled() => break,
            () = feed.notify.notified() => {}
            () = sleep_until(next_settle) => {}
        }
        feed.put_back(settling.take_due(Instant::now()));
        let dirty = feed.take();
        if dirty.is_empty() {
            continue;
        }
        let outcome = tokio::select! {
            () = stop.cancelled() => {
                // Shutting down mid-refresh: the final refresh below redoes it, bounded.
                feed.put_back(dirty.key_days);
                break;
            }
            r = tokio::time::timeout(REFRESH_TIMEOUT, refresh(&store, &bucket, &dirty, &metrics)) => {
                r.unwrap_or_else(|_| Err("timed out".into()))
            }
        };
        if let Err(e) = outcome {
            metrics.spend_failures.inc();
            tracing::warn!(error.message = %e, "spend refresh failed; will retry");
            feed.put_back(dirty.key_days);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        } else {
            settling.refreshed(&dirty, Instant::now(), settle_after);
            // Under heavy traffic one refresh per gap is plenty for budgets and keeps
            // ClickHouse's CPU for inserts.
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(MIN_REFRESH_GAP) => {}
            }
        }
    }
    let dirty = feed.take();
    if !dirty.is_empty() {
        match tokio::time::timeout(
            FINAL_REFRESH_TIMEOUT,
            refresh(&store, &bucket, &dirty, &metrics),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error.message = %e, "last spend refresh failed; the next start refreshes on its first batch")
            }
            Err(_) => tracing::warn!("last spend refresh timed out"),
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn refresh(
    store: &Store,
    bucket: &kv::Store,
    dirty: &Dirty,
    metrics: &Metrics,
) -> Result<(), async_nats::Error> {
    let started = std::time::Instant::now();
    let key_days: Vec<KeyDay> = dirty.key_days.keys().cloned().collect();
    store.recompute_key_days(&key_days).await?;
    let keys: Vec<String> = unique(key_days.iter().map(|kd| kd.key_id.as_str()));
    let teams: Vec<String> = unique(key_days.iter().map(|kd| kd.team_id.as_str()));
    let by_key = store.spend_of_keys(&keys).await?;
    let by_team = store.spend_of_teams(&teams).await?;
    for (id, usd) in by_key {
        if raise(bucket, &spend_key_for_key(&id), usd).await? {
            metrics.spend_updates.inc();
        }
    }
    for (id, usd) in by_team {
        if raise(bucket, &spend_key_for_team(&id), usd).await? {
            metrics.spend_updates.inc();
        }
    }
    metrics
        .spend_refresh
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// The distinct non-empty ids.
fn unique<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    ids.filter(|id| !id.is_empty())
        .collect::<HashSet<_>>()
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Sets `key` to `usd` unless it already holds as much or more. Returns whether it wrote.
async fn raise(bucket: &kv::Store, key: &str, usd: Decimal) -> Result<bool, async_nats::Error> {
    let value = usd.normalize().to_string();
    for _ in 0..CAS_ATTEMPTS {
        let current = bucket.entry(key).await?;
        let outcome = match current {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let stored = Decimal::from_str(String::from_utf8_lossy(&entry.value).trim()).ok();
                if stored.is_some_and(|s| s >= usd) {
                    return Ok(false);
                }
                bucket
                    .update(key, value.clone().into(), entry.revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            _ => bucket
                .create(key, value.clone().into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        match outcome {
            Ok(()) => return Ok(true),
            // Someone wrote in between: read again and compare.
            Err(e) => {
                tracing::debug!(kv.key = key, error.message = %e, "spend compare-and-set lost a race; retrying")
            }
        }
    }
    Err(format!("could not update spend {key} after {CAS_ATTEMPTS} attempts").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kd(key: &str) -> KeyDay {
        KeyDay::of("team", key, 1_796_515_200)
    }

    fn dirty(rounds: &[(&str, usize)]) -> Dirty {
        let mut d = Dirty::default();
        for (k, r) in rounds {
            d.add(kd(k), *r);
        }
        d
    }

    #[test]
    fn refreshed_key_days_settle_once_per_round_then_stop() {
        let after = [Duration::from_secs(5), Duration::from_secs(60)];
        let t0 = Instant::now();
        let mut s = Settling::default();
        s.refreshed(&dirty(&[("a", 0)]), t0, &after);
        assert_eq!(s.next(), Some(t0 + Duration::from_secs(5)));
        assert!(s.take_due(t0 + Duration::from_secs(4)).is_empty());
        let due = s.take_due(t0 + Duration::from_secs(5));
        assert_eq!(due, vec![(kd("a"), 1)]);
        assert_eq!(s.next(), None);
        // Refreshed as round 1: due again 60 s later, as round 2, the last.
        let t1 = t0 + Duration::from_secs(5);
        s.refreshed(&dirty(&[("a", 1)]), t1, &after);
        assert_eq!(s.take_due(t1 + Duration::from_secs(60)), vec![(kd("a"), 2)]);
        s.refreshed(&dirty(&[("a", 2)]), t1 + Duration::from_secs(60), &after);
        assert_eq!(s.next(), None, "settled: nothing more to do");
    }

    #[test]
    fn new_usage_restarts_settling_and_single_node_never_settles() {
        // A key-day marked by new usage while due as round 1 is refreshed as round 0.
        let mut d = dirty(&[("a", 1), ("b", 2)]);
        d.add(kd("a"), 0);
        d.add(kd("b"), 3);
        assert_eq!(d.key_days[&kd("a")], 0);
        assert_eq!(d.key_days[&kd("b")], 2);
        let t0 = Instant::now();
        let mut s = Settling::default();
        s.refreshed(&d, t0, &[]);
        assert_eq!(s.next(), None, "no settling without a schedule");
        // A key-day refreshed again before its settle time moves to its new schedule.
        let after = [Duration::from_secs(5), Duration::from_secs(60)];
        s.refreshed(&dirty(&[("a", 0)]), t0, &after);
        s.refreshed(&dirty(&[("a", 0)]), t0 + Duration::from_secs(3), &after);
        assert!(s.take_due(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(s.take_due(t0 + Duration::from_secs(8)), vec![(kd("a"), 1)]);
    }

    #[test]
    fn a_failed_refresh_puts_its_key_days_back_at_their_rounds() {
        let feed = SpendFeed::default();
        feed.mark([kd("a")]);
        feed.put_back([(kd("a"), 1), (kd("b"), 1)]);
        let d = feed.take();
        assert_eq!(d.key_days.len(), 2);
        assert_eq!((d.key_days[&kd("a")], d.key_days[&kd("b")]), (0, 1));
        assert!(feed.take().is_empty());
    }
}
