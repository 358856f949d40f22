//! Session telemetry: the Prometheus series of one session (active by key and model, its
//! duration, per-turn timings, interruptions, the upstream's close code) and its
//! OpenTelemetry spans: the session span ([`session_span`]) with a child per turn and per
//! upstream connection, their attributes named after the OpenTelemetry GenAI semantic
//! conventions (`gen_ai.*`) where those have a name, `livegate.*` otherwise.
//!
//! A turn is timed from the client frame that ends it (the relay's turn-end hook) to the
//! upstream's `turnComplete`. With automatic activity detection the client sends no such
//! frame and the turn is not timed (its usage still reaches the session span).

use super::inspect::ServerFrame;
use crate::metrics::{KeyModelLabel, Metrics, ModelLabel, OTHER, upstream_code_label};
use livegate_proto::usage::TokenUsage;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;
use tracing::Span;
use tracing::field::Empty;

/// `gen_ai.provider.name` (and the older `gen_ai.system`) of every upstream: Vertex AI.
pub const PROVIDER: &str = "gcp.vertex_ai";
/// `gen_ai.system`'s value for Vertex AI, for backends that read the older attribute.
pub const SYSTEM: &str = "vertex_ai";

/// The span of a whole client session, its fields declared (empty) so the session can fill
/// them in, and the OpenTelemetry trace id recorded as `trace_id` when traces are on, so
/// every log line of the session carries it.
pub fn session_span(session_id: &str, peer: std::net::SocketAddr) -> Span {
    let span = tracing::info_span!(
        "session",
        %session_id,
        %peer,
        key_id = Empty,
        trace_id = Empty,
        otel.name = "live session",
        otel.kind = "server",
        gen_ai.conversation.id = %session_id,
        gen_ai.provider.name = PROVIDER,
        gen_ai.system = SYSTEM,
        gen_ai.request.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        livegate.turns = Empty,
        livegate.close.code = Empty,
        livegate.closed_by = Empty,
    );
    if let Some(id) = livegate_common::telemetry::trace_id(&span) {
        span.record("trace_id", id.as_str());
    }
    span
}

/// A count as OpenTelemetry's integer (tracing-opentelemetry exports `u64` fields as text).
fn otel_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A turn being answered.
struct OpenTurn {
    at: Instant,
    answered: bool,
    audio: bool,
    span: Span,
}

#[derive(Default)]
struct Turns {
    open: Option<OpenTurn>,
    started: u64,
}

/// One session's telemetry, shared by both relay directions.
pub struct Observer {
    metrics: Metrics,
    model_id: String,
    model: ModelLabel,
    active: KeyModelLabel,
    session: Span,
    started: Instant,
    turns: Mutex<Turns>,
    upstream: Mutex<(u64, Option<Span>)>,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

impl Observer {
    /// Starts observing the session whose span is current, on `model` (`priced_as`: its
    /// price-table entry, if any), for `key_id`; its first upstream connection is open.
    pub fn start(metrics: &Metrics, key_id: &str, model: &str, priced_as: Option<&str>) -> Self {
        let session = Span::current();
        session.record("gen_ai.request.model", model);
        let model_label = ModelLabel {
            model: priced_as.unwrap_or(OTHER).to_string(),
        };
        let active = KeyModelLabel {
            key: metrics.key_labels.label(key_id),
            model: model_label.model.clone(),
        };
        metrics.sessions_by_key.get_or_create(&active).inc();
        // The model's series exist from its first session on, at 0, so rates and quantiles
        // over them (and dashboards) work before the first interruption or audio answer.
        let _ = metrics.interruptions.get_or_create(&model_label);
        let _ = metrics.turns.get_or_create(&model_label);
        let _ = metrics.turn_first_audio.get_or_create(&model_label);
        let _ = metrics.turn_first_response.get_or_create(&model_label);
        let _ = metrics.turn_seconds.get_or_create(&model_label);
        let _ = metrics.session_duration.get_or_create(&model_label);
        let o = Self {
            metrics: metrics.clone(),
            model_id: model.to_string(),
            model: model_label,
            active,
            session,
            started: Instant::now(),
            turns: Mutex::new(Turns::default()),
            upstream: Mutex::new((0, None)),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
        };
        o.upstream_connected();
        o
    }

    /// A new upstream connection serves the session (the first at start; a resumption opens
    /// another): the previous connection's span ends, a new one begins.
    pub fn upstream_connected(&self) {
        let mut up = self.upstream.lock().unwrap_or_else(PoisonError::into_inner);
        up.0 += 1;
        up.1 = Some(tracing::info_span!(
            parent: &self.session,
            "upstream",
            otel.name = "upstream connection",
            otel.kind = "client",
            gen_ai.provider.name = PROVIDER,
            gen_ai.request.model = %self.model_id,
            livegate.upstream.index = otel_int(up.0),
            livegate.close.code = Empty,
        ));
    }

