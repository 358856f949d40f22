//! What a relayed session publishes for metering: `SessionStarted`; a `UsageReport` for every
//! upstream frame carrying `usageMetadata`, with the client and output media measured since
//! the previous report; and `SessionEnded` with the frame and byte totals and the media left
//! unreported. Also answers the relay's budget questions (before a client turn is forwarded,
//! [`TurnBudget`]; after each model turn), ends the session when its key is revoked, deleted
//! or expires (`key_ended`), and feeds the session's telemetry ([`Observer`]).

use super::close::Close;
use super::inspect::{Media, ServerFrame};
use super::observe::Observer;
use super::relay::{Counters, End, UsageSink};
use super::turns::TurnBudget;
use crate::publisher::Outgoing;
use crate::records::Limits;
use crate::state::App;
use livegate_proto::usage::{
    ClosedBy, SessionContext, SessionEnded, SessionEvent, SessionStarted, TokenUsage, UsageReport,
    session_event,
};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::SystemTime;

/// One session's metering state, shared by both relay directions.
pub struct Meter<'a> {
    app: &'a App,
    context: SessionContext,
    started_at: SystemTime,
    /// Reports published so far; the last one's `seq`.
    seq: AtomicU64,
    /// The key's and team's budgets, and what this session's turns are predicted to cost.
    budget: TurnBudget,
    /// Metrics and spans (the session tells it about each upstream connection it opens and
    /// closes at a resumption).
    pub observer: Observer,
    /// Frames and payload bytes relayed each way (the relay adds to them).
    pub counters: Counters,
    /// Client measurements not yet reported (the client→upstream direction adds, the
    /// upstream→client direction takes them into its next report).
    pub client_media: Mutex<Media>,
    /// Output measurements not yet reported.
    pub output_media: Mutex<Media>,
    /// Upstream connections used (1 + resumption attempts that connected).
    pub upstream_connections: AtomicU32,
    /// Resumptions that succeeded.
    pub resumptions: AtomicU32,
}

