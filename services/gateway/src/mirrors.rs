//! The gateway's mirrors of two NATS KV buckets, kept current by KV watches: [`Spend`], the
//! running spend per key and per team from `livegate_spend` (budgets are checked against it),
//! with what this replica priced but the mirror does not show yet (in flight), and the key
//! and team records in `livegate_keys` (`k.…`, `t.<team_id>`), whose changes drop cached key
//! checks at once (a team record's, those of every key of the team) and reach live sessions
//! through [`Records`] (revocation, expiry, budgets). [`start`] runs both in
//! the background, retrying until NATS answers.

use crate::auth::AuthClient;
use crate::records::{Records, Stale};
use async_nats::jetstream::{self, kv};
use livegate_common::kv as kv_mirror;
use livegate_common::stream::StreamLayout;
use prometheus_client::metrics::counter::Counter;
use rust_decimal::Decimal;
use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// In-flight amounts older than this are forgotten: their events were lost (queue overflow)
/// or metering is down for long; either way the mirror is the better guess by then, and a key
/// must not stay refused for spend that will never be billed.
pub const IN_FLIGHT_HORIZON: Duration = Duration::from_secs(600);
/// Most in-flight entries kept per spend key; beyond it the two oldest are merged.
const IN_FLIGHT_ENTRIES: usize = 4096;

/// Running spend per key and team, fed by a KV watch, plus what this replica has priced that
/// the mirror does not show yet. A std `RwLock`: reads are map lookups that never await,
/// once per new session and per turn.
#[derive(Clone, Default)]
pub struct Spend {
    map: Arc<RwLock<Ledger>>,
}

#[derive(Default)]
struct Ledger {
    /// `livegate_spend` entries (`key.{id}`, `team.{id}`) as metering wrote them.
    mirrored: HashMap<String, Decimal>,
    /// Per spend key: amounts priced here, oldest first, not yet seen in `mirrored`.
    in_flight: HashMap<String, VecDeque<(Instant, Decimal)>>,
}

impl Ledger {
    fn in_flight(&self, spend_key: &str) -> Decimal {
        let now = Instant::now();
        self.in_flight
            .get(spend_key)
            .map(|q| {
                q.iter()
                    .filter(|(at, _)| now.duration_since(*at) < IN_FLIGHT_HORIZON)
                    .fold(Decimal::ZERO, |sum, (_, usd)| sum.saturating_add(*usd))
            })
            .unwrap_or_default()
    }

    /// The mirror moved up by `delta` for `spend_key`: that much of what is in flight has
    /// landed (oldest first). It may be another replica's spend; see README, "Budgets".
    fn landed(&mut self, spend_key: &str, mut delta: Decimal) {
        let Some(q) = self.in_flight.get_mut(spend_key) else {
            return;
        };
        let now = Instant::now();
        q.retain(|(at, _)| now.duration_since(*at) < IN_FLIGHT_HORIZON);
        while delta > Decimal::ZERO {
            let Some((at, usd)) = q.pop_front() else {
                break;
            };
            if usd > delta {
                q.push_front((at, usd - delta));
                break;
            }
            delta -= usd;
        }
        if q.is_empty() {
            self.in_flight.remove(spend_key);
        }
    }
}

/// A spend key's view: what metering has written and what this replica has in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    pub mirrored: Decimal,
    pub in_flight: Decimal,
}

impl Committed {
    /// Both together (saturating: an absurd price must not panic a session's budget check).
    pub fn total(&self) -> Decimal {
        self.mirrored.saturating_add(self.in_flight)
    }
}

impl Spend {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ledger> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A spend key's (`key.{id}`, `team.{id}`) spend in USD as mirrored (0 when metering has
    /// written none).
    pub fn mirrored(&self, spend_key: &str) -> Decimal {
        self.read()
            .mirrored
            .get(spend_key)
            .copied()
            .unwrap_or_default()
    }

    /// A spend key's (`key.{id}`, `team.{id}`) mirrored spend and in-flight amount.
    pub fn committed(&self, spend_key: &str) -> Committed {
        let ledger = self.read();
        Committed {
            mirrored: ledger.mirrored.get(spend_key).copied().unwrap_or_default(),
            in_flight: ledger.in_flight(spend_key),
        }
    }

