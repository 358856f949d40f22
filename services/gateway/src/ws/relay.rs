//! The relay loop, generic over `Sink + Stream` so unit tests can drive it with channels.
//!
//! Two directions run concurrently inside one task, each reading one frame, handing it to
//! the meter, and feeding it to the other side before it reads the next. Fed frames are
//! flushed as soon as the reading side has nothing more ready ([`next_or_flush`]): frames that
//! arrive together (a model turn's chunks, `generationComplete` and `turnComplete` with usage
//! usually come in one read) leave in one write instead of one write and one wake-up of the
//! peer each, and nothing waits in a buffer while the relay waits for input. A slow reader
//! still slows its writer (back-pressure): `feed` waits for the socket once tungstenite's
//! write buffer is full, so nothing is buffered beyond it. A third branch watches the idle
//! timer, the session deadline and the drain signal, and a fourth the session's key (revoked,
//! deleted or expired: `UsageSink::key_ended`). Whichever branch finishes first decides
//! how the session ends ([`End`]); the caller then sends the closes, which flush anything fed
//! before them.

use super::close::{self, Close};
use super::inspect::{self, Media};
use super::resume::{self, Resume, Seen};
use crate::metrics::{DirLabel, Metrics};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::future::poll_fn;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// The client sent a close frame.
    ClientClosed(Option<CloseFrame>),
    /// The client's connection ended without a close frame.
    ClientGone(String),
    /// Upstream sent a close frame.
    UpstreamClosed(Option<CloseFrame>),
    /// Upstream's connection ended without a close frame.
    UpstreamGone(String),
    /// The gateway ends the session (drain, budget, limits, oversized frame).
    Gateway(Close),
    /// Upstream announced its end (`goAway`) and the session is at a point to switch to a
    /// new upstream connection (see [`resume`]).
    Switch,
}

