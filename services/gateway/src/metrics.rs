//! The gateway's Prometheus metrics (prometheus-client; rendered by `GET /metrics`).

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// `tls_handshake`, `request_head` or `request_body`.
    pub phase: &'static str,
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
    pub registry: std::sync::Arc<Registry>,
}

impl Metrics {
    pub fn new() -> Self {
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
