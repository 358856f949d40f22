//! Transparent upstream resumption (issue 16): the state a session keeps so that, when the
//! Live API ends its upstream connection (a `goAway`, then a close; or a close a resumption can
//! cure), the gateway opens a new one with the newest `sessionResumptionUpdate.newHandle` and
//! the client keeps its one WebSocket.
//!
//! - [`ResumeConfig`]: the `GATEWAY_RESUM*` / `GATEWAY_UPSTREAM_P*` settings.
//! - [`Resume`]: one session's state, shared by the two relay directions behind a mutex. The
//!   client→upstream direction hands it every client frame before sending it on
//!   ([`Resume::on_client`]): the frame waits in a bounded replay buffer until an update's
//!   `lastConsumedClientMessageIndex` says upstream's state includes it. The
//!   upstream→client direction hands it every `goAway` and update ([`Resume::on_server`]),
//!   which decide what the client sees and when to switch connections.
//! - [`Resume::decide`] turns the way a relay run ended into "resume", "fail with this close"
//!   or "end as usual"; the session then closes the old upstream, reconnects through
//!   [`reconnect`] (a fresh Google token via `upstream::open`, the setup with the handle,
//!   upstream's `setupComplete` swallowed) and replays what upstream had not consumed.
//!
//! When to switch after a `goAway`: at the first update that follows a finished turn (nothing
//! is being generated, so nothing is cut), or at half the `timeLeft`, whichever comes first.
//! Client frames that arrive during the switch stay unread in the client socket (bounded by
//! TCP and tungstenite's buffers), so they wait without a gateway buffer.

use super::close::{self, Close};
use super::inspect::ServerFrame;
use super::relay::End;
use super::upstream::{self, ApiVersion, Upstream};
use crate::state::App;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::str::FromStr;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// When the gateway resumes sessions (`GATEWAY_RESUMPTION`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Never: upstream's `goAway` and close reach the client.
    Off,
    /// When the client's setup has a `sessionResumption` object (the default).
    #[default]
    Client,
    /// Every session (the gateway asks upstream for handles and keeps them to itself).
    Always,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "false" | "0" | "no" => Ok(Self::Off),
            "client" => Ok(Self::Client),
            "always" | "on" | "true" | "1" | "yes" => Ok(Self::Always),
            other => Err(format!("{other:?} is not off, client or always")),
        }
    }
}

/// Resumption and upstream keepalive settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeConfig {
    pub mode: Mode,
    /// Most resumptions per session.
    pub max_resumptions: u32,
    /// No resumption once the session is this old.
    pub max_duration: Duration,
    /// Client frames held until upstream confirms them, in payload bytes.
    pub buffer_bytes: usize,
    /// Pass upstream's `goAway` to the client even when the gateway will resume.
    pub forward_go_away: bool,
    /// Ping the upstream this often (zero: never).
    pub ping_interval: Duration,
    /// A ping unanswered this long means the upstream connection is lost. Google's pongs take
    /// 8–30 s, so clients with a 20 s timeout drop live calls; the default is 60 s.
    pub pong_timeout: Duration,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Client,
            max_resumptions: 50,
            max_duration: Duration::from_secs(24 * 3600),
            buffer_bytes: 2 * 1024 * 1024,
            forward_go_away: false,
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
        }
    }
}

impl ResumeConfig {
    /// These settings bounded by a key's own (`KeyInfo.max_resumptions`,
    /// `max_resumption_seconds`): the smaller of the key's and the gateway's applies, so a key
    /// can resume less than the gateway allows, never more; a key without its own bound gets
    /// the gateway's.
    pub fn for_key(&self, max_resumptions: Option<u32>, max_seconds: Option<u64>) -> Self {
        let mut c = self.clone();
        if let Some(n) = max_resumptions {
            c.max_resumptions = c.max_resumptions.min(n);
        }
        if let Some(s) = max_seconds {
            c.max_duration = c.max_duration.min(Duration::from_secs(s));
        }
        c
    }
}

/// How long the gateway waits for upstream's `setupComplete` on a resume.
const SETUP_COMPLETE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the old upstream gets to finish its close handshake before a resume.
const OLD_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the upstream→client direction does with a server frame.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// Send it on unchanged.
    Forward,
    /// The client does not see it.
    Swallow,
    /// Send this instead (an update whose index is translated to the client's numbering).
    Replace(Message),
}