    /// Records `usd` priced by this replica against each of `spend_keys`, until the mirror
    /// shows it (or [`IN_FLIGHT_HORIZON`] passes).
    pub fn add_in_flight(&self, spend_keys: &[&str], usd: Decimal) {
        if usd <= Decimal::ZERO {
            return;
        }
        let now = Instant::now();
        let mut ledger = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in spend_keys {
            let q = ledger.in_flight.entry((*k).to_string()).or_default();
            while q
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) >= IN_FLIGHT_HORIZON)
            {
                q.pop_front();
            }
            q.push_back((now, usd));
            if q.len() > IN_FLIGHT_ENTRIES
                && let (Some((at, a)), Some((_, b))) = (q.pop_front(), q.pop_front())
            {
                q.push_front((at, a.saturating_add(b)));
            }
        }
    }

    /// True when a budget is set (`max_budget_usd` as auth sends it: empty is none) and the
    /// mirrored spend of `spend_key` has reached it.
    pub fn budget_spent(&self, spend_key: &str, max_budget_usd: &str) -> bool {
        match Decimal::from_str(max_budget_usd.trim()) {
            Ok(budget) => self.mirrored(spend_key) >= budget,
            Err(_) => false,
        }
    }

    fn apply(&self, entry: kv::Entry) {
        self.apply_value(entry.key, entry.operation, &entry.value);
    }

    fn apply_value(&self, spend_key: String, op: kv::Operation, value: &[u8]) {
        let mut ledger = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match op {
            kv::Operation::Put => {
                if let Ok(v) = livegate_common::spend::parse_usd(value) {
                    let before = ledger.mirrored.insert(spend_key.clone(), v);
                    // A spend key seen for the first time counts from 0: all of it is new.
                    let delta = v.saturating_sub(before.unwrap_or_default());
                    if delta > Decimal::ZERO {
                        ledger.landed(&spend_key, delta);
                    }
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                ledger.mirrored.remove(&spend_key);
            }
        }
    }
}

/// Applies a change of the keys bucket: to the records live sessions watch ([`Records`]:
/// revocation, expiry, budgets), and by dropping the cached key checks it makes stale (a key
/// record's, or for a team record, set or cleared, every key of that team).
/// A record it cannot read is counted in `ignored` (its change, a revocation perhaps, is lost).
fn keys_changed(records: &Records, auth: &AuthClient, ignored: &Counter, entry: &kv::Entry) {
    let deleted = matches!(
        entry.operation,
        kv::Operation::Delete | kv::Operation::Purge
    );
    let Some(change) = crate::records::classify(&entry.key, deleted, &entry.value) else {
        if crate::records::is_record(&entry.key) {
            ignored.inc();
        }
        return;
    };
    invalidate(auth, records.apply(entry.revision, change));
}

fn invalidate(auth: &AuthClient, stale: Option<Stale>) {
    match stale {
        Some(Stale::Key(key_id)) => auth.invalidate_key(&key_id),
        Some(Stale::Team(team_id)) => auth.invalidate_team(&team_id),
        None => {}
    }
}

