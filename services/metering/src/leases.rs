//! The lease reconciler: closes the sessions of gateway processes that died without ending
//! them (SIGKILL, OOM, node loss).
//!
//! Each gateway process heartbeats a key of its own (its instance id) in the `livegate_leases`
//! KV bucket every third of its lease, and names that instance in every `SessionStarted`
//! (stored in `session_starts`). Every lease/3 the reconciler reads the open sessions (a start
//! without a `sessions` row), and for each instance they hang on reads its lease key. An
//! instance whose key has not changed (same revision, or still missing) for a full lease of
//! this process's own clock ([`Leases::observe`]: no clock is compared across hosts) is gone:
//! its open sessions get a `sessions` row with the usage stored for them, `closed_by = 'lost'`
//! and close code 1006 (`consumer::lost_row`), logged with the LiteLLM cost line, and its key
//! is purged. The lease used is the longer of the gateway's own (in the key's value) and
//! `METERING_LEASE`.
//!
//! The row has version 0, below every real end's, so a `SessionEnded` that arrives later (the
//! gateway was only partitioned) replaces it.
//!
//! Each pass also completes recent rows written short ([`refresh_sessions`]): a lost row
//! whose dead process's reports were still queued behind a metering backlog, and a real row
//! the consumer wrote without every report the gateway published (`reports_stored < reports`:
//! the end event stopped waiting while a report was stuck on another replica or in a bus
//! outage). When such a row's stored usage grew, it is written again recounted (same close,
//! new totals; a real row's version grows with them, a lost row's stays 0 and the later insert
//! wins), and logged with its cost line. Every replica runs a reconciler; two closing or
//! completing the same session write the same row, which the `ReplacingMergeTree` absorbs.

use crate::consumer::{LOST_VERSION, cost_line, lost_row};
use crate::metrics::Metrics;
use crate::store::{SessionRow, SessionStartRow, Store};
use async_nats::jetstream::{self, kv};
use livegate_common::leases::{self, Lease};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// How each instance's lease key looked, and since when (this process's clock).
#[derive(Debug, Default)]
pub(crate) struct Leases {
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    revision: Option<u64>,
    since: Instant,
}

impl Leases {
    /// Records that `instance`'s key is at `revision` (None: missing) at `now`, and returns
    /// whether it has stayed so for at least `lease`. The first observation starts the clock,
    /// so a reconciler that just started waits a full lease before closing anything.
    pub(crate) fn observe(
        &mut self,
        instance: &str,
        revision: Option<u64>,
        lease: Duration,
        now: Instant,
    ) -> bool {
        let seen = self.seen.entry(instance.to_string()).or_insert(Seen {
            revision,
            since: now,
        });
        if seen.revision != revision {
            *seen = Seen {
                revision,
                since: now,
            };
        }
        now.saturating_duration_since(seen.since) >= lease
    }

    /// Forgets every instance not in `keep` (no open session hangs on it any more).
    pub(crate) fn retain(&mut self, keep: &HashSet<&str>) {
        self.seen.retain(|k, _| keep.contains(k.as_str()));
    }
}

/// Runs reconciler passes every `lease`/3 until `stop`.
pub(crate) async fn run(
    js: jetstream::Context,
    store: Store,
    metrics: Metrics,
    lease: Duration,
    layout: livegate_common::stream::StreamLayout,
    stop: CancellationToken,
) {
    let mut state = Leases::default();
    let mut bucket: Option<kv::Store> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(lease / 3) => {}
        }
        if bucket.is_none() {
            match leases::open_with(&js, &layout).await {
                Ok(b) => bucket = Some(b),
                Err(e) => {
                    tracing::warn!(error.message = %e, "cannot open the leases bucket yet");
                    continue;
                }
            }
        }
        let Some(b) = &bucket else { continue };
        if let Err(e) = pass(&mut state, b, &store, &metrics, lease).await {
            tracing::warn!(error.message = %e, "lease reconciler pass failed; retrying");
        }
        if let Err(e) = refresh_sessions(&store).await {
            tracing::warn!(error.message = %e, "refreshing short sessions failed; retrying");
        }
    }
}

/// Why a pass failed (the next one tries again).
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("reading lease {instance}: {source}")]
    Kv {
        instance: String,
        #[source]
        source: kv::EntryError,
    },
}

