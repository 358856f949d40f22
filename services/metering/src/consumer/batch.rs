//! The batch write: decode and price a batch, drop the copies of an event it holds twice,
//! write what is not stored yet (then the session rows) in one attempt, and retry failed
//! attempts before handing the batch back.
//!
//! # Failures
//! A failed write is retried `insert_retries` times with exponential backoff, telling JetStream
//! the batch is still being worked on (`+WPI`) so it is not redelivered meanwhile. After the
//! last attempt the batch is handed back (`NAK` with a delay) and the loop pauses before fetching
//! again: nothing is acknowledged, so nothing is lost, and the consumer resumes by itself once
//! ClickHouse is back. A message that cannot be used (undecodable, or on a subject metering does
//! not know) is copied to the dead-letter stream first and then acknowledged: retrying cannot
//! fix it, and dropping it would lose usage (`dead_letter`; which message gets which answer:
//! `ack`).

use super::ack::in_progress;
use super::sessions::SessionStep;
use super::{FIRST_BACKOFF, MAX_BACKOFF, Pipeline};
use crate::events::{self, Ended, Event};
use crate::metrics::{ModelLabel, OutcomeLabel};
use crate::store::{KeyDay, PricedEvent, SessionStartRow, StoreError, UsageRow};
use async_nats::jetstream;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Upper bound for one write attempt (a hung ClickHouse must not hold a batch forever).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// One message and what it decoded to.
pub(super) struct Item {
    pub(super) msg: jetstream::Message,
    pub(super) delivered: u64,
    pub(super) event: Result<Event, events::DecodeError>,
    /// An unusable message that is now in the dead-letter stream (so it may be acknowledged).
    pub(super) dead_lettered: bool,
}

/// What a successful write did.
struct Written {
    inserted: usize,
    skipped: usize,
    sessions: HashMap<String, SessionStep>,
}

impl Pipeline {
    /// Writes and acknowledges one batch. Returns false when it was handed back after all
    /// retries.
    pub(super) async fn process(&self, batch: Vec<jetstream::Message>) -> bool {
        let started = Instant::now();
        self.metrics.batch_size.observe(batch.len() as f64);
        let mut items: Vec<Item> = batch.into_iter().map(|msg| self.decode(msg)).collect();
        self.dead_letter(&mut items).await;

        // The rows to write, one per event id (a batch may hold two copies of one event).
        let mut seen = HashSet::new();
        let mut rows: Vec<PricedEvent> = Vec::new();
        // Event ids JetStream delivered before: maybe written by an earlier delivery.
        let mut redelivered: HashSet<String> = HashSet::new();
        let mut copies = 0u64;
        let mut ended: Vec<(&Ended, u64)> = Vec::new();
        let mut ended_ids = HashSet::new();
        let mut starts = Vec::new();
        for item in &items {
            let row = match &item.event {
                Ok(Event::Started(s)) => {
                    starts.extend(super::sessions::start_row(s));
                    None
                }
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
                    redelivered.insert(row.usage.event_id.clone());
                }
                if seen.insert(row.usage.event_id.clone()) {
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
            // After a failed attempt any row may be in: check them all (and always, when
            // configured to distrust first deliveries).
            let suspects = if attempt == 1 && !self.verify_first_deliveries {
                Suspects::Only(&redelivered)
            } else {
                Suspects::All
            };
            let result = match tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                self.write(&rows, &starts, suspects, &ended),
            )
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
                    in_progress(&items).await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };

        let Some(written) = written else {
            self.hand_back(&items, backoff).await;
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
        self.log_sessions(&written.sessions);
        self.acknowledge(&items, &written.sessions).await;
        self.spend.mark(
            rows.iter()
                .map(|r| KeyDay::of(&r.usage.team_id, &r.usage.key_id, r.usage.ts)),
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

    /// Decodes and prices one message, counting it by kind (and by model when unpriced).
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
                if row.usage.priced == 0 {
                    self.metrics
                        .unpriced
                        .get_or_create(&ModelLabel {
                            model: row.usage.model.clone(),
                        })
                        .inc();
                }
                "report"
            }
            Ok(Event::Started(_)) => "session_started",
            Ok(Event::Ended(e)) => {
                if e.trailing.as_ref().is_some_and(|r| r.usage.priced == 0) {
                    self.metrics
                        .unpriced
                        .get_or_create(&ModelLabel {
                            model: e.context().model.clone(),
                        })
                        .inc();
                }
                "session_ended"
            }
            // Both go to the dead-letter stream (`dead_letter`), which logs them.
            Ok(Event::Ignored) => "ignored",
            Err(_) => "invalid",
        };
        self.metrics.consumed(kind);
        Item {
            msg,
            delivered,
            event,
            dead_lettered: false,
        }
    }

    /// One attempt: insert what is not stored yet, then build the session rows.
    async fn write(
        &self,
        rows: &[PricedEvent],
        starts: &[SessionStartRow],
        suspects: Suspects<'_>,
        ended: &[(&Ended, u64)],
    ) -> Result<Written, WriteError> {
        let check: Vec<&UsageRow> = rows
            .iter()
            .map(|r| &r.usage)
            .filter(|r| suspects.has(&r.event_id))
            .collect();
        let stored = if check.is_empty() {
            HashSet::new()
        } else {
            self.store.stored_events(&check).await?
        };
        let fresh: Vec<&PricedEvent> = rows
            .iter()
            .filter(|r| !stored.contains(&r.usage.event_id))
            .collect();
        // Receipts first: a usage row that is stored always has its receipt.
        let receipts: Vec<_> = fresh.iter().map(|r| &r.receipt).collect();
        self.store.insert_receipts(&receipts).await?;
        let usage: Vec<&UsageRow> = fresh.iter().map(|r| &r.usage).collect();
        self.store.insert_usage(&usage).await?;
        self.store.insert_session_starts(starts).await?;

        let sessions = self.write_sessions(ended).await?;
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
