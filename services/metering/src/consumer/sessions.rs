//! Session rows: a `SessionEnded` becomes a `sessions` row summed from the session's stored
//! usage rows after the batch's own rows are in, and a written session is counted and logged
//! with its cost line.
//!
//! If fewer reports are stored than the gateway says it published (a report still in flight
//! on another replica, or redelivered later), the end event is handed back with a short delay
//! ([`SESSION_WAIT_DELAY`]) and tried again, at most `Config::session_waits`
//! ([`MAX_SESSION_WAITS`](crate::config::MAX_SESSION_WAITS)) deliveries; then the row is written with what arrived, with
//! `reports_stored` below `reports`, and the lease reconciler (`crate::leases`) recounts it
//! ([`SessionRow::recounted`]) when the missing reports land.
//!
//! A session whose gateway process died before its `SessionEnded` is closed by the lease
//! reconciler (`crate::leases`) with [`lost_row`]: `closed_by = 'lost'`, close code
//! [`LOST_CLOSE_CODE`], `version` 0. Every row built from a real `SessionEnded` has a version
//! of at least 1, so a late real end (the gateway was only partitioned) replaces it.

use super::Pipeline;
use super::cost_line::cost_line;
use crate::events::{self, Ended};
use crate::store::{SessionRow, SessionStartRow, SessionTotals, StoreError, usd};
use livegate_proto::usage::{ClosedBy, SessionContext, SessionEnded, SessionStarted};
use std::collections::HashMap;
use std::time::Duration;

/// A `SessionEnded` whose reports are not all stored is redelivered after this delay, up to
/// `Config::session_waits` deliveries, then written with the reports that arrived.
pub(super) const SESSION_WAIT_DELAY: Duration = Duration::from_secs(1);

/// The close code of a session closed as lost: 1006, "closed abnormally, without a close
/// frame" (RFC 6455 §7.4.1), which is what the client saw when its gateway died.
pub(crate) const LOST_CLOSE_CODE: u32 = 1006;
/// The close reason of a session closed as lost.
pub(crate) const LOST_CLOSE_REASON: &str =
    "gateway lost: its lease expired before the session ended";

/// What became of a `SessionEnded` once the batch's rows were in.
pub(super) enum SessionStep {
    /// The row was written. `first` is false when the same row (same version) was stored
    /// already: it is written again anyway (an earlier insert may have been cut before the
    /// `spend_daily` view saw it; the `ReplacingMergeTree`s absorb the copy), but the session
    /// is logged and counted only the first time.
    Written { row: Box<SessionRow>, first: bool },
    /// Reports are missing: hand the event back for a later try.
    Wait,
}

impl Pipeline {
    /// The rows of the ended sessions `ended` (each with its delivery count), written unless
    /// they wait for reports. Returns what became of each session, by session id.
    ///
    /// # Errors
    /// [`StoreError`] when reading the totals or inserting the rows fails.
    pub(super) async fn write_sessions(
        &self,
        ended: &[(&Ended, u64)],
    ) -> Result<HashMap<String, SessionStep>, StoreError> {
        let mut sessions = HashMap::new();
        if ended.is_empty() {
            return Ok(sessions);
        }
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
            let step = if t.reports < e.event.reports && *delivered < self.session_waits {
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
                if versions.get(&id) == Some(&LOST_VERSION) {
                    tracing::info!(session.id = %id, "the gateway's own end replaces the session closed as lost");
                }
                to_write.push(row.clone());
                SessionStep::Written {
                    first: versions.get(&id) != Some(&row.version),
                    row: Box::new(row),
                }
            };
            sessions.insert(id, step);
        }
        self.store.insert_sessions(&to_write).await?;
        Ok(sessions)
    }

    /// Counts and logs (with the cost line) each session written for the first time.
    pub(super) fn log_sessions(&self, sessions: &HashMap<String, SessionStep>) {
        for (session_id, step) in sessions {
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
            ClosedBy::Lost => "lost",
            ClosedBy::Unspecified => "",
        }
        .to_string(),
        frames_in: e.frames_in,
        frames_out: e.frames_out,
        bytes_in: e.bytes_in,
        bytes_out: e.bytes_out,
        upstream_connections: e.upstream_connections,
        resumptions: e.resumptions,
        reports: e.reports,
        version: t.events.saturating_add(1),
        ..SessionRow::default()
    }
    .with_totals(t)
}

impl SessionRow {
    /// This row recounted with the usage totals `t`, as the lease reconciler completes a row
    /// written short or a lost row whose reports landed late: every column summed from usage
    /// rows takes the new totals, and `version` grows with them (`t.events + 1`), so the new
    /// row replaces the old. Who, when and how the session closed and what the gateway
    /// counted stay; a row closed as lost ([`LOST_VERSION`]) stays lost, with `reports` (for it,
    /// the reports stored) updated too and its version kept below every real end's.
    pub(crate) fn recounted(self, t: &SessionTotals) -> Self {
        let lost = self.version == LOST_VERSION;
        let mut row = self.with_totals(t);
        if lost {
            row.reports = t.reports;
        } else {
            row.version = t.events.saturating_add(1);
        }
        row
    }

