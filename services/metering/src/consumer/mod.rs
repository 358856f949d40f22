//! The durable JetStream pull consumer and the batch pipeline, one file per step:
//!
//! - `setup`: the usage stream and the durable consumer ([`setup()`]).
//! - `fetch`: the loop that pulls batches until stopped ([`Pipeline::run`]).
//! - `batch`: decoding, pricing and writing one batch, with retries.
//! - `sessions`: the `sessions` rows of ended sessions.
//! - `dead_letter`: unusable messages set aside, with the reason, in the dead-letter stream.
//! - `ack`: what JetStream is told about each message, and when.
//! - `cost_line`: the LiteLLM-style cost line logged for every session.
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

mod ack;
mod batch;
mod cost_line;
mod dead_letter;
mod fetch;
mod sessions;
mod setup;

pub(crate) use cost_line::cost_line;
#[cfg(test)]
pub(crate) use sessions::session_row;
pub(crate) use sessions::{LOST_VERSION, lost_row};
pub(crate) use setup::setup;

use crate::metrics::Metrics;
use crate::spend::SpendFeed;
use crate::store::Store;
use async_nats::jetstream::consumer::PullConsumer;
use livegate_common::pricing::Pricing;
use std::sync::Arc;
use std::time::Duration;

/// First retry delay (of a failed write, of a fetch, and of the pause after a batch was handed
/// back); doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
    /// Most deliveries a `SessionEnded` waits for its reports (`Config::session_waits`).
    pub(crate) session_waits: u64,
    /// Look up every row before inserting, not only redeliveries
    /// (`Config::verify_first_deliveries`).
    pub(crate) verify_first_deliveries: bool,
}