fn take(m: &Mutex<Media>) -> Media {
    std::mem::take(&mut *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

impl<'a> Meter<'a> {
    /// Publishes `SessionStarted` for `context` and starts counting, the setup frame of
    /// `setup_bytes` (already sent upstream) counted as the first frame in. `limits` are the
    /// key's and team's, watched for budget changes, revocation and expiry.
    pub fn start(
        app: &'a App,
        context: SessionContext,
        limits: Limits,
        setup_bytes: usize,
    ) -> Self {
        let started_at = SystemTime::now();
        let session_id = &context.session_id;
        app.bus.send(Outgoing::session(
            format!("{session_id}:start"),
            &SessionEvent {
                event: Some(session_event::Event::Started(SessionStarted {
                    event_id: format!("{session_id}:start"),
                    context: Some(context.clone()),
                    started_at: Some(started_at.into()),
                    gateway_instance: app.config.instance_id.clone(),
                })),
            },
        ));
        let budget = TurnBudget::new(
            app,
            &context.key_id,
            &context.team_id,
            limits,
            &context.model,
        );
        let priced_as = app
            .pricing
            .price(&context.model, &livegate_common::pricing::Usage::default())
            .entry;
        let observer = Observer::start(
            &app.metrics,
            &context.key_id,
            &context.model,
            priced_as.as_deref(),
        );
        let counters = Counters::default();
        counters.frames_in.store(1, Ordering::Relaxed);
        counters
            .bytes_in
            .store(setup_bytes as u64, Ordering::Relaxed);
        Self {
            app,
            context,
            started_at,
            seq: AtomicU64::new(0),
            budget,
            observer,
            counters,
            client_media: Mutex::new(Media::default()),
            output_media: Mutex::new(Media::default()),
            upstream_connections: AtomicU32::new(1),
            resumptions: AtomicU32::new(0),
        }
    }

    /// Counts how the upstream ended the session, when it did (its close code, or none).
    pub fn observe_end(&self, end: &End) {
        match end {
            End::UpstreamClosed(f) => self
                .observer
                .upstream_closed(Some(f.as_ref().map_or(1005, |f| u16::from(f.code)))),
            End::UpstreamGone(_) => self.observer.upstream_closed(None),
            _ => {}
        }
    }

    /// Publishes `SessionEnded` with how the session closed, the totals and the media not yet
    /// reported; returns the session's duration in seconds and how many reports it published.
    pub fn end(self, code: u16, reason: &str, closed_by: ClosedBy) -> (f64, u64) {
        let mut trailing = take(&self.client_media);
        trailing.merge(take(&self.output_media));
        let ended_at = SystemTime::now();
        let duration = ended_at
            .duration_since(self.started_at)
            .unwrap_or_default()
            .as_secs_f64();
        let reports = self.seq.load(Ordering::Relaxed);
        self.observer.end(code, closed_by.as_str_name());
        let session_id = &self.context.session_id;
        let counters = &self.counters;
        self.app.bus.send(Outgoing::session(
            format!("{session_id}:end"),
            &SessionEvent {
                event: Some(session_event::Event::Ended(SessionEnded {
                    event_id: format!("{session_id}:end"),
                    context: Some(self.context.clone()),
                    started_at: Some(self.started_at.into()),
                    ended_at: Some(ended_at.into()),
                    duration_seconds: duration,
                    close_code: u32::from(code),
                    close_reason: reason.to_string(),
                    closed_by: closed_by as i32,
                    frames_in: counters.frames_in.load(Ordering::Relaxed),
                    frames_out: counters.frames_out.load(Ordering::Relaxed),
                    bytes_in: counters.bytes_in.load(Ordering::Relaxed),
                    bytes_out: counters.bytes_out.load(Ordering::Relaxed),
                    reports,
                    trailing_media: Some(trailing.take()),
                    upstream_connections: self.upstream_connections.load(Ordering::Relaxed),
                    resumptions: self.resumptions.load(Ordering::Relaxed),
                })),
            },
        ));
        (duration, reports)
    }
}

impl UsageSink for Meter<'_> {
    fn report(&self, tokens: TokenUsage, mut media: Media) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let media = media.take();
        // Counted in flight before it is published: metering cannot have seen it yet.
        self.budget.priced(&tokens, &media);
        self.observer.usage(&tokens);
        let report = UsageReport {
            event_id: format!("{}:{seq}", self.context.session_id),
            context: Some(self.context.clone()),
            seq,
            occurred_at: Some(SystemTime::now().into()),
            tokens: Some(tokens),
            media: Some(media),
        };
        self.app.bus.send(Outgoing::report(&report));
    }

    fn budget_spent(&self) -> bool {
        self.budget.spent()
    }

    fn turn_end(&self) -> Result<(), Close> {
        if let Err(refusal) = self.budget.admit() {
            self.app.metrics.turns_refused.inc();
            tracing::info!(
                budget.scope = refusal.scope.as_str(),
                budget_usd = %refusal.budget,
                spent_usd = %refusal.committed.mirrored,
                in_flight_usd = %refusal.committed.in_flight,
                next_turn_usd = %refusal.next_turn,
                "turn refused: over the key's or team's budget"
            );
            return Err(refusal.close());
        }
        self.observer.client_turn_end();
        Ok(())
    }

    fn server_frame(&self, frame: &ServerFrame) {
        self.observer.server_frame(frame);
    }

    async fn key_ended(&self) -> Close {
        let ended = self.budget.limits().ended().await;
        self.app
            .metrics
            .sessions_key_ended
            .get_or_create(&crate::metrics::ReasonLabel {
                reason: ended.label(),
            })
            .inc();
        tracing::info!(
            reason = ended.label(),
            "ending the session: its API key was revoked, deleted or expired"
        );
        Close::new(super::close::UNAUTHORIZED, ended.reason())
    }
}
