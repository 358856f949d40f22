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

use crate::metrics::Metrics;
use crate::store::{KeyDay, Store};
use async_nats::jetstream::kv;
use livegate_common::subjects::{spend_key_for_key, spend_key_for_team};
use rust_decimal::Decimal;
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Compare-and-set attempts per KV key before giving up until the next refresh.
const CAS_ATTEMPTS: usize = 5;
/// Pause after a failed refresh (the dirty ids are kept and retried).
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Upper bound for one refresh (a hung ClickHouse or NATS must not stall the feedback).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for the last refresh at shutdown.
const FINAL_REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// Key-days whose totals must be recomputed (and with them their keys' and teams' totals).
#[derive(Default)]
struct Dirty {
    key_days: HashSet<KeyDay>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.key_days.is_empty()
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
            dirty.key_days.extend(
                key_days
                    .into_iter()
                    .filter(|kd| !kd.key_id.is_empty() || !kd.team_id.is_empty()),
            );
        }
        // Stores a permit if the task is busy, so no wake-up is lost.
        self.notify.notify_one();
    }

    fn take(&self) -> Dirty {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn put_back(&self, d: Dirty) {
        self.mark(d.key_days);
    }
}

/// Least time between two refreshes (keys touched meanwhile are refreshed together).
const MIN_REFRESH_GAP: std::time::Duration = std::time::Duration::from_millis(500);

/// Refreshes dirty totals until `stop`, then once more (bounded) for what is left.
pub(crate) async fn run(
    feed: std::sync::Arc<SpendFeed>,
    store: Store,
    bucket: kv::Store,
    metrics: Metrics,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = feed.notify.notified() => {}
        }
        let dirty = feed.take();
        if dirty.is_empty() {
            continue;
        }
        let outcome = tokio::select! {
            () = stop.cancelled() => {
                // Shutting down mid-refresh: the final refresh below redoes it, bounded.
                feed.put_back(dirty);
                break;
            }
            r = tokio::time::timeout(REFRESH_TIMEOUT, refresh(&store, &bucket, &dirty, &metrics)) => {
                r.unwrap_or_else(|_| Err("timed out".into()))
            }
        };
        if let Err(e) = outcome {
            metrics.spend_failures.inc();
            tracing::warn!(error.message = %e, "spend refresh failed; will retry");
            feed.put_back(dirty);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        } else {
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

async fn refresh(
    store: &Store,
    bucket: &kv::Store,
    dirty: &Dirty,
    metrics: &Metrics,
) -> Result<(), async_nats::Error> {
    let started = std::time::Instant::now();
    let key_days: Vec<KeyDay> = dirty.key_days.iter().cloned().collect();
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
