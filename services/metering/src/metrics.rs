//! Prometheus metrics (prometheus-client: a registry per service instance, no globals, so
//! in-process tests can run several instances side by side), rendered by the `/metrics` route.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `livegate_metering_events_consumed_total{kind}` | counter | bus messages taken from JetStream, by kind (`report`, `session_started`, `session_ended`, `ignored`, `invalid`) |
//! | `livegate_metering_events_redelivered_total` | counter | of those, deliveries after the first (JetStream `delivered > 1`) |
//! | `livegate_metering_events_inserted_total` | counter | `usage_events` rows inserted |
//! | `livegate_metering_duplicates_skipped_total` | counter | usage rows not inserted because ClickHouse already had them or the batch held another copy |
//! | `livegate_metering_sessions_written_total` | counter | ended sessions recorded in `sessions` (a redelivered end is not counted again) |
//! | `livegate_metering_unpriced_events_total{model}` | counter | usage rows whose model has no price (cost 0, `priced = 0`) |
//! | `livegate_metering_dead_lettered_total{kind}` | counter | bus messages set aside in the `LIVEGATE_DEADLETTER` stream with their reason (`unknown_subject`, `undecodable`, `unbillable`: a cost beyond 10^20 USD) |
//! | `livegate_metering_batches_total{outcome}` | counter | batches committed (`ok`) or handed back to JetStream after all retries (`failed`) |
//! | `livegate_metering_insert_failures_total` | counter | failed ClickHouse attempts (each retry counts) |
//! | `livegate_metering_batch_duration_seconds` | histogram | from fetch to acks of a batch |
//! | `livegate_metering_batch_size` | histogram | messages per batch |
//! | `livegate_metering_consumer_pending` | gauge | consumer lag: messages in the stream not yet delivered to metering |
//! | `livegate_metering_consumer_ack_pending` | gauge | messages delivered but not yet acknowledged |
//! | `livegate_metering_stream_bytes` | gauge | bytes the usage stream holds (per replica) |
//! | `livegate_metering_stream_max_bytes` | gauge | the usage stream's byte limit (`LIVEGATE_STREAM_MAX_BYTES`; -1: none) |
//! | `livegate_metering_stream_unconsumed_ratio` | gauge | share of that limit held by events not consumed yet; `/readyz` warns from 0.8, at 1 the oldest are dropped unbilled |
//! | `livegate_metering_spend_updates_total` | counter | spend totals written to the KV bucket |
//! | `livegate_metering_spend_update_failures_total` | counter | failed spend refreshes (retried) |
//! | `livegate_metering_spend_refresh_seconds` | histogram | one spend refresh: the touched key-days recomputed, the totals read and written |
//! | `livegate_metering_sessions_lost_total` | counter | sessions the lease reconciler closed as `lost` (their gateway's lease expired) |
//! | `livegate_metering_pricing_reloads_total{outcome}` | counter | `PRICING_FILE` reloads on SIGHUP: `ok` (new prices in force) or `error` (unreadable or invalid file, previous prices kept) |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Label set `{kind}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: &'static str,
}

/// Label set `{model}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelLabel {
    pub(crate) model: String,
}

/// Label set `{outcome}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub(crate) outcome: &'static str,
}