    /// The client sent a frame that ends its turn (and the budget admitted it). A turn
    /// already waiting for its answer (a tool response within it) keeps timing from its
    /// first end.
    pub fn client_turn_end(&self) {
        let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        if turns.open.is_some() {
            return;
        }
        turns.started += 1;
        let span = tracing::info_span!(
            parent: &self.session,
            "turn",
            otel.name = %format!("chat {}", self.model_id),
            otel.kind = "client",
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = PROVIDER,
            gen_ai.system = SYSTEM,
            gen_ai.request.model = %self.model_id,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            gen_ai.usage.cache_read.input_tokens = Empty,
            livegate.turn.index = otel_int(turns.started),
            livegate.turn.first_response_s = Empty,
            livegate.turn.first_audio_s = Empty,
            livegate.turn.interrupted = Empty,
        );
        turns.open = Some(OpenTurn {
            at: Instant::now(),
            answered: false,
            audio: false,
            span,
        });
    }

    /// A usage report arrived: its tokens go to the turn being answered and the session.
    ///
    /// Output tokens include thoughts: the GenAI conventions count reasoning tokens as output.
    pub fn usage(&self, tokens: &TokenUsage) {
        let output = tokens
            .response_tokens
            .saturating_add(tokens.thoughts_tokens);
        self.input_tokens
            .fetch_add(tokens.prompt_tokens, Ordering::Relaxed);
        self.output_tokens.fetch_add(output, Ordering::Relaxed);
        let turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = &turns.open {
            t.span
                .record("gen_ai.usage.input_tokens", otel_int(tokens.prompt_tokens));
            t.span
                .record("gen_ai.usage.output_tokens", otel_int(output));
            t.span.record(
                "gen_ai.usage.cache_read.input_tokens",
                otel_int(tokens.cached_tokens),
            );
        }
    }

    /// An upstream data frame, inspected, about to be forwarded.
    pub fn server_frame(&self, frame: &ServerFrame) {
        if frame.interrupted {
            self.metrics.interruptions.get_or_create(&self.model).inc();
        }
        let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(t) = turns.open.as_mut() else {
            return;
        };
        let since = t.at.elapsed().as_secs_f64();
        if !t.answered {
            t.answered = true;
            self.metrics
                .turn_first_response
                .get_or_create(&self.model)
                .observe(since);
            t.span.record("livegate.turn.first_response_s", since);
        }
        if frame.audio && !t.audio {
            t.audio = true;
            self.metrics
                .turn_first_audio
                .get_or_create(&self.model)
                .observe(since);
            t.span.record("livegate.turn.first_audio_s", since);
        }
        if frame.interrupted {
            t.span.record("livegate.turn.interrupted", true);
        }
        if frame.turn_complete {
            self.metrics
                .turn_seconds
                .get_or_create(&self.model)
                .observe(since);
            self.metrics.turns.get_or_create(&self.model).inc();
            // Dropping the span ends it.
            turns.open = None;
        }
    }

    /// The current upstream connection ended: it ended the session, or a resumption replaced
    /// it (the session calls this before [`Self::upstream_connected`] for the new one). With
    /// its close code, or `None` when it dropped without a close frame. Counted in
    /// `upstream_closes` and recorded on the connection's span.
    pub fn upstream_closed(&self, code: Option<u16>) {
        self.metrics
            .upstream_closes
            .get_or_create(&upstream_code_label(code))
            .inc();
        let up = self.upstream.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(s), Some(c)) = (&up.1, code) {
            s.record("livegate.close.code", i64::from(c));
        }
    }

    /// The session ended with `code`, closed by `closed_by`.
    pub fn end(&self, code: u16, closed_by: &str) {
        self.metrics
            .session_duration
            .get_or_create(&self.model)
            .observe(self.started.elapsed().as_secs_f64());
        let turns = {
            let mut t = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
            t.open = None;
            t.started
        };
        self.upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1 = None;
        let s = &self.session;
        s.record(
            "gen_ai.usage.input_tokens",
            otel_int(self.input_tokens.load(Ordering::Relaxed)),
        );
        s.record(
            "gen_ai.usage.output_tokens",
            otel_int(self.output_tokens.load(Ordering::Relaxed)),
        );
        s.record("livegate.turns", otel_int(turns));
        s.record("livegate.close.code", i64::from(code));
        s.record("livegate.closed_by", closed_by);
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.metrics
            .sessions_by_key
            .get_or_create(&self.active)
            .dec();
    }
}