/// Starts both mirrors. Failures to reach NATS are retried in the background, so the gateway
/// starts (and relays) even while NATS is down; while the keys mirror is not connected,
/// record changes do not reach live sessions (they keep the limits they have).
pub fn start(
    js: jetstream::Context,
    layout: StreamLayout,
    spend_bucket: String,
    keys_bucket: String,
    auth: Arc<AuthClient>,
    ignored: Counter,
    stop: CancellationToken,
) -> (Spend, Records) {
    let spend = Spend::default();
    let view = spend.clone();
    // A deleted key's record is kept as long as a check answered before the delete may be
    // served (it ends the sessions such an answer lets in), then forgotten.
    let records = Records::new(auth.answers_outlive_changes_by());
    let watched = records.clone();
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
        move |e| keys_changed(&watched, &auth, &ignored, &e),
        stop,
    );
    (spend, records)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn absurd_amounts_saturate_instead_of_panicking() {
        // Pricing saturates at Decimal::MAX for absurd counts or prices; the gateway's sums of
        // such amounts must not panic the session that priced them.
        let spend = Spend::default();
        spend.apply_value("key.k".into(), kv::Operation::Put, b"1");
        for _ in 0..(IN_FLIGHT_ENTRIES + 2) {
            spend.add_in_flight(&["key.k"], Decimal::MAX);
        }
        let c = spend.committed("key.k");
        assert_eq!((c.in_flight, c.total()), (Decimal::MAX, Decimal::MAX));
        assert!(spend.budget_spent("key.k", "1"));
    }

    #[test]
    fn in_flight_counts_until_the_mirror_shows_it() {
        let spend = Spend::default();
        spend.apply_value("key.k".into(), kv::Operation::Put, b"1");
        spend.add_in_flight(&["key.k", "team.t"], usd("0.3"));
        spend.add_in_flight(&["key.k", "team.t"], usd("0.2"));
        let c = spend.committed("key.k");
        assert_eq!((c.mirrored, c.in_flight), (usd("1"), usd("0.5")));
        assert_eq!(spend.committed("team.t").total(), usd("0.5"));
        // Metering wrote the first event: 0.3 landed, 0.2 still in flight.
        spend.apply_value("key.k".into(), kv::Operation::Put, b"1.3");
        assert_eq!(spend.committed("key.k").in_flight, usd("0.2"));
        assert_eq!(spend.committed("key.k").total(), usd("1.5"));
        // A replay of the same value (watch re-subscribed) lands nothing more.
        spend.apply_value("key.k".into(), kv::Operation::Put, b"1.3");
        assert_eq!(spend.committed("key.k").in_flight, usd("0.2"));
        // More than is in flight (another replica's spend too): nothing left, never negative.
        spend.apply_value("key.k".into(), kv::Operation::Put, b"2");
        assert_eq!(spend.committed("key.k").in_flight, Decimal::ZERO);
        assert_eq!(spend.committed("key.k").total(), usd("2"));
        // A lower value (a reset) changes the mirror only.
        spend.add_in_flight(&["key.k"], usd("0.1"));
        spend.apply_value("key.k".into(), kv::Operation::Put, b"0");
        assert_eq!(spend.committed("key.k").total(), usd("0.1"));
        assert_eq!(spend.mirrored("key.k"), Decimal::ZERO);
    }

    #[test]
    fn budget_spent_reads_the_mirror_of_a_key_or_a_team() {
        let spend = Spend::default();
        spend.apply_value("team.t".into(), kv::Operation::Put, b"10");
        assert!(spend.budget_spent("team.t", "10"));
        assert!(!spend.budget_spent("team.t", "10.01"));
        assert!(!spend.budget_spent("team.t", ""), "no budget");
        assert!(!spend.budget_spent("key.k", "1"), "nothing spent yet");
    }

    #[tokio::test]
    async fn a_team_record_change_drops_the_cached_checks_of_its_keys() {
        let auth = AuthClient::new(
            "http://127.0.0.1:1",
            None,
            Duration::from_secs(60),
            crate::metrics::Metrics::new(),
        )
        .unwrap();
        let grant = |key_id: &str, team_id: &str| crate::auth::Grant {
            key: livegate_proto::auth::KeyInfo {
                key_id: key_id.into(),
                team_id: team_id.into(),
                ..Default::default()
            },
            bound_model: String::new(),
            browser_token: false,
        };
        auth.insert_for_test("lg-a", grant("key_a", "growth"));
        auth.insert_for_test("lg-b", grant("key_b", "ops"));
        let records = Records::default();
        let change = |kv_key: &str, value: &[u8]| {
            let deleted = value.is_empty();
            let c = crate::records::classify(kv_key, deleted, value).unwrap();
            invalidate(&auth, records.apply(1, c));
        };
        change("t.growth", b"");
        assert!(
            !auth.cached_for_test("lg-a"),
            "the team's key is checked again"
        );
        assert!(
            auth.cached_for_test("lg-b"),
            "another team's key stays cached"
        );
        change("k.hash", br#"{"hash":"hash","key_id":"key_b"}"#);
        assert!(!auth.cached_for_test("lg-b"));
        // A deleted record names its key by its hash only: the mirror remembers whose it was.
        auth.insert_for_test("lg-b", grant("key_b", "ops"));
        change("k.hash", b"");
        assert!(
            !auth.cached_for_test("lg-b"),
            "a deleted key is checked again"
        );
    }

    #[test]
    fn in_flight_entries_are_bounded() {
        let spend = Spend::default();
        for _ in 0..(IN_FLIGHT_ENTRIES + 10) {
            spend.add_in_flight(&["key.k"], usd("0.001"));
        }
        let ledger = spend.read();
        assert_eq!(ledger.in_flight["key.k"].len(), IN_FLIGHT_ENTRIES);
        assert_eq!(
            ledger.in_flight("key.k"),
            usd("0.001") * Decimal::from(IN_FLIGHT_ENTRIES + 10)
        );
    }
}
