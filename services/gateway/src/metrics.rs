//! The gateway's Prometheus metrics (prometheus-client; rendered by `GET /metrics`).
//!
//! Label values are bounded: `code` labels are close codes, `model` labels are price-table
//! entries (`other` for a model the table does not know), and `key` labels are the first
//! `GATEWAY_METRICS_MAX_KEYS` key ids seen by this process (`other` after that).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirLabel {
    /// `client_to_upstream` or `upstream_to_client`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// How a `PRICING_FILE` reload went: `ok` or `error` (`ReloadOutcome::as_str`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// `tls_handshake`, `request_head` or `request_body`.
    pub phase: &'static str,
}

/// An active-session series: the key id (capped, see the module doc) and the model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyModelLabel {
    pub key: String,
    pub model: String,
}

/// A price-table entry, or `other`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

/// An upstream close code (`1000`…), `other` for a code outside the registered ranges, or
/// `none` when the connection ended without a close frame.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamCodeLabel {
    pub code: String,
}

/// A histogram family with the given buckets.
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Per-turn timings: 10 ms to about 160 s.
fn turn_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// Session lengths: 1 s to about 9 hours.
fn session_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// The `key` label for `key_id`: itself while fewer than the cap have been named, `other`
/// after. Keys named once keep their label for the life of the process.
#[derive(Clone)]
pub struct KeyLabels {
    max: usize,
    named: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl KeyLabels {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            named: Default::default(),
        }
    }

    pub fn label(&self, key_id: &str) -> String {
        let mut named = self
            .named
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if named.contains(key_id) {
            return key_id.to_string();
        }
        if named.len() < self.max {
            named.insert(key_id.to_string());
            return key_id.to_string();
        }
        OTHER.to_string()
    }
}

/// The label value for anything past a cap or outside a known set.
pub const OTHER: &str = "other";

/// The label of an upstream close `code` (`None`: no close frame).
pub fn upstream_code_label(code: Option<u16>) -> UpstreamCodeLabel {
    let code = match code {
        None => "none".to_string(),
        // RFC 6455's codes, and the registered and private ranges Google and livegate use.
        Some(c @ (1000..=1015 | 3000..=4999)) => c.to_string(),
        Some(_) => OTHER.to_string(),
    };
    UpstreamCodeLabel { code }
}

/// All gateway metrics. Cheap to clone (each metric is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    pub sessions_active: Gauge,
    pub sessions_total: Family<CodeLabel, Counter>,
    pub frames: Family<DirLabel, Counter>,
    pub bytes: Family<DirLabel, Counter>,
    pub upstream_connect_seconds: Histogram,
    pub auth_cache: Family<ResultLabel, Counter>,
    pub bus_published: Counter,
    pub bus_publish_failures: Counter,
    pub bus_buffered: Gauge,
    pub bus_dropped: Counter,
    pub connections_open: Gauge,
    pub connections_refused: Family<ReasonLabel, Counter>,
    pub preauth_timeouts: Family<PhaseLabel, Counter>,
    pub accept_errors: Counter,
    /// Transparent resumptions by result (`ok`, `failed`).
    pub resumptions: Family<ResultLabel, Counter>,
    /// `goAway`s received from the upstream.
    pub upstream_go_aways: Counter,
    pub sessions_by_key: Family<KeyModelLabel, Gauge>,
    pub session_duration: Histograms<ModelLabel>,
    pub turn_first_response: Histograms<ModelLabel>,
    pub turn_first_audio: Histograms<ModelLabel>,
    pub turn_seconds: Histograms<ModelLabel>,
    pub turns: Family<ModelLabel, Counter>,
    pub interruptions: Family<ModelLabel, Counter>,
    pub upstream_closes: Family<UpstreamCodeLabel, Counter>,
    pub turns_refused: Counter,
    /// Key and team records of `livegate_keys` the keys watch could not read and ignored.
    pub key_records_ignored: Counter,
    /// Live sessions ended because their key's record changed or expired, by `reason`
    /// (`revoked`, `deleted`, `expired`); also counted in `sessions_total` under 4401.
    pub sessions_key_ended: Family<ReasonLabel, Counter>,
    /// `PRICING_FILE` reloads on SIGHUP, by outcome.
    pub pricing_reloads: Family<OutcomeLabel, Counter>,
    pub key_labels: KeyLabels,
    pub registry: std::sync::Arc<Registry>,
}

