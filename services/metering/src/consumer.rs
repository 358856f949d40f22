//! The durable JetStream pull consumer and the batch pipeline.
//!
//! One loop per replica: fetch up to `batch_size` messages (or whatever arrived within
//! `flush_interval`), decode and price them, write them to ClickHouse, and only then
//! acknowledge them. The replicas share one durable consumer, so JetStream spreads messages
//! across them; `max_ack_pending` bounds what is in flight across all of them, and each replica
//! holds at most one batch.
//!
//! # Exactly once
//! JetStream delivers at least once: after a crash, a lost ack or an ack-wait expiry an event
//! comes again, possibly to another replica, and a gateway may republish an event under a new
//! `Nats-Msg-Id`. Every write is therefore idempotent:
//! - before inserting, the events that may be stored already are looked up and those stored
//!   (in `usage_events` and in the `spend_daily` materialized view) are dropped, so the common
//!   redelivery writes nothing. "May be stored" means redelivered by JetStream (an earlier
//!   delivery may have been written before its ack was lost, or before a crash), or any event
//!   of a batch whose previous write attempt failed (the failure may have come after the rows
//!   were in). A first delivery in a first attempt cannot have been written by us, so the
//!   steady state costs no lookup at all;
//! - what slips past that check (two replicas racing with copies of one event, an insert cut
//!   between table and view, a gateway republishing an event after JetStream's duplicate
//!   window) lands in `ReplacingMergeTree`s keyed by the event id (session id
//!   for `sessions`), which `FINAL` reads and background merges collapse;
//! - spend is recomputed from ClickHouse, never incremented (see [`crate::spend`]).
//!
//! # Failures
//! A failed write is retried `insert_retries` times with exponential backoff, telling JetStream
//! the batch is still being worked on (`+WPI`) so it is not redelivered meanwhile. After the
//! last attempt the batch is handed back (`NAK` with a delay) and the loop pauses before fetching
//! again: nothing is acknowledged, so nothing is lost, and the consumer resumes by itself once
//! ClickHouse is back. A message that cannot be decoded is terminated (`+TERM`) and counted:
//! retrying cannot fix it.
//!
//! # Sessions
//! A `SessionEnded` becomes a `sessions` row summed from the session's stored usage rows after
//! the batch's own rows are in. If fewer reports are stored than the gateway says it published
//! (a report still in flight on another replica, or redelivered later), the end event is handed
//! back with a short delay and tried again, at most [`MAX_SESSION_WAITS`] deliveries; then the
//! row is written with what arrived.

use crate::events::{self, Ended, Event};
use crate::metrics::{Metrics, ModelLabel, OutcomeLabel};
use crate::pricing::Pricing;
use crate::spend::SpendFeed;
use crate::store::{SessionRow, SessionTotals, Store, StoreError, UsageRow, from_usd, usd};
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures_util::StreamExt;
use livegate_proto::usage::{ClosedBy, SessionEnded};
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A `SessionEnded` whose reports are not all stored is redelivered after this delay…
const SESSION_WAIT_DELAY: Duration = Duration::from_secs(1);
/// …up to this many deliveries, then written with the reports that arrived.
pub(crate) const MAX_SESSION_WAITS: u64 = 10;
/// Upper bound for one write attempt (a hung ClickHouse must not hold a batch forever).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// First retry delay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the consumer-lag gauges are refreshed.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Creates (or updates to this configuration) the durable pull consumer on the usage stream,
/// creating the stream first if needed.
///
/// # Errors
/// When JetStream refuses.
pub(crate) async fn setup(
    js: &jetstream::Context,
    config: &crate::Config,
) -> Result<PullConsumer, async_nats::Error> {
    let stream = livegate_common::bus::ensure_usage_stream(js, &config.stream).await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(config.consumer.clone()),
            description: Some("livegate-metering: usage events into ClickHouse".to_string()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_ack_pending: config.max_ack_pending,
            // Never give up on a message: an event is only done once it is in ClickHouse.
            max_deliver: -1,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    Ok(consumer)
}

/// Everything the batch loop needs.
pub(crate) struct Pipeline {
    pub(crate) client: async_nats::Client,
    pub(crate) consumer: PullConsumer,
    pub(crate) store: Store,
    pub(crate) pricing: Arc<Pricing>,
    pub(crate) metrics: Metrics,
    pub(crate) spend: Arc<SpendFeed>,
    pub(crate) batch_size: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) insert_retries: u32,
}