/// All of metering's metrics; clones share the same series.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    pub(crate) consumed: Family<KindLabel, Counter>,
    pub(crate) redelivered: Counter,
    pub(crate) inserted: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) sessions_written: Counter,
    pub(crate) unpriced: Family<ModelLabel, Counter>,
    pub(crate) dead_lettered: Family<KindLabel, Counter>,
    pub(crate) batches: Family<OutcomeLabel, Counter>,
    pub(crate) insert_failures: Counter,
    pub(crate) batch_duration: Histogram,
    pub(crate) batch_size: Histogram,
    pub(crate) pending: Gauge,
    pub(crate) ack_pending: Gauge,
    pub(crate) stream_bytes: Gauge,
    pub(crate) stream_max_bytes: Gauge,
    pub(crate) stream_unconsumed_ratio: Gauge<f64, AtomicU64>,
    pub(crate) spend_updates: Counter,
    pub(crate) spend_failures: Counter,
    pub(crate) spend_refresh: Histogram,
    pub(crate) sessions_lost: Counter,
    pub(crate) pricing_reloads: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("livegate_metering");
        let consumed = Family::<KindLabel, Counter>::default();
        registry.register(
            "events_consumed",
            "Bus messages taken from JetStream, by kind",
            consumed.clone(),
        );
        let redelivered = Counter::default();
        registry.register(
            "events_redelivered",
            "Deliveries of a bus message after its first",
            redelivered.clone(),
        );
        let inserted = Counter::default();
        registry.register(
            "events_inserted",
            "usage_events rows inserted into ClickHouse",
            inserted.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "duplicates_skipped",
            "Usage rows not inserted because ClickHouse already had them or the batch held another copy",
            duplicates.clone(),
        );
        let sessions_written = Counter::default();
        registry.register(
            "sessions_written",
            "Ended sessions recorded in the sessions table (redeliveries not counted)",
            sessions_written.clone(),
        );
        let unpriced = Family::<ModelLabel, Counter>::default();
        registry.register(
            "unpriced_events",
            "Usage rows whose model has no price (recorded with cost 0, priced = 0)",
            unpriced.clone(),
        );
        let dead_lettered = Family::<KindLabel, Counter>::default();
        registry.register(
            "dead_lettered",
            "Bus messages set aside in the LIVEGATE_DEADLETTER stream, by kind (unknown_subject, undecodable, unbillable)",
            dead_lettered.clone(),
        );
        let batches = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "batches",
            "Batches committed (ok) or handed back to JetStream after all retries (failed)",
            batches.clone(),
        );
        let insert_failures = Counter::default();
        registry.register(
            "insert_failures",
            "Failed ClickHouse write attempts (each retry counts)",
            insert_failures.clone(),
        );
        let batch_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "batch_duration_seconds",
            "Time from fetching a batch to acknowledging it",
            batch_duration.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register("batch_size", "Messages per batch", batch_size.clone());
        let pending = Gauge::default();
        registry.register(
            "consumer_pending",
            "Consumer lag: messages in the stream not yet delivered to metering",
            pending.clone(),
        );
        let ack_pending = Gauge::default();
        registry.register(
            "consumer_ack_pending",
            "Messages delivered to metering but not yet acknowledged",
            ack_pending.clone(),
        );
        let stream_bytes = Gauge::default();
        registry.register(
            "stream_bytes",
            "Bytes the usage stream holds (per replica)",
            stream_bytes.clone(),
        );
        let stream_max_bytes = Gauge::default();
        registry.register(
            "stream_max_bytes",
            "The usage stream's byte limit (-1: none)",
            stream_max_bytes.clone(),
        );
        let stream_unconsumed_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "stream_unconsumed_ratio",
            "Share of the usage stream's byte limit held by events metering has not consumed",
            stream_unconsumed_ratio.clone(),
        );
        let spend_updates = Counter::default();
        registry.register(
            "spend_updates",
            "Spend totals written to the KV bucket",
            spend_updates.clone(),
        );
        let spend_failures = Counter::default();
        registry.register(
            "spend_update_failures",
            "Failed spend refreshes (retried with the next one)",
            spend_failures.clone(),
        );
        let spend_refresh = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "spend_refresh_seconds",
            "One spend refresh: touched key-days recomputed, totals read and written to the KV bucket",
            spend_refresh.clone(),
        );
        let sessions_lost = Counter::default();
        registry.register(
            "sessions_lost",
            "Sessions the lease reconciler closed as lost (their gateway's lease expired)",
            sessions_lost.clone(),
        );
        let pricing_reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "pricing_reloads",
            "PRICING_FILE reloads on SIGHUP: ok (new prices in force) or error (unreadable or invalid file, previous prices kept)",
            pricing_reloads.clone(),
        );
        // Both outcomes exist at zero from the start, so an alert on `outcome="error"` has a
        // series before the first reload.
        for outcome in ["ok", "error"] {
            let _ = pricing_reloads.get_or_create(&OutcomeLabel { outcome });
        }
        Self {
            registry: Arc::new(registry),
            consumed,
            redelivered,
            inserted,
            duplicates,
            sessions_written,
            unpriced,
            dead_lettered,
            batches,
            insert_failures,
            batch_duration,
            batch_size,
            pending,
            ack_pending,
            stream_bytes,
            stream_max_bytes,
            stream_unconsumed_ratio,
            spend_updates,
            spend_failures,
            spend_refresh,
            sessions_lost,
            pricing_reloads,
        }
    }

    pub(crate) fn consumed(&self, kind: &'static str) {
        self.consumed.get_or_create(&KindLabel { kind }).inc();
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error.message = %e, "cannot encode metrics");
        }
        out
    }
}