/// One session's resumption state.
#[derive(Debug)]
pub struct Resume {
    config: ResumeConfig,
    /// The client asked for handles itself: it sees the updates.
    client_asked: bool,
    /// The setup frame as upstream first got it (`sessionResumption.transparent` set, no
    /// handle), kept as bytes: a parsed tree is several times bigger, and it is only needed
    /// again at a resume.
    setup: Vec<u8>,
    handle: Option<String>,
    /// Client frames sent on this connection that upstream has not confirmed:
    /// (index on this connection, frame).
    replay: VecDeque<(u64, Message)>,
    replay_bytes: usize,
    /// The replay buffer outgrew its bound: a resumption would lose frames.
    overflowed: bool,
    /// Index the next client frame gets on this connection (setup is 0).
    next_index: u64,
    /// Client numbering of this connection's index 0: client index = base + upstream index.
    base: u64,
    /// After a `goAway`: switch connections by then at the latest.
    switch_by: Option<Instant>,
    /// Upstream is between turns (its last content frame ended a turn).
    at_boundary: bool,
    resumptions: u32,
    started: Instant,
}

/// `sessionResumption` / `session_resumption` of a setup object.
fn resumption_of(setup: &Map<String, Value>) -> Option<&Value> {
    setup
        .get("sessionResumption")
        .or_else(|| setup.get("session_resumption"))
}

