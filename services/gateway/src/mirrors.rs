//! The gateway's mirrors of two NATS KV buckets, kept current by KV watches: [`Spend`], the
//! running spend per key from `livegate_spend` (budgets are checked against it), and the key
//! records in `livegate_keys`, whose changes drop cached key checks at once. [`start`] runs
//! both in the background, retrying until NATS answers.

use crate::auth::AuthClient;
use async_nats::jetstream::{self, kv};
use livegate_common::kv as kv_mirror;
use livegate_common::stream::StreamLayout;
use livegate_common::subjects::spend_key_for_key;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

/// Running spend per key, fed by a KV watch. A std `RwLock`: reads are map lookups that
/// never await, once per new session and per turn.
#[derive(Clone, Default)]
pub struct Spend {
    map: Arc<RwLock<HashMap<String, Decimal>>>,
}

impl Spend {
    /// The key's spend in USD (0 when metering has written none).
    pub fn of_key(&self, key_id: &str) -> Decimal {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&spend_key_for_key(key_id))
            .copied()
            .unwrap_or_default()
    }

    /// True when a budget is set and spend has reached it.
    pub fn budget_spent(&self, key_id: &str, max_budget_usd: &str) -> bool {
        match Decimal::from_str(max_budget_usd.trim()) {
            Ok(budget) => self.of_key(key_id) >= budget,
            Err(_) => false,
        }
    }

    fn apply(&self, entry: kv::Entry) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match entry.operation {
            kv::Operation::Put => {
                if let Ok(v) = livegate_common::spend::parse_usd(&entry.value) {
                    map.insert(entry.key, v);
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                map.remove(&entry.key);
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct KeyRecordId {
    key_id: String,
}

/// Starts both mirrors. Failures to reach NATS are retried in the background, so the gateway
/// starts (and relays) even while NATS is down.
pub fn start(
    js: jetstream::Context,
    layout: StreamLayout,
    spend_bucket: String,
    keys_bucket: String,
    auth: Arc<AuthClient>,
    stop: CancellationToken,
) -> Spend {
    let spend = Spend::default();
    let view = spend.clone();
    spawn_mirror(
        js.clone(),
        layout,
        spend_bucket,
        livegate_common::subjects::SPEND_HISTORY,
        move |e| view.apply(e),
        stop.clone(),
    );
    spawn_mirror(
        js,
        layout,
        keys_bucket,
        livegate_common::subjects::KEYS_HISTORY,
        move |e| {
            if let Ok(r) = serde_json::from_slice::<KeyRecordId>(&e.value) {
                auth.invalidate_key(&r.key_id);
            }
        },
        stop,
    );
    spend
}

/// Opens and mirrors one bucket, retrying with backoff until it works or `stop`.
fn spawn_mirror<F>(
    js: jetstream::Context,
    layout: StreamLayout,
    bucket: String,
    history: i64,
    apply: F,
    stop: CancellationToken,
) where
    F: Fn(kv::Entry) + Clone + Send + Sync + 'static,
{
    #[expect(
        clippy::disallowed_methods,
        reason = "detached on purpose: the mirror retries until `stop` is cancelled"
    )]
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            let attempt = async {
                let store = kv_mirror::open_bucket(&js, &bucket, history, &layout).await?;
                kv_mirror::mirror(store, apply.clone(), stop.clone()).await
            };
            match attempt.await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error.message = %e, "cannot mirror a KV bucket yet; retrying")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
    });
}