/// When the session last saw a real frame, kept across relay runs (a resumption starts a new
/// run; the idle timer goes on).
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Milliseconds after `origin`.
    last: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last.store(self.ms(), Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// Pings to the upstream: every `interval` (zero: never); one unanswered for `pong_timeout`
/// ends the connection as lost ([`End::UpstreamGone`], which a resumption can cure).
#[derive(Debug, Clone, Copy, Default)]
pub struct Keepalive {
    pub interval: Duration,
    pub pong_timeout: Duration,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Counters the session reads after the relay.
#[derive(Debug, Default)]
pub struct Counters {
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// What the upstream→client direction does with a server frame's usage.
pub trait UsageSink {
    /// Called for every server frame carrying `usageMetadata`, with the measurements since
    /// the previous report (client and output), before the frame is forwarded.
    fn report(&self, usage: livegate_proto::usage::TokenUsage, media: Media);
    /// Called after a frame ending a model turn was forwarded: true ends the session (4402).
    fn budget_spent(&self) -> bool;
    /// Called before a client frame that ends a turn is forwarded (`ws::turns`): an error
    /// ends the session with that close, and the frame is not forwarded.
    fn turn_end(&self) -> Result<(), Close> {
        Ok(())
    }
    /// Called for every upstream data frame once inspected, before it is forwarded
    /// (telemetry, `ws::observe`).
    fn server_frame(&self, _frame: &inspect::ServerFrame) {}
    /// Resolves when the session's key may no longer be used (revoked, deleted, expired:
    /// `crate::records`), with the close the client gets; the relay ends then, whatever it
    /// was doing. Never resolves by default.
    fn key_ended(&self) -> impl std::future::Future<Output = Close> {
        std::future::pending()
    }
}

/// Settings and shared state for one relay.
pub struct Relay<'a, U: UsageSink> {
    pub max_frame_bytes: usize,
    pub idle_timeout: Duration,
    pub deadline: Instant,
    pub drain: watch::Receiver<bool>,
    pub drain_grace: Duration,
    pub usage: &'a U,
    pub metrics: &'a Metrics,
    pub counters: &'a Counters,
    /// Client measurements not yet reported (the client→upstream direction adds, the
    /// upstream→client direction takes). Uncontended std mutex: held for an addition.
    pub client_media: &'a Mutex<Media>,
    /// Output measurements not yet reported; taken at the end for `SessionEnded`.
    pub output_media: &'a Mutex<Media>,
    /// Real frames either way (the idle timer), across runs.
    pub activity: &'a Activity,
    /// Resumption state, when this session is resumed transparently.
    pub resume: Option<&'a Mutex<Resume>>,
    pub keepalive: Keepalive,
}

fn lock(m: &Mutex<Media>) -> std::sync::MutexGuard<'_, Media> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn payload(msg: &Message) -> Option<&[u8]> {
    match msg {
        Message::Text(t) => Some(t.as_bytes()),
        Message::Binary(b) => Some(b),
        _ => None,
    }
}

fn too_big(limit: usize) -> Close {
    Close::too_big(limit)
}

/// The next frame from `rx`. When `rx` has nothing ready and frames fed to `tx` are not
/// flushed yet (`unflushed`), they are flushed now, while waiting; a flush error is returned
/// as `Err`.
async fn next_or_flush<R, T>(
    rx: &mut R,
    tx: &mut T,
    unflushed: &mut bool,
) -> Result<Option<Result<Message, WsError>>, WsError>
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
    T: Sink<Message, Error = WsError> + Unpin,
{
    poll_fn(|cx| {
        if let Poll::Ready(m) = rx.poll_next_unpin(cx) {
            return Poll::Ready(Ok(m));
        }
        if *unflushed {
            match tx.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => *unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// `{"goAway":{"timeLeft":"10s"}}`, as Google sends it (binary frame).
pub fn go_away(time_left: Duration) -> Message {
    Message::Binary(format!(r#"{{"goAway":{{"timeLeft":"{}s"}}}}"#, time_left.as_secs()).into())
}

impl<U: UsageSink> Relay<'_, U> {
    /// Relays until one side ends or the gateway ends the session.
    pub async fn run<CS, CR, US, UR>(
        &mut self,
        client_tx: &mut CS,
        client_rx: &mut CR,
        up_tx: &mut US,
        up_rx: &mut UR,
    ) -> End
    where
        CS: Sink<Message, Error = WsError> + Unpin,
        CR: Stream<Item = Result<Message, WsError>> + Unpin,
        US: Sink<Message, Error = WsError> + Unpin,
        UR: Stream<Item = Result<Message, WsError>> + Unpin,
    {
        let activity = self.activity;
        let touch = || activity.touch();
        let resume = self.resume;
        let keepalive = self.keepalive;
        // When the oldest unanswered ping went out (ms after the activity origin, +1; 0: none).
        let ping_out = AtomicU64::new(0);
        let (inject_tx, mut inject_rx) = mpsc::channel::<Message>(1);
        let c2u_dir = DirLabel {
            direction: "client_to_upstream",
        };
        let u2c_dir = DirLabel {
            direction: "upstream_to_client",
        };
        let frames_c2u = self.metrics.frames.get_or_create(&c2u_dir).clone();
        let bytes_c2u = self.metrics.bytes.get_or_create(&c2u_dir).clone();
        let frames_u2c = self.metrics.frames.get_or_create(&u2c_dir).clone();
        let bytes_u2c = self.metrics.bytes.get_or_create(&u2c_dir).clone();
        let go_aways = self.metrics.upstream_go_aways.clone();
        let max = self.max_frame_bytes;
        let usage = self.usage;
        let output_media = self.output_media;
        let client_media = self.client_media;
        let counters = self.counters;
        let idle = self.idle_timeout;
        let deadline = self.deadline;
        let grace = self.drain_grace;
        let drain = &mut self.drain;

        let client_to_upstream = async {
            let mut unflushed = false;
            let mut pings = (!keepalive.interval.is_zero()).then(|| {
                tokio::time::interval_at(Instant::now() + keepalive.interval, keepalive.interval)
            });
            loop {
                let next = tokio::select! {
                    biased;
                    _ = async { match pings.as_mut() { Some(p) => p.tick().await, None => std::future::pending().await } } => {
                        let now = activity.ms() + 1;
                        let out = ping_out.load(Ordering::Relaxed);
                        if out != 0 && Duration::from_millis(now - out) >= keepalive.pong_timeout {
                            return End::UpstreamGone(format!(
                                "upstream did not answer a ping within {}s",
                                keepalive.pong_timeout.as_secs()
                            ));
                        }
                        if out == 0 {
                            ping_out.store(now, Ordering::Relaxed);
                        }
                        if let Err(e) = up_tx.send(Message::Ping(Vec::new().into())).await {
                            return End::UpstreamGone(format!("upstream write failed: {e}"));
                        }
                        unflushed = false;
                        continue;
                    }
                    n = next_or_flush(client_rx, up_tx, &mut unflushed) => n,
                };
                let msg = match next {
                    Err(e) => return End::UpstreamGone(format!("upstream write failed: {e}")),
                    Ok(None) => {
                        return End::ClientGone("connection closed without a close frame".into());
                    }
                    Ok(Some(Err(WsError::Capacity(_)))) => return End::Gateway(too_big(max)),
                    Ok(Some(Err(e))) => return End::ClientGone(e.to_string()),
                    Ok(Some(Ok(m))) => m,
                };
                match &msg {
                    Message::Close(f) => return End::ClientClosed(f.clone()),
                    // Answered by tungstenite; not activity: a client that only pings is idle.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    Message::Text(_) | Message::Binary(_) => {}
                }
                touch();
                if let Some(p) = payload(&msg) {
                    if p.len() > max {
                        return End::Gateway(too_big(max));
                    }
                    // Measured aside: a turn refused below never reaches the upstream, so
                    // its media is not billed.
                    let mut media = Media::default();
                    let frame = inspect::measure_client(p, &mut media);
                    if frame.turn_end
                        && let Err(refused) = usage.turn_end()
                    {
                        return End::Gateway(refused);
                    }
                    lock(client_media).merge(media);
                    if let Some(r) = resume {
                        // Held for a replay before it is sent: a run that ends mid-send
                        // (a switch) still replays it.
                        resume::lock(r).on_client(&msg);
                    }
                    counters.frames_in.fetch_add(1, Ordering::Relaxed);
                    counters
                        .bytes_in
                        .fetch_add(p.len() as u64, Ordering::Relaxed);
                    frames_c2u.inc();
                    bytes_c2u.inc_by(p.len() as u64);
                }
                if let Err(e) = up_tx.feed(msg).await {
                    return End::UpstreamGone(format!("upstream write failed: {e}"));
                }
                unflushed = true;
            }
        };

        let upstream_to_client = async {
            let mut unflushed = false;
            loop {
                let switch_by = resume.and_then(|r| resume::lock(r).switch_by());
                let next = tokio::select! {
                    biased;
                    Some(m) = inject_rx.recv() => {
                        if let Err(e) = client_tx.send(m).await {
                            return End::ClientGone(format!("client write failed: {e}"));
                        }
                        unflushed = false;
                        continue;
                    }
                    m = next_or_flush(up_rx, client_tx, &mut unflushed) => m,
                    () = sleep_until_opt(switch_by) => {
                        if let Err(e) = client_tx.flush().await {
                            return End::ClientGone(format!("client write failed: {e}"));
                        }
                        return End::Switch;
                    }
                };
                let msg = match next {
                    Err(e) => return End::ClientGone(format!("client write failed: {e}")),
                    Ok(None) => {
                        return End::UpstreamGone(
                            "upstream closed the connection without a close frame".into(),
                        );
                    }
                    Ok(Some(Err(WsError::Capacity(_)))) => return End::Gateway(too_big(max)),
                    Ok(Some(Err(e))) => return End::UpstreamGone(e.to_string()),
                    Ok(Some(Ok(m))) => m,
                };
                let mut turn_complete = false;
                let mut seen = Seen::Forward;
                let mut switch = false;
                match &msg {
                    Message::Close(f) => return End::UpstreamClosed(f.clone()),
                    Message::Pong(_) => {
                        ping_out.store(0, Ordering::Relaxed);
                        continue;
                    }
                    Message::Ping(_) | Message::Frame(_) => continue,
                    Message::Text(_) | Message::Binary(_) => {}
                }
                touch();
                if let Some(p) = payload(&msg) {
                    if p.len() > max {
                        return End::Gateway(too_big(max));
                    }
                    let mut out = lock(output_media);
                    let mut frame = inspect::inspect_server(p, &mut out);
                    if frame.go_away.is_some() {
                        go_aways.inc();
                    }
                    if let Some(r) = resume {
                        (seen, switch) = resume::lock(r).on_server(&frame);
                    }
                    if let Some(tokens) = frame.usage.take() {
                        let mut media = std::mem::take(&mut *out);
                        drop(out);
                        media.merge(std::mem::take(&mut *lock(client_media)));
                        usage.report(tokens, media);
                    }
                    usage.server_frame(&frame);
                    turn_complete = frame.turn_complete;
                    counters.frames_out.fetch_add(1, Ordering::Relaxed);
                    counters
                        .bytes_out
                        .fetch_add(p.len() as u64, Ordering::Relaxed);
                    frames_u2c.inc();
                    bytes_u2c.inc_by(p.len() as u64);
                }
                let msg = match seen {
                    Seen::Forward => Some(msg),
                    Seen::Swallow => None,
                    Seen::Replace(m) => Some(m),
                };
                if let Some(msg) = msg {
                    if let Err(e) = client_tx.feed(msg).await {
                        return End::ClientGone(format!("client write failed: {e}"));
                    }
                    unflushed = true;
                }
                if switch {
                    if let Err(e) = client_tx.flush().await {
                        return End::ClientGone(format!("client write failed: {e}"));
                    }
                    return End::Switch;
                }
                if turn_complete && usage.budget_spent() {
                    // The turn reaches the client before the close.
                    if let Err(e) = client_tx.flush().await {
                        return End::ClientGone(format!("client write failed: {e}"));
                    }
                    return End::Gateway(Close::new(
                        close::BUDGET_SPENT,
                        "budget spent for this API key or its team",
                    ));
                }
            }
        };

        let watchdog = async {
            // A session that starts while the gateway is already draining drains at once.
            let mut drain_now = *drain.borrow_and_update();
            loop {
                if drain_now {
                    // The client learns it should reconnect elsewhere, like from Google.
                    let _ = inject_tx.send(go_away(grace)).await;
                    tokio::time::sleep(grace).await;
                    return End::Gateway(Close::new(
                        close::RESTARTING,
                        "gateway restarting; reconnect",
                    ));
                }
                let idle_at = activity.last() + idle;
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {
                        return End::Gateway(Close::new(close::NORMAL, "maximum session duration reached"));
                    }
                    () = tokio::time::sleep_until(idle_at) => {
                        if activity.last().elapsed() >= idle {
                            return End::Gateway(Close::new(close::NORMAL, "idle timeout"));
                        }
                    }
                    changed = drain.changed() => {
                        // A dropped sender means the gateway is going away: drain too.
                        drain_now = changed.is_err() || *drain.borrow_and_update();
                    }
                }
            }
        };

        tokio::select! {
            e = client_to_upstream => e,
            e = upstream_to_client => e,
            e = watchdog => e,
            c = usage.key_ended() => End::Gateway(c),
        }
    }
}

#[cfg(test)]
mod tests;