impl Metrics {
    /// Metrics naming at most 100 keys.
    pub fn new() -> Self {
        Self::with_max_keys(100)
    }

    /// Metrics naming at most `max_keys` keys (`GATEWAY_METRICS_MAX_KEYS`).
    pub fn with_max_keys(max_keys: usize) -> Self {
        let mut r = Registry::with_prefix("livegate_gateway");
        let m = Self {
            sessions_active: Gauge::default(),
            sessions_total: Family::default(),
            frames: Family::default(),
            bytes: Family::default(),
            upstream_connect_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            auth_cache: Family::default(),
            bus_published: Counter::default(),
            bus_publish_failures: Counter::default(),
            bus_buffered: Gauge::default(),
            bus_dropped: Counter::default(),
            connections_open: Gauge::default(),
            connections_refused: Family::default(),
            preauth_timeouts: Family::default(),
            accept_errors: Counter::default(),
            resumptions: Family::default(),
            upstream_go_aways: Counter::default(),
            sessions_by_key: Family::default(),
            session_duration: Family::new_with_constructor(session_buckets),
            turn_first_response: Family::new_with_constructor(turn_buckets),
            turn_first_audio: Family::new_with_constructor(turn_buckets),
            turn_seconds: Family::new_with_constructor(turn_buckets),
            turns: Family::default(),
            interruptions: Family::default(),
            upstream_closes: Family::default(),
            turns_refused: Counter::default(),
            key_records_ignored: Counter::default(),
            sessions_key_ended: Family::default(),
            pricing_reloads: Family::default(),
            key_labels: KeyLabels::new(max_keys),
            registry: std::sync::Arc::new(Registry::default()),
        };
        r.register(
            "resumptions",
            "Transparent upstream resumptions, by result (ok: the session continued on a new upstream connection; failed: the client was closed)",
            m.resumptions.clone(),
        );
        r.register(
            "upstream_go_aways",
            "goAway messages received from the upstream Live API",
            m.upstream_go_aways.clone(),
        );
        r.register(
            "sessions_active",
            "Sessions currently relaying",
            m.sessions_active.clone(),
        );
        r.register(
            "sessions",
            "WebSocket sessions ended (refused before relaying included), by the close code they recorded: the code sent to the client, except when the client closed first (its own code, 1005 when it gave none) or its connection dropped without a close frame (1006)",
            m.sessions_total.clone(),
        );
        r.register(
            "frames",
            "Text and binary frames relayed after the setup frame, by direction",
            m.frames.clone(),
        );
        r.register(
            "bytes",
            "Payload bytes of the frames counted in livegate_gateway_frames_total, by direction",
            m.bytes.clone(),
        );
        r.register(
            "upstream_connect_seconds",
            "Time spent opening the upstream Live API WebSocket, failed and timed-out attempts included",
            m.upstream_connect_seconds.clone(),
        );
        r.register(
            "auth_cache",
            "Key checks by cache result (hit, miss)",
            m.auth_cache.clone(),
        );
        r.register(
            "bus_published",
            "Usage and session events acknowledged by JetStream",
            m.bus_published.clone(),
        );
        r.register(
            "bus_publish_failures",
            "Failed JetStream publish attempts (retried)",
            m.bus_publish_failures.clone(),
        );
        r.register(
            "bus_buffered_events",
            "Events waiting to be published",
            m.bus_buffered.clone(),
        );
        r.register(
            "bus_dropped",
            "Usage and session events lost: dropped because the queue was full or the publisher had ended, or still unacknowledged when the flush deadline after shutdown passed",
            m.bus_dropped.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open (any phase: TLS, HTTP, WebSocket session), counted from accept until the socket closes",
            m.connections_open.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections closed right after accept because a cap was reached, by cap (max_connections, max_connections_per_ip)",
            m.connections_refused.clone(),
        );
        r.register(
            "preauth_timeouts",
            "Client connections closed for taking too long before a request could be answered, by phase (tls_handshake, request_head, request_body)",
            m.preauth_timeouts.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accept calls (e.g. out of file descriptors); each is followed by a short back-off",
            m.accept_errors.clone(),
        );
        r.register(
            "sessions_active_by_key",
            "Sessions currently relaying, by API key id (the first GATEWAY_METRICS_MAX_KEYS keys seen; later ones as other) and model (price-table entry, or other)",
            m.sessions_by_key.clone(),
        );
        r.register(
            "session_duration_seconds",
            "Length of relayed sessions, from the upstream's setup to the close, by model",
            m.session_duration.clone(),
        );
        r.register(
            "turn_first_response_seconds",
            "From the client frame that ends a turn (turnComplete, activityEnd, audioStreamEnd, toolResponse) to the first upstream data frame after it, by model",
            m.turn_first_response.clone(),
        );
        r.register(
            "turn_first_audio_seconds",
            "From the client frame that ends a turn to the first upstream frame carrying model audio, by model (turns answered without audio are not counted)",
            m.turn_first_audio.clone(),
        );
        r.register(
            "turn_seconds",
            "Turn latency: from the client frame that ends a turn to the upstream's turnComplete, by model",
            m.turn_seconds.clone(),
        );
        r.register(
            "turns",
            "Turns the client ended and the upstream completed, by model",
            m.turns.clone(),
        );
        r.register(
            "interruptions",
            "Model turns cut short by the client's speech (serverContent.interrupted), by model",
            m.interruptions.clone(),
        );
        r.register(
            "upstream_closes",
            "Upstream connections closed, by the upstream's close code: the one that ended a session, and each one a resumption replaced (none: no close frame; other: outside 1000-1015 and 3000-4999)",
            m.upstream_closes.clone(),
        );
        r.register(
            "turns_refused_budget",
            "Client turns refused before reaching the upstream because their predicted cost exceeds the remaining budget of the key or its team (close 4402)",
            m.turns_refused.clone(),
        );
        r.register(
            "key_records_ignored",
            "Key and team records of livegate_keys the gateway could not read (or whose hash or id does not match their KV key) and ignored: what they say, a revocation included, does not reach live sessions",
            m.key_records_ignored.clone(),
        );
        r.register(
            "sessions_key_ended",
            "Live sessions closed with 4401 because their API key was revoked, deleted or expired while they ran, by reason (revoked, deleted, expired); also counted in livegate_gateway_sessions_total",
            m.sessions_key_ended.clone(),
        );
        r.register(
            "pricing_reloads",
            "PRICING_FILE reloads on SIGHUP: ok (new prices in force for the next turn and session) or error (unreadable or invalid file, previous prices kept)",
            m.pricing_reloads.clone(),
        );
        // The closed label sets an operator alerts on exist at zero from the start, so
        // `increase(…{outcome="error"})` and friends have a series before the first event.
        for result in ["ok", "failed"] {
            let _ = m.resumptions.get_or_create(&ResultLabel { result });
        }
        for reason in ["revoked", "deleted", "expired"] {
            let _ = m.sessions_key_ended.get_or_create(&ReasonLabel { reason });
        }
        for outcome in ["ok", "error"] {
            let _ = m.pricing_reloads.get_or_create(&OutcomeLabel { outcome });
        }
        Self {
            registry: std::sync::Arc::new(r),
            ..m
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_labels_are_capped_and_stable() {
        let k = KeyLabels::new(2);
        assert_eq!(k.label("a"), "a");
        assert_eq!(k.label("b"), "b");
        assert_eq!(k.label("c"), OTHER);
        assert_eq!(k.label("a"), "a");
        assert_eq!(KeyLabels::new(0).label("a"), OTHER);
    }

    #[test]
    fn upstream_codes_are_bounded() {
        assert_eq!(upstream_code_label(Some(1011)).code, "1011");
        assert_eq!(upstream_code_label(Some(4402)).code, "4402");
        assert_eq!(upstream_code_label(Some(2999)).code, OTHER);
        assert_eq!(upstream_code_label(Some(60000)).code, OTHER);
        assert_eq!(upstream_code_label(None).code, "none");
    }
}