async fn pass(
    state: &mut Leases,
    bucket: &kv::Store,
    store: &Store,
    metrics: &Metrics,
    min_lease: Duration,
) -> Result<(), PassError> {
    let open = store.open_sessions().await?;
    let mut by_instance: HashMap<&str, Vec<&SessionStartRow>> = HashMap::new();
    for s in &open {
        // Only ids a gateway makes: anything else cannot be a lease key.
        if leases::is_instance_id(&s.gateway_instance) {
            by_instance.entry(&s.gateway_instance).or_default().push(s);
        }
    }
    state.retain(&by_instance.keys().copied().collect());
    let now = Instant::now();
    let unix_now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (instance, sessions) in by_instance {
        let entry = bucket
            .entry(instance)
            .await
            .map_err(|source| PassError::Kv {
                instance: instance.to_string(),
                source,
            })?
            .filter(|e| e.operation == kv::Operation::Put);
        let own = entry
            .as_ref()
            .and_then(|e| serde_json::from_slice::<Lease>(&e.value).ok())
            .map_or(Duration::ZERO, |l| l.lease());
        let lease = own.max(min_lease);
        if !state.observe(instance, entry.as_ref().map(|e| e.revision), lease, now) {
            continue;
        }
        // The last moment the process was known alive: its last heartbeat, else a lease ago.
        let ended_at = entry.as_ref().map_or_else(
            || unix_now.saturating_sub(lease.as_secs()),
            |e| u64::try_from(e.created.unix_timestamp()).unwrap_or(0),
        );
        let ended_at = u32::try_from(ended_at).unwrap_or(u32::MAX);
        let ids: Vec<&str> = sessions.iter().map(|s| s.session_id.as_str()).collect();
        let totals = store.session_totals(&ids).await?;
        let rows: Vec<_> = sessions
            .iter()
            .map(|s| {
                let t = totals.get(&s.session_id).cloned().unwrap_or_default();
                lost_row(s, ended_at, &t)
            })
            .collect();
        store.insert_sessions(&rows).await?;
        for row in &rows {
            metrics.sessions_written.inc();
            metrics.sessions_lost.inc();
            tracing::warn!(
                session.id = %row.session_id,
                gateway.id = %row.gateway_id,
                gateway.instance = %instance,
                key.id = %row.key_id,
                team.id = %row.team_id,
                model = %row.model,
                "session closed as lost: its gateway's lease expired; {}",
                cost_line(row)
            );
        }
        if entry.is_some()
            && let Err(e) = bucket.purge(instance).await
        {
            tracing::warn!(error.message = %e, gateway.instance = %instance, "cannot purge an expired lease");
        }
        state.seen.remove(instance);
    }
    Ok(())
}