impl Resume {
    /// The resumption state for a session whose setup frame (as rewritten for upstream) is
    /// `frame`, and the setup frame to send upstream instead; `None` when this session is not
    /// resumed (mode, or a setup that is not a JSON object).
    pub fn new(config: &ResumeConfig, frame: &[u8]) -> Option<(Self, Vec<u8>)> {
        if config.mode == Mode::Off {
            return None;
        }
        let mut top: Map<String, Value> = serde_json::from_slice(frame).ok()?;
        let Some(Value::Object(mut setup)) = top.remove("setup") else {
            return None;
        };
        let asked = resumption_of(&setup).filter(|v| v.is_object()).cloned();
        if asked.is_none() && config.mode == Mode::Client {
            return None;
        }
        setup.remove("session_resumption");
        let mut resumption = match asked.clone() {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        // The indexes are what make a resume lossless; Google sends them in transparent mode.
        resumption.insert("transparent".into(), Value::Bool(true));
        // A client resuming its own earlier session: the first upstream connection resumes.
        let handle = resumption
            .remove("handle")
            .and_then(|h| h.as_str().map(str::to_string));
        setup.insert(
            "sessionResumption".into(),
            Value::Object(resumption.clone()),
        );
        let state = Self {
            config: config.clone(),
            client_asked: asked.is_some(),
            setup: json!({ "setup": setup }).to_string().into_bytes(),
            handle: handle.clone(),
            replay: VecDeque::new(),
            replay_bytes: 0,
            overflowed: false,
            next_index: 1,
            base: 0,
            switch_by: None,
            at_boundary: true,
            resumptions: 0,
            started: Instant::now(),
        };
        if let Some(h) = handle {
            resumption.insert("handle".into(), Value::String(h));
            setup.insert("sessionResumption".into(), Value::Object(resumption));
        }
        let first = json!({ "setup": setup }).to_string().into_bytes();
        Some((state, first))
    }

    /// Resumptions done so far.
    pub fn resumptions(&self) -> u32 {
        self.resumptions
    }

    /// Where the relay must switch connections at the latest (after a `goAway`).
    pub fn switch_by(&self) -> Option<Instant> {
        self.switch_by
    }

    /// A resumption is possible now (a handle, within the session's bounds, nothing lost).
    fn can_resume(&self) -> bool {
        self.handle.is_some()
            && !self.overflowed
            && self.resumptions < self.config.max_resumptions
            && self.started.elapsed() < self.config.max_duration
    }

    /// Notes a client data frame about to be sent upstream (kept until upstream confirms it).
    pub fn on_client(&mut self, msg: &Message) {
        let index = self.next_index;
        self.next_index += 1;
        if self.overflowed {
            return;
        }
        let len = msg.len();
        if self.replay_bytes + len > self.config.buffer_bytes {
            tracing::warn!(
                limit = self.config.buffer_bytes,
                "client frames not yet confirmed by upstream exceed the resume buffer; this session can no longer be resumed"
            );
            self.overflowed = true;
            self.replay.clear();
            self.replay_bytes = 0;
            return;
        }
        self.replay_bytes += len;
        self.replay.push_back((index, msg.clone()));
    }

    /// Reads a server frame's `goAway` or `sessionResumptionUpdate`; returns what the client
    /// sees and whether to switch connections now (after sending it).
    pub fn on_server(&mut self, frame: &ServerFrame) -> (Seen, bool) {
        if frame.turn_complete {
            self.at_boundary = true;
        } else if frame.content {
            self.at_boundary = false;
        }
        if let Some(time_left) = frame.go_away {
            if !self.can_resume() {
                return (Seen::Forward, false);
            }
            let by = Instant::now() + time_left / 2;
            self.switch_by = Some(self.switch_by.map_or(by, |b| b.min(by)));
            let seen = if self.config.forward_go_away {
                Seen::Forward
            } else {
                Seen::Swallow
            };
            return (seen, false);
        }
        let Some(update) = &frame.resumption else {
            return (Seen::Forward, false);
        };
        if let Some(h) = &update.handle {
            self.handle = Some(h.clone());
            match update.last_consumed {
                Some(last) => {
                    while let Some((i, m)) = self.replay.front() {
                        if *i > last {
                            break;
                        }
                        self.replay_bytes -= m.len();
                        self.replay.pop_front();
                    }
                }
                // Without an index there is no telling; what was sent counts as consumed.
                None => {
                    self.replay.clear();
                    self.replay_bytes = 0;
                }
            }
        }
        let switch = self.switch_by.is_some() && self.at_boundary && self.can_resume();
        let seen = if !self.client_asked {
            Seen::Swallow
        } else if self.base > 0
            && let Some(last) = update.last_consumed
        {
            // The client numbers its frames from its own setup, across our connections.
            let mut v = json!({"newHandle": update.handle, "resumable": update.handle.is_some(),
                "lastConsumedClientMessageIndex": (self.base + last).to_string()});
            if update.handle.is_none()
                && let Some(o) = v.as_object_mut()
            {
                o.remove("newHandle");
            }
            Seen::Replace(Message::binary(
                json!({ "sessionResumptionUpdate": v }).to_string(),
            ))
        } else {
            Seen::Forward
        };
        (seen, switch)
    }

    /// What to do once a relay run ended this way.
    pub fn decide(&self, end: &End) -> Decision {
        let cause = match end {
            End::Switch => "goAway".to_string(),
            End::UpstreamGone(why) => why.clone(),
            End::UpstreamClosed(f) => {
                let code = f.as_ref().map_or(1005, |f| u16::from(f.code));
                // After a goAway any close is the announced one; otherwise only closes that
                // say "try again" (going away, internal, restart, overload, gateway).
                let curable = self.switch_by.is_some()
                    || matches!(code, 1001 | 1005 | 1006 | 1011 | 1012 | 1013 | 1014);
                if !curable {
                    return Decision::End;
                }
                format!("upstream closed with {code}")
            }
            _ => return Decision::End,
        };
        if self.overflowed && self.handle.is_some() {
            return Decision::Fail(Close::new(
                close::INTERNAL,
                "cannot resume: unconfirmed client frames exceeded GATEWAY_RESUME_BUFFER_BYTES",
            ));
        }
        if self.can_resume() {
            Decision::Resume(cause)
        } else {
            Decision::End
        }
    }

    /// The setup that resumes with the newest handle.
    fn resume_frame(&self) -> Vec<u8> {
        let Ok(mut top) = serde_json::from_slice::<Map<String, Value>>(&self.setup) else {
            // Built by `new` from a parsed setup: always an object.
            return self.setup.clone();
        };
        if let Some(Value::Object(r)) = top
            .get_mut("setup")
            .and_then(|s| s.get_mut("sessionResumption"))
        {
            r.insert(
                "handle".into(),
                self.handle.clone().map_or(Value::Null, Value::String),
            );
        }
        Value::Object(top).to_string().into_bytes()
    }

    /// A new upstream connection completed its setup: the frames to replay on it, renumbered
    /// from 1 (they stay held until it confirms them).
    fn reconnected(&mut self) -> Vec<Message> {
        let first = self.replay.front().map_or(self.next_index, |(i, _)| *i);
        self.base += first - 1;
        let mut out = Vec::with_capacity(self.replay.len());
        for (n, (i, m)) in self.replay.iter_mut().enumerate() {
            *i = n as u64 + 1;
            out.push(m.clone());
        }
        self.next_index = out.len() as u64 + 1;
        self.switch_by = None;
        self.at_boundary = true;
        self.resumptions += 1;
        out
    }
}

/// What a session does after a relay run.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Resume, for this cause.
    Resume(String),
    /// End the session with this close to the client.
    Fail(Close),
    /// End as without resumption.
    End,
}

