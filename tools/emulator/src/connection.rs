//! The socket loop of one session: reads client frames, feeds them to the [`Session`] state
//! machine, sends its frames (delayed replies keep their order), and runs the go-away and
//! close timers. One task per session, no per-session threads or buffers beyond tungstenite's.
//!
//! A connection on a Gemini Developer API path speaks that API's dialect: its setup names the
//! model `models/{id}` (anything else is refused with 1008, as Google does; the state machine
//! then sees the model as a resource path), and its usage reports carry the Developer API's
//! output field names (`responseTokenCount`, `responseTokensDetails`).

use crate::behaviour::{Behaviour, UsageNames, proto_duration};
use crate::replies::Replies;
use crate::server::LiveApi;
use crate::session::{Close, Session, SessionEnv, Snapshot};
use crate::state::{DEFAULT_HANDLE_TTL, Shared, bump};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};
use tokio_util::sync::CancellationToken;

/// Largest client message accepted; bigger ones get close 1009.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// How long to wait for the client's close reply after sending ours.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// tungstenite settings: small eager read buffer so 20,000 idle sessions stay cheap; the
/// library's own limits sit above [`MAX_MESSAGE_BYTES`] so we can answer with 1009 ourselves.
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(2 * MAX_MESSAGE_BYTES))
        .max_frame_size(Some(2 * MAX_MESSAGE_BYTES))
}

struct Env<'a> {
    shared: &'a Shared,
    behaviour: &'a Behaviour,
    api: LiveApi,
}

impl SessionEnv for Env<'_> {
    fn usage_names(&self) -> UsageNames {
        match self.api {
            LiveApi::Vertex => self.behaviour.usage_names,
            LiveApi::Developer => UsageNames::Developer,
        }
    }
    fn open(&self, session: &str) {
        self.shared.open_session(session);
    }
    fn resume(&self, handle: &str) -> Result<(String, Snapshot), Close> {
        let ttl = self.behaviour.handle_ttl.unwrap_or(DEFAULT_HANDLE_TTL);
        self.shared.resume(handle, ttl)
    }
    fn issue_handle(&self, session: &str, snapshot: Snapshot) -> String {
        self.shared.issue_handle(session, snapshot)
    }
    fn consumed(&self, session: &str, index: u64, kind: &str, data: &[u8]) {
        if self.behaviour.record_consumed {
            self.shared.record_consumed(session, index, kind, data);
        }
    }
}

/// Sends frames, counting them and recording their usage *before* they hit the wire, so a
/// client that has read a frame always finds its usage recorded.
struct Outbox {
    seq: u64,
}

impl Outbox {
    async fn send<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        shared: &Shared,
        session_id: &str,
        frames: Vec<Value>,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let text = shared.behaviour().text_frames;
        for frame in frames {
            if let Some(usage) = frame.get("usageMetadata") {
                self.seq += 1;
                shared.record_usage(session_id, self.seq, usage);
            }
            bump(&shared.counters.frames_out);
            let json = frame.to_string();
            let msg = if text {
                Message::text(json)
            } else {
                Message::binary(json.into_bytes())
            };
            ws.feed(msg).await?;
        }
        ws.flush().await
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Keeps the active-session gauge right however the task ends.
struct ActiveGuard<'a>(&'a Shared);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0
            .counters
            .active_sessions
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The project the state machine sees Developer API sessions under (it speaks resource paths).
const DEVELOPER_PROJECT_PATH: &str = "projects/developer-api/locations/global/publishers/google/";

/// A Developer API setup message with its `models/{id}` as the resource path the state machine
/// expects; `Ok(None)` for anything that is not a setup with a string model (the state machine
/// answers those).
///
/// # Errors
/// The close Google sends for a model not named `models/{id}`.
fn developer_setup(data: &[u8]) -> Result<Option<bytes::Bytes>, Close> {
    let Ok(mut v) = serde_json::from_slice::<Value>(data) else {
        return Ok(None);
    };
    let Some(model) = v.pointer_mut("/setup/model") else {
        return Ok(None);
    };
    let Some(name) = model.as_str() else {
        return Ok(None);
    };
    match name.strip_prefix("models/") {
        Some(id) if !id.is_empty() && !id.contains('/') => {
            *model = Value::String(format!("{DEVELOPER_PROJECT_PATH}models/{id}"));
            Ok(Some(bytes::Bytes::from(v.to_string())))
        }
        _ => Err(Close {
            code: 1008,
            reason: crate::wire::close_reason(&format!(
                "{name} is not found for API version, or is not supported for bidiGenerateContent."
            )),
        }),
    }
}