/// One message and what it decoded to.
struct Item {
    msg: jetstream::Message,
    delivered: u64,
    event: Result<Event, events::DecodeError>,
}

/// What became of a `SessionEnded` once the batch's rows were in.
enum SessionStep {
    /// The row was written. `first` is false when the same row (same version) was stored
    /// already: it is written again anyway (an earlier insert may have been cut before the
    /// `spend_daily` view saw it; the `ReplacingMergeTree`s absorb the copy), but the session
    /// is logged and counted only the first time.
    Written { row: Box<SessionRow>, first: bool },
    /// Reports are missing: hand the event back for a later try.
    Wait,
}

/// What a successful write did.
struct Written {
    inserted: usize,
    skipped: usize,
    sessions: HashMap<String, SessionStep>,
}

impl Pipeline {
    /// Runs batches until `stop`; the batch in hand when `stop` fires is finished (written
    /// and acknowledged, or handed back) before returning.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut last_lag = Instant::now()
            .checked_sub(LAG_INTERVAL)
            .unwrap_or_else(Instant::now);
        let mut pause = FIRST_BACKOFF;
        while !stop.is_cancelled() {
            let batch = match self.fetch(&stop).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error.message = %e, "cannot fetch from JetStream; retrying");
                    if sleep_or_stop(&stop, pause).await {
                        break;
                    }
                    pause = (pause * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if !batch.is_empty() {
                if self.process(batch).await {
                    pause = FIRST_BACKOFF;
                } else {
                    // ClickHouse is down: let it breathe before the next batch.
                    if sleep_or_stop(&stop, pause).await {
                        break;
                    }
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
            if last_lag.elapsed() >= LAG_INTERVAL {
                last_lag = Instant::now();
                if let Ok(info) = self.consumer.get_info().await {
                    self.metrics
                        .pending
                        .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
                    self.metrics
                        .ack_pending
                        .set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
                }
            }
        }
    }

    /// Up to `batch_size` messages, or what arrived within `flush_interval`; stops early (with
    /// what it has) on `stop`.
    async fn fetch(
        &self,
        stop: &CancellationToken,
    ) -> Result<Vec<jetstream::Message>, async_nats::Error> {
        let mut messages = self
            .consumer
            .batch()
            .max_messages(self.batch_size)
            .expires(self.flush_interval)
            .messages()
            .await?;
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = messages.next() => match next {
                    Some(Ok(m)) => batch.push(m),
                    Some(Err(e)) if batch.is_empty() => return Err(e),
                    Some(Err(e)) => {
                        tracing::debug!(error.message = %e, "pull request ended early");
                        break;
                    }
                    None => break,
                },
            }
        }
        Ok(batch)
    }

    /// Writes and acknowledges one batch. Returns false when it was handed back after all
    /// retries.
    async fn process(&self, batch: Vec<jetstream::Message>) -> bool {
        let started = Instant::now();
        self.metrics.batch_size.observe(batch.len() as f64);
        let items: Vec<Item> = batch.into_iter().map(|msg| self.decode(msg)).collect();

        // The rows to write, one per event id (a batch may hold two copies of one event).
        let mut seen = HashSet::new();
        let mut rows: Vec<UsageRow> = Vec::new();
        // Event ids JetStream delivered before: maybe written by an earlier delivery.
        let mut redelivered: HashSet<String> = HashSet::new();
        let mut copies = 0u64;
        let mut ended: Vec<(&Ended, u64)> = Vec::new();
        let mut ended_ids = HashSet::new();
        for item in &items {
            let row = match &item.event {
                Ok(Event::Report(row)) => Some(row.as_ref()),
                Ok(Event::Ended(e)) => {
                    if ended_ids.insert(e.context().session_id.clone()) {
                        ended.push((e, item.delivered));
                    }
                    e.trailing.as_ref()
                }
                _ => None,
            };
            if let Some(row) = row {
                if item.delivered > 1 {
                    redelivered.insert(row.event_id.clone());
                }
                if seen.insert(row.event_id.clone()) {
                    rows.push(row.clone());
                } else {
                    copies += 1;
                }
            }
        }

        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        let written = loop {
            attempt += 1;
            // After a failed attempt any row may be in: check them all.
            let suspects = if attempt == 1 {
                Suspects::Only(&redelivered)
            } else {
                Suspects::All
            };
            let result =
                match tokio::time::timeout(ATTEMPT_TIMEOUT, self.write(&rows, suspects, &ended))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(WriteError::Timeout),
                };
            match result {
                Ok(w) => break Some(w),
                Err(e) => {
                    self.metrics.insert_failures.inc();
                    if attempt >= self.insert_retries {
                        tracing::error!(
                            error.message = %e,
                            attempts = attempt,
                            events = items.len(),
                            "cannot write batch to ClickHouse; handing it back to JetStream"
                        );
                        break None;
                    }
                    tracing::warn!(error.message = %e, attempt, "ClickHouse write failed; retrying");
                    // Still ours: keep JetStream from redelivering while we retry.
                    for item in &items {
                        let _ = item.msg.ack_with(AckKind::Progress).await;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };

        let Some(written) = written else {
            for item in &items {
                let kind = match item.event {
                    Err(_) => AckKind::Term,
                    Ok(_) => AckKind::Nak(Some(backoff)),
                };
                if let Err(e) = item.msg.ack_with(kind).await {
                    tracing::debug!(error.message = %e, "cannot hand message back; it will time out instead");
                }
            }
            let _ = self.client.flush().await;
            self.metrics
                .batches
                .get_or_create(&OutcomeLabel { outcome: "failed" })
                .inc();
            return false;
        };

        self.metrics.inserted.inc_by(written.inserted as u64);
        self.metrics
            .duplicates
            .inc_by(written.skipped as u64 + copies);
        for (session_id, step) in &written.sessions {
            if let SessionStep::Written { row, first: true } = step {
                self.metrics.sessions_written.inc();
                tracing::info!(
                    session.id = %session_id,
                    key.id = %row.key_id,
                    team.id = %row.team_id,
                    model = %row.model,
                    "{}",
                    cost_line(row)
                );
            }
        }
        for item in &items {
            let kind = match &item.event {
                Err(_) => AckKind::Term,
                Ok(Event::Ended(e)) => match written.sessions.get(&e.context().session_id) {
                    Some(SessionStep::Wait) => AckKind::Nak(Some(SESSION_WAIT_DELAY)),
                    _ => AckKind::Ack,
                },
                Ok(_) => AckKind::Ack,
            };
            if let Err(e) = item.msg.ack_with(kind).await {
                // The write is done and idempotent: a redelivery costs a lookup, nothing more.
                tracing::debug!(error.message = %e, "ack failed; the event will be redelivered");
            }
        }
        if let Err(e) = self.client.flush().await {
            tracing::debug!(error.message = %e, "flushing acks failed; events will be redelivered");
        }
        self.spend.mark(
            rows.iter().map(|r| r.key_id.as_str()),
            rows.iter().map(|r| r.team_id.as_str()),
        );
        self.metrics
            .batches
            .get_or_create(&OutcomeLabel { outcome: "ok" })
            .inc();
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        true
    }

    fn decode(&self, msg: jetstream::Message) -> Item {
        let delivered = msg
            .info()
            .ok()
            .and_then(|i| u64::try_from(i.delivered).ok())
            .unwrap_or(1);
        if delivered > 1 {
            self.metrics.redelivered.inc();
        }
        let event = events::decode(msg.subject.as_str(), &msg.payload, &self.pricing);
        let kind = match &event {
            Ok(Event::Report(row)) => {
                if row.priced == 0 {
                    self.metrics
                        .unpriced
                        .get_or_create(&ModelLabel {
                            model: row.model.clone(),
                        })
                        .inc();
                }
                "report"
            }
            Ok(Event::Started) => "session_started",
            Ok(Event::Ended(e)) => {
                if e.trailing.as_ref().is_some_and(|r| r.priced == 0) {
                    self.metrics
                        .unpriced
                        .get_or_create(&ModelLabel {
                            model: e.context().model.clone(),
                        })
                        .inc();
                }
                "session_ended"
            }
            Ok(Event::Ignored) => {
                tracing::warn!(subject = %msg.subject, "ignoring a message on an unknown subject");
                "ignored"
            }
            Err(e) => {
                let stream_seq = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
                tracing::error!(subject = %msg.subject, stream.seq = stream_seq, error.message = %e, "undecodable bus message; terminated");
                "invalid"
            }
        };
        self.metrics.consumed(kind);
        Item {
            msg,
            delivered,
            event,
        }
    }

    /// One attempt: insert what is not stored yet, then build the session rows.
    async fn write(
        &self,
        rows: &[UsageRow],
        suspects: Suspects<'_>,
        ended: &[(&Ended, u64)],
    ) -> Result<Written, WriteError> {
        let check: Vec<&UsageRow> = rows.iter().filter(|r| suspects.has(&r.event_id)).collect();
        let stored = if check.is_empty() {
            HashSet::new()
        } else {
            self.store.stored_events(&check).await?
        };
        let fresh: Vec<&UsageRow> = rows
            .iter()
            .filter(|r| !stored.contains(&r.event_id))
            .collect();
        self.store.insert_usage(&fresh).await?;

        let mut sessions = HashMap::new();
        if !ended.is_empty() {
            let ids: Vec<&str> = ended
                .iter()
                .map(|(e, _)| e.context().session_id.as_str())
                .collect();
            let totals = self.store.session_totals(&ids).await?;
            let versions = self.store.session_versions(&ids).await?;
            let mut to_write = Vec::new();
            for (e, delivered) in ended {
                let id = e.context().session_id.clone();
                let t = totals.get(&id).cloned().unwrap_or_default();
                let step = if t.reports < e.event.reports && *delivered < MAX_SESSION_WAITS {
                    tracing::debug!(
                        session.id = %id,
                        stored = t.reports,
                        published = e.event.reports,
                        "session ended before all its reports are stored; waiting"
                    );
                    SessionStep::Wait
                } else {
                    if t.reports < e.event.reports {
                        tracing::warn!(
                            session.id = %id,
                            stored = t.reports,
                            published = e.event.reports,
                            "writing a session without all its reports (they never arrived)"
                        );
                    }
                    let row = session_row(&e.event, &t);
                    to_write.push(row.clone());
                    SessionStep::Written {
                        first: versions.get(&id) != Some(&row.version),
                        row: Box::new(row),
                    }
                };
                sessions.insert(id, step);
            }
            self.store.insert_sessions(&to_write).await?;
        }
        Ok(Written {
            inserted: fresh.len(),
            skipped: rows.len() - fresh.len(),
            sessions,
        })
    }
}

/// Which rows of a batch may be stored already (and are looked up before inserting).
#[derive(Clone, Copy)]
enum Suspects<'a> {
    /// These event ids (redelivered by JetStream).
    Only(&'a HashSet<String>),
    /// Every row (an earlier attempt failed, perhaps after inserting).
    All,
}

impl Suspects<'_> {
    fn has(self, event_id: &str) -> bool {
        match self {
            Self::Only(ids) => ids.contains(event_id),
            Self::All => true,
        }
    }
}