/// Opens a new upstream connection resuming the session: a fresh Google token (through
/// `upstream::open`), the setup with the newest handle, upstream's `setupComplete` swallowed,
/// then the unconfirmed client frames replayed.
///
/// # Errors
/// The close for the client: the upstream's own close code and reason when it refuses the
/// resume, or the gateway's close when no connection can be had. `connected` is set once a
/// connection was opened (for `upstream_connections`).
pub async fn reconnect(
    app: &App,
    state: &std::sync::Mutex<Resume>,
    location: &str,
    project: &str,
    credentials: Option<&str>,
    version: ApiVersion,
    connected: &mut bool,
) -> Result<Upstream, Close> {
    let mut up = upstream::open(app, location, project, credentials, version).await?;
    *connected = true;
    let frame = lock(state).resume_frame();
    up.send(Message::binary(frame)).await.map_err(|e| {
        Close::new(
            close::TRY_AGAIN_LATER,
            format!("upstream failed during resume: {e}"),
        )
    })?;
    let first = tokio::time::timeout(SETUP_COMPLETE_TIMEOUT, async {
        loop {
            match up.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t.as_bytes().to_vec()),
                Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(Message::Close(f))) => {
                    return Err(f.map_or_else(
                        || Close::new(close::INTERNAL, "upstream refused the resume"),
                        |f| Close::new(u16::from(f.code), f.reason.to_string()),
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(Close::new(
                        close::INTERNAL,
                        format!("upstream lost during resume: {e}"),
                    ));
                }
                None => {
                    return Err(Close::new(close::INTERNAL, "upstream lost during resume"));
                }
            }
        }
    })
    .await
    .map_err(|_| {
        Close::new(
            close::TRY_AGAIN_LATER,
            "upstream did not complete the resume in time",
        )
    })??;
    let ok = serde_json::from_slice::<Map<String, Value>>(&first)
        .is_ok_and(|m| m.contains_key("setupComplete") || m.contains_key("setup_complete"));
    if !ok {
        return Err(Close::new(
            close::INTERNAL,
            "upstream answered the resume without setupComplete",
        ));
    }
    let replay = lock(state).reconnected();
    for m in replay {
        up.feed(m).await.map_err(|e| {
            Close::new(
                close::TRY_AGAIN_LATER,
                format!("upstream failed during replay: {e}"),
            )
        })?;
    }
    up.flush().await.map_err(|e| {
        Close::new(
            close::TRY_AGAIN_LATER,
            format!("upstream failed during replay: {e}"),
        )
    })?;
    Ok(up)
}

/// Closes the old upstream before a resume (Google refuses a resume while it is open) and
/// waits, bounded, for its close handshake; server frames still arriving are handed to
/// `on_frame` (their usage is billed: Google counts it) but not sent to the client. Returns
/// the code of the close frame the upstream answered with (1005 for one without a code;
/// `None` when none came: already closed, dropped, or too slow).
pub async fn close_old<S, R>(tx: &mut S, rx: &mut R, mut on_frame: impl FnMut(&[u8])) -> Option<u16>
where
    S: futures_util::Sink<Message> + Unpin,
    R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut answered = None;
    let _ = tokio::time::timeout(OLD_CLOSE_TIMEOUT, async {
        let _ = tx
            .send(Message::Close(Some(
                tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: close::NORMAL.into(),
                    reason: "resuming on a new connection".into(),
                },
            )))
            .await;
        while let Some(Ok(m)) = rx.next().await {
            match &m {
                Message::Text(t) => on_frame(t.as_bytes()),
                Message::Binary(b) => on_frame(b),
                Message::Close(f) => {
                    answered = Some(f.as_ref().map_or(1005, |f| u16::from(f.code)));
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    answered
}

pub(crate) fn lock(m: &std::sync::Mutex<Resume>) -> std::sync::MutexGuard<'_, Resume> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