/// Rewrites each recent session row that may be short (closed as lost, or written without all
/// its reports: [`Store::sessions_to_refresh`]) whose stored usage grew since it was written,
/// recounted with the new totals ([`SessionRow::recounted`]).
async fn refresh_sessions(store: &Store) -> Result<(), crate::store::StoreError> {
    let short = store.sessions_to_refresh().await?;
    if short.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = short.iter().map(|r| r.session_id.as_str()).collect();
    let totals = store.session_totals(&ids).await?;
    let rows: Vec<SessionRow> = short
        .into_iter()
        .filter_map(|row| {
            let t = totals.get(&row.session_id)?;
            (t.events > row.events_counted).then(|| row.recounted(t))
        })
        .collect();
    store.insert_sessions(&rows).await?;
    for row in &rows {
        if row.version == LOST_VERSION {
            tracing::info!(
                session.id = %row.session_id,
                events = row.events_counted,
                "lost session updated with usage stored after it was closed; {}",
                cost_line(row)
            );
        } else {
            tracing::info!(
                session.id = %row.session_id,
                events = row.events_counted,
                reports = row.reports,
                reports_stored = row.reports_stored,
                "session updated with reports stored after its row was written; {}",
                cost_line(row)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::session_row;
    use crate::store::{SessionTotals, usd};
    use livegate_proto::usage::{ClosedBy, SessionContext, SessionEnded};

    const LEASE: Duration = Duration::from_secs(15);

    fn start() -> SessionStartRow {
        SessionStartRow {
            session_id: "s".into(),
            key_id: "k".into(),
            team_id: "t".into(),
            user_id: "u".into(),
            project: "p".into(),
            location: "l".into(),
            model: "m".into(),
            gateway_id: "g".into(),
            gateway_instance: "i".into(),
            started_at: 100,
        }
    }

    fn totals(events: u64, reports: u64, cost: &str) -> SessionTotals {
        SessionTotals {
            events,
            reports,
            prompt_tokens: 10 * events,
            cost_usd: cost.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_refreshed_lost_row_keeps_its_close_and_takes_the_new_totals() {
        let old = lost_row(&start(), 160, &totals(1, 1, "0.1"));
        let new = old.clone().recounted(&totals(2, 2, "0.25"));
        assert_eq!(
            (
                new.closed_by.as_str(),
                new.close_code,
                new.started_at,
                new.ended_at
            ),
            ("lost", 1006, 100, 160)
        );
        assert_eq!(
            (
                new.events_counted,
                new.reports,
                new.reports_stored,
                new.version
            ),
            (2, 2, 2, old.version)
        );
        assert_eq!(new.cost_usd, usd(SessionTotals::money("0.25")));
    }

    #[test]
    fn a_real_row_written_short_is_recounted_with_its_own_close_and_a_higher_version() {
        let ended = SessionEnded {
            context: Some(SessionContext {
                session_id: "s".into(),
                key_id: "k".into(),
                ..Default::default()
            }),
            started_at: Some(livegate_proto::prost_types::Timestamp {
                seconds: 100,
                nanos: 0,
            }),
            ended_at: Some(livegate_proto::prost_types::Timestamp {
                seconds: 130,
                nanos: 0,
            }),
            duration_seconds: 30.0,
            close_code: 1000,
            close_reason: "bye".into(),
            closed_by: ClosedBy::Client.into(),
            frames_in: 7,
            bytes_out: 900,
            upstream_connections: 2,
            resumptions: 1,
            reports: 2,
            ..Default::default()
        };
        // The end stopped waiting with one of its two reports (and its `:end` row) stored.
        let short = session_row(&ended, &totals(2, 1, "0.1"));
        assert_eq!((short.reports, short.reports_stored), (2, 1));
        let new = short.clone().recounted(&totals(3, 2, "0.25"));
        // Everything but the totals is the gateway's, as first written: not a lost row.
        let kept = SessionRow {
            reports_stored: new.reports_stored,
            events_counted: new.events_counted,
            prompt_tokens: new.prompt_tokens,
            cost_usd: new.cost_usd,
            version: new.version,
            ..short.clone()
        };
        assert_eq!(new, kept);
        assert_eq!(
            (
                new.closed_by.as_str(),
                new.close_code,
                new.close_reason.as_str()
            ),
            ("client", 1000, "bye")
        );
        assert_eq!(
            (
                new.reports,
                new.reports_stored,
                new.events_counted,
                new.prompt_tokens
            ),
            (2, 2, 3, 30)
        );
        assert_eq!(new.cost_usd, usd(SessionTotals::money("0.25")));
        // It replaces the short row, and a recount of the same totals is the same row.
        assert_eq!(new.version, 4);
        assert!(new.version > short.version);
        assert_eq!(new.clone().recounted(&totals(3, 2, "0.25")), new);
    }

    #[test]
    fn a_lease_expires_only_after_a_full_lease_unchanged() {
        let mut l = Leases::default();
        let t0 = Instant::now();
        assert!(!l.observe("a", Some(1), LEASE, t0));
        assert!(!l.observe("a", Some(1), LEASE, t0 + Duration::from_secs(14)));
        assert!(l.observe("a", Some(1), LEASE, t0 + LEASE));
    }

    #[test]
    fn a_renewal_restarts_the_clock() {
        let mut l = Leases::default();
        let t0 = Instant::now();
        l.observe("a", Some(1), LEASE, t0);
        assert!(!l.observe("a", Some(2), LEASE, t0 + Duration::from_secs(14)));
        assert!(!l.observe("a", Some(2), LEASE, t0 + Duration::from_secs(28)));
        assert!(l.observe("a", Some(2), LEASE, t0 + Duration::from_secs(29)));
    }

    #[test]
    fn a_missing_key_counts_from_when_it_was_first_seen_missing() {
        let mut l = Leases::default();
        let t0 = Instant::now();
        l.observe("a", Some(3), LEASE, t0);
        // Deleted or purged: the clock starts again at the change.
        assert!(!l.observe("a", None, LEASE, t0 + Duration::from_secs(10)));
        assert!(!l.observe("a", None, LEASE, t0 + Duration::from_secs(20)));
        assert!(l.observe("a", None, LEASE, t0 + Duration::from_secs(25)));
    }

    #[test]
    fn instances_are_independent_and_forgotten_when_no_session_needs_them() {
        let mut l = Leases::default();
        let t0 = Instant::now();
        l.observe("a", Some(1), LEASE, t0);
        l.observe("b", Some(1), LEASE, t0 + Duration::from_secs(10));
        assert!(l.observe("a", Some(1), LEASE, t0 + LEASE));
        assert!(!l.observe("b", Some(1), LEASE, t0 + LEASE));
        l.retain(&HashSet::from(["b"]));
        // `a` starts over.
        assert!(!l.observe("a", Some(1), LEASE, t0 + LEASE + LEASE));
    }
}