/// Why a write attempt failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("ClickHouse did not answer within {ATTEMPT_TIMEOUT:?}")]
    Timeout,
}

/// Sleeps `d`; true if `stop` fired first.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// The `sessions` row for an ended session and its stored usage totals.
pub(crate) fn session_row(e: &SessionEnded, t: &SessionTotals) -> SessionRow {
    let ctx = e.context.clone().unwrap_or_default();
    let started_at = events::seconds_of(e.started_at.as_ref());
    let ended_at = events::seconds_of(e.ended_at.as_ref());
    let duration_s = if e.duration_seconds.is_finite() && e.duration_seconds > 0.0 {
        e.duration_seconds
    } else {
        f64::from(ended_at.saturating_sub(started_at))
    };
    SessionRow {
        session_id: ctx.session_id,
        key_id: ctx.key_id,
        team_id: ctx.team_id,
        user_id: ctx.user_id,
        project: ctx.project,
        location: ctx.location,
        model: ctx.model,
        gateway_id: ctx.gateway_id,
        started_at,
        ended_at,
        duration_s,
        close_code: u16::try_from(e.close_code).unwrap_or(u16::MAX),
        close_reason: e.close_reason.clone(),
        closed_by: match e.closed_by() {
            ClosedBy::Client => "client",
            ClosedBy::Upstream => "upstream",
            ClosedBy::Gateway => "gateway",
            ClosedBy::Unspecified => "",
        }
        .to_string(),
        frames_in: e.frames_in,
        frames_out: e.frames_out,
        bytes_in: e.bytes_in,
        bytes_out: e.bytes_out,
        reports: e.reports,
        events_counted: t.events,
        prompt_tokens: t.prompt_tokens,
        response_tokens: t.response_tokens,
        cached_tokens: t.cached_tokens,
        tool_use_tokens: t.tool_use_tokens,
        thoughts_tokens: t.thoughts_tokens,
        total_tokens: t.total_tokens,
        input_characters: t.input_characters,
        output_characters: t.output_characters,
        input_audio_seconds: t.input_audio_seconds,
        output_audio_seconds: t.output_audio_seconds,
        input_video_seconds: t.input_video_seconds,
        input_images: t.input_images,
        input_cost_usd: usd(SessionTotals::money(&t.input_cost_usd)),
        output_cost_usd: usd(SessionTotals::money(&t.output_cost_usd)),
        cost_usd: usd(SessionTotals::money(&t.cost_usd)),
        version: t.events.saturating_add(1),
    }
}