    /// This row with every column summed from usage rows set from `t` (not `version`).
    fn with_totals(mut self, t: &SessionTotals) -> Self {
        self.reports_stored = t.reports;
        self.events_counted = t.events;
        self.prompt_tokens = t.prompt_tokens;
        self.response_tokens = t.response_tokens;
        self.cached_tokens = t.cached_tokens;
        self.tool_use_tokens = t.tool_use_tokens;
        self.thoughts_tokens = t.thoughts_tokens;
        self.total_tokens = t.total_tokens;
        self.input_characters = t.input_characters;
        self.output_characters = t.output_characters;
        self.input_audio_seconds = t.input_audio_seconds;
        self.output_audio_seconds = t.output_audio_seconds;
        self.input_video_seconds = t.input_video_seconds;
        self.input_images = t.input_images;
        self.input_cost_usd = usd(SessionTotals::money(&t.input_cost_usd));
        self.output_cost_usd = usd(SessionTotals::money(&t.output_cost_usd));
        self.cost_usd = usd(SessionTotals::money(&t.cost_usd));
        self
    }
}

/// The `version` of a row [`lost_row`] builds: below every real end's.
pub(crate) const LOST_VERSION: u64 = 0;

/// The `session_starts` row of a `SessionStarted` (none without a session id).
pub(crate) fn start_row(s: &SessionStarted) -> Option<SessionStartRow> {
    let ctx = s.context.as_ref().filter(|c| !c.session_id.is_empty())?;
    Some(SessionStartRow {
        session_id: ctx.session_id.clone(),
        key_id: ctx.key_id.clone(),
        team_id: ctx.team_id.clone(),
        user_id: ctx.user_id.clone(),
        project: ctx.project.clone(),
        location: ctx.location.clone(),
        model: ctx.model.clone(),
        gateway_id: ctx.gateway_id.clone(),
        gateway_instance: s.gateway_instance.clone(),
        started_at: events::seconds_of(s.started_at.as_ref()),
    })
}

/// The `sessions` row of a session closed as lost at `ended_at` (Unix seconds: the last time
/// its gateway was known alive), with the usage stored for it.
pub(crate) fn lost_row(start: &SessionStartRow, ended_at: u32, t: &SessionTotals) -> SessionRow {
    let ended_at = ended_at.max(start.started_at);
    let ended = SessionEnded {
        event_id: format!("{}:lost", start.session_id),
        context: Some(SessionContext {
            session_id: start.session_id.clone(),
            key_id: start.key_id.clone(),
            team_id: start.team_id.clone(),
            user_id: start.user_id.clone(),
            project: start.project.clone(),
            location: start.location.clone(),
            model: start.model.clone(),
            gateway_id: start.gateway_id.clone(),
        }),
        started_at: Some(livegate_proto::prost_types::Timestamp {
            seconds: i64::from(start.started_at),
            nanos: 0,
        }),
        ended_at: Some(livegate_proto::prost_types::Timestamp {
            seconds: i64::from(ended_at),
            nanos: 0,
        }),
        duration_seconds: f64::from(ended_at - start.started_at),
        close_code: LOST_CLOSE_CODE,
        close_reason: LOST_CLOSE_REASON.to_string(),
        closed_by: ClosedBy::Lost.into(),
        reports: t.reports,
        ..SessionEnded::default()
    };
    let mut row = session_row(&ended, t);
    row.version = LOST_VERSION;
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> SessionStartRow {
        SessionStartRow {
            session_id: "s1".into(),
            key_id: "k".into(),
            team_id: "t".into(),
            user_id: "u".into(),
            project: "p".into(),
            location: "l".into(),
            model: "m".into(),
            gateway_id: "gw".into(),
            gateway_instance: "0".repeat(32),
            started_at: 1_000,
        }
    }

    #[test]
    fn a_lost_row_is_replaced_by_any_real_end() {
        let t = SessionTotals {
            session_id: "s1".into(),
            events: 3,
            reports: 3,
            prompt_tokens: 30,
            cost_usd: "0.000123".into(),
            ..SessionTotals::default()
        };
        let lost = lost_row(&start(), 1_060, &t);
        assert_eq!(lost.closed_by, "lost");
        assert_eq!(u32::from(lost.close_code), LOST_CLOSE_CODE);
        assert_eq!(lost.duration_s, 60.0);
        assert_eq!(lost.reports, 3);
        assert_eq!(lost.prompt_tokens, 30);
        assert_eq!(lost.cost_usd, usd(SessionTotals::money("0.000123")));
        assert_eq!(lost.key_id, "k");
        // Even a real end with no usage at all outranks it.
        let real = session_row(&SessionEnded::default(), &SessionTotals::default());
        assert!(real.version > lost.version);
    }

    #[test]
    fn a_lost_row_never_ends_before_it_started() {
        let lost = lost_row(&start(), 10, &SessionTotals::default());
        assert_eq!(lost.ended_at, 1_000);
        assert_eq!(lost.duration_s, 0.0);
    }

    #[test]
    fn start_rows_need_a_session_id() {
        assert!(start_row(&SessionStarted::default()).is_none());
        let s = SessionStarted {
            context: Some(SessionContext {
                session_id: "s".into(),
                ..SessionContext::default()
            }),
            gateway_instance: "i".into(),
            ..SessionStarted::default()
        };
        let row = start_row(&s).unwrap();
        assert_eq!(
            (row.session_id.as_str(), row.gateway_instance.as_str()),
            ("s", "i")
        );
    }
}