/// Serves one upgraded WebSocket until either side closes or `cancel` fires.
pub(crate) async fn serve<S>(
    mut ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    api: LiveApi,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    shared
        .counters
        .active_sessions
        .fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(&shared);
    let mut session = Session::new(shared.new_session_id());
    let mut out = Outbox { seq: 0 };
    let mut go_away_at: Option<(Instant, Duration)> = None;
    let mut close_at: Option<(Instant, Close)> = None;
    let mut pending = Replies::default();
    // Whether this connection holds its session (set up, new or resumed).
    let mut started = false;

    let close = loop {
        let next_reply = pending.next_at();
        let go_away = go_away_at.map(|(at, _)| at);
        let closing = close_at.as_ref().map(|(at, _)| *at);
        let sent = tokio::select! {
            biased;
            () = cancel.cancelled() => break Some(Close { code: 1001, reason: "server shutting down".into() }),
            () = sleep_until_opt(closing) => break close_at.take().map(|(_, c)| c),
            () = sleep_until_opt(go_away) => {
                let left = go_away_at.take().map(|(_, d)| d).unwrap_or_default();
                let frame = json!({"goAway": {"timeLeft": proto_duration(left)}});
                out.send(&mut ws, &shared, session.id(), vec![frame]).await
            }
            () = sleep_until_opt(next_reply) => out.send(&mut ws, &shared, session.id(), pending.pop_due()).await,
            msg = ws.next() => {
                let data: bytes::Bytes = match msg {
                    Some(Ok(Message::Text(t))) => t.into(),
                    Some(Ok(Message::Binary(b))) => b,
                    // A client close is answered by tungstenite and the stream then ends; the
                    // session is free for a resume from now on, before the answer goes out.
                    Some(Ok(Message::Close(_))) => {
                        if std::mem::take(&mut started) {
                            shared.close_session(session.id(), out.seq);
                        }
                        continue;
                    }
                    // Pings are answered by tungstenite.
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracing::debug!(session = session.id(), error.message = %e, "read failed");
                        break None;
                    }
                    None => break None,
                };
                bump(&shared.counters.frames_in);
                if data.len() > MAX_MESSAGE_BYTES {
                    break Some(Close { code: 1009, reason: format!("message larger than {MAX_MESSAGE_BYTES} bytes") });
                }
                let data = if api == LiveApi::Developer && !started {
                    match developer_setup(&data) {
                        Ok(Some(rewritten)) => rewritten,
                        Ok(None) => data,
                        Err(close) => break Some(close),
                    }
                } else {
                    data
                };
                let behaviour = shared.behaviour();
                let mut step = session.on_message(&data, &Env { shared: &shared, behaviour: &behaviour, api });
                if step.started {
                    tracing::debug!(session = session.id(), resumed = step.resumed, "setup complete");
                    started = true;
                    if !behaviour.setup_delay.is_zero() {
                        tokio::time::sleep(behaviour.setup_delay).await;
                    }
                    if step.resumed {
                        bump(&shared.counters.resumed_sessions);
                        out.seq = shared.usage_seq(session.id());
                    }
                    let now = Instant::now();
                    if let Some(age) = &behaviour.connection_age {
                        go_away_at = Some((now + age.limit.saturating_sub(age.go_away_lead), age.go_away_lead));
                        close_at = Some((now + age.limit, Close { code: age.code, reason: crate::wire::close_reason(&age.reason) }));
                    } else {
                        if let Some(after) = behaviour.go_away_after {
                            go_away_at = Some((now + after, behaviour.go_away_time_left()));
                        }
                        if let Some((after, code, reason)) = &behaviour.close_after {
                            close_at = Some((now + *after, Close { code: *code, reason: crate::wire::close_reason(reason) }));
                        }
                    }
                }
                let mut r = Ok(());
                if step.barge_in {
                    // A reply still being generated is cut short first.
                    step.immediate.splice(0..0, pending.interrupt());
                }
                if !step.immediate.is_empty() {
                    r = out.send(&mut ws, &shared, session.id(), step.immediate).await;
                }
                if step.close.is_some() {
                    if r.is_err() {
                        break None;
                    }
                    break step.close;
                }
                if !step.reply.is_empty() && r.is_ok() {
                    if behaviour.response_delay.is_zero() && behaviour.frame_interval.is_zero() && pending.is_empty() {
                        r = out.send(&mut ws, &shared, session.id(), step.reply).await;
                    } else {
                        pending.push(step.reply, step.cut, behaviour.response_delay, behaviour.frame_interval);
                    }
                }
                r
            }
        };
        if let Err(e) = sent {
            tracing::debug!(session = session.id(), error.message = %e, "write failed");
            break None;
        }
    };

    // Free for a resume before the close goes out: a client that resumes as soon as it sees
    // our close must not be refused as still open.
    if started {
        shared.close_session(session.id(), out.seq);
    }
    if let Some(Close { code, reason }) = close {
        tracing::debug!(session = session.id(), code, reason, "closing session");
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        if ws.close(Some(frame)).await.is_ok() {
            // Wait (bounded) for the client's close reply so the close handshake completes.
            let drain = async { while let Some(Ok(_)) = ws.next().await {} };
            let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
        }
    }
    tracing::debug!(session = session.id(), "session ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn developer_setups_name_models_by_id() {
        let out = developer_setup(br#"{"setup":{"model":"models/gemini-3.8-live","x":1}}"#)
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["setup"]["model"],
            "projects/developer-api/locations/global/publishers/google/models/gemini-3.8-live"
        );
        assert_eq!(v["setup"]["x"], 1);
        for bad in [
            "gemini-3.8-live",
            "projects/p/locations/l/publishers/google/models/m",
            "models/",
            "models/a/b",
        ] {
            let frame = json!({"setup": {"model": bad}}).to_string();
            let close = developer_setup(frame.as_bytes()).unwrap_err();
            assert_eq!(close.code, 1008, "{bad}");
            assert!(close.reason.len() <= 123);
        }
        // Not a setup with a string model: the state machine answers.
        for other in [
            &b"not json"[..],
            br#"{"clientContent":{}}"#,
            br#"{"setup":{"model":1}}"#,
        ] {
            assert!(developer_setup(other).unwrap().is_none());
        }
    }
}