/// The line logged for every ended session (LiteLLM's wording, so existing log searches keep
/// working): `Vertex AI Live WebSocket session cost: $0.001234 (input: $0.000800, output:
/// $0.000434) tokens: 150, characters: 1200, duration: 45.2s`.
pub(crate) fn cost_line(row: &SessionRow) -> String {
    format!(
        "Vertex AI Live WebSocket session cost: ${} (input: ${}, output: ${}) tokens: {}, characters: {}, duration: {:.1}s",
        dollars(row.cost_usd),
        dollars(row.input_cost_usd),
        dollars(row.output_cost_usd),
        row.total_tokens,
        row.input_characters.saturating_add(row.output_characters),
        row.duration_s,
    )
}

/// 1e-12 USD units as dollars with exactly six decimals.
fn dollars(units: i128) -> String {
    let mut d: Decimal =
        from_usd(units).round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero);
    d.rescale(6);
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use livegate_proto::prost_types::Timestamp;
    use livegate_proto::usage::SessionContext;

    #[test]
    fn the_cost_line_has_the_exact_wording() {
        let e = SessionEnded {
            context: Some(SessionContext {
                session_id: "s".into(),
                ..SessionContext::default()
            }),
            started_at: Some(Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            ended_at: Some(Timestamp {
                seconds: 1_800_000_045,
                nanos: 0,
            }),
            duration_seconds: 45.2,
            ..SessionEnded::default()
        };
        let t = SessionTotals {
            session_id: "s".into(),
            events: 2,
            reports: 2,
            total_tokens: 150,
            input_characters: 1000,
            output_characters: 200,
            input_cost_usd: "0.0008".into(),
            output_cost_usd: "0.0004335".into(),
            cost_usd: "0.0012335".into(),
            ..SessionTotals::default()
        };
        let row = session_row(&e, &t);
        assert_eq!(row.version, 3);
        assert_eq!(
            cost_line(&row),
            "Vertex AI Live WebSocket session cost: $0.001234 (input: $0.000800, output: $0.000434) tokens: 150, characters: 1200, duration: 45.2s"
        );
    }

    #[test]
    fn dollars_pad_and_round_half_away_from_zero() {
        assert_eq!(dollars(0), "0.000000");
        assert_eq!(dollars(usd(Decimal::new(5, 7))), "0.000001"); // 0.0000005
        assert_eq!(dollars(usd(Decimal::new(123, 0))), "123.000000");
    }
}
