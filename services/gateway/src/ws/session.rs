//! One client session's life, from the upgraded socket to `SessionEnded`: prepare (the
//! [`policy`](super::policy) checks, the `setup` frame read and rewritten, the upstream
//! opened and sent the setup), relay with a [`Meter`], then close both sides as the way the
//! relay ended requires, count the session, and publish its end.

use super::close::{self, Close};
use super::meter::Meter;
use super::policy;
use super::relay::{Activity, End, Keepalive, Relay, UsageSink as _};
use super::request::{Presented, Query};
use super::resume::{self, Decision, Resume};
use super::setup::{self, Placement};
use super::upstream::{self, ApiVersion, Upstream};
use crate::auth::Grant;
use crate::state::App;
use futures_util::{Sink, SinkExt, StreamExt};
use livegate_proto::usage::{ClosedBy, SessionContext};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Longest wait for a close handshake before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the HTTP layer learned before upgrading.
pub struct Request {
    pub credential: Presented,
    pub query: Query,
    pub version: ApiVersion,
    pub peer: std::net::SocketAddr,
}

fn new_session_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn close_msg(c: &Close) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(c.code),
        reason: c.reason.clone().into(),
    }))
}

async fn close_ws<S>(ws: &mut S, c: &Close)
where
    S: Sink<Message> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if let Some(notice) = &c.notice {
            let _ = ws.feed(Message::text(notice.clone())).await;
        }
        let _ = ws.send(close_msg(c)).await;
        let _ = ws.close().await;
    })
    .await;
}

/// Runs a session on an upgraded client socket until it ends.
pub async fn run<S>(app: App, client: WebSocketStream<S>, req: Request)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tracing::Instrument;
    let session_id = new_session_id();
    let span = super::observe::session_span(&session_id, req.peer);
    serve(app, client, req, session_id, span.clone())
        .instrument(span)
        .await;
}

async fn serve<S>(
    app: App,
    mut client: WebSocketStream<S>,
    req: Request,
    session_id: String,
    span: tracing::Span,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Everything before the relay either yields what the relay needs or a close for the client.
    // Boxed: its state (key check, token, upstream connect) is large and only needed until the
    // relay starts, so it lives on the heap and is freed then instead of sizing every
    // session's task for the whole session.
    let prepared = Box::pin(prepare(&app, &mut client, &req, &span)).await;
    let Prepared {
        grant,
        setup,
        setup_bytes,
        upstream,
        resume,
        limits,
        slot: _slot,
    } = match prepared {
        Ok(p) => p,
        Err(c) => {
            tracing::info!(close.code = c.code, close.reason = %c.reason, "session refused");
            app.metrics
                .sessions_total
                .get_or_create(&crate::metrics::CodeLabel { code: c.code })
                .inc();
            close_ws(&mut client, &c).await;
            return;
        }
    };
    let key = &grant.key;
    let context = SessionContext {
        session_id,
        key_id: key.key_id.clone(),
        team_id: key.team_id.clone(),
        user_id: key.user_id.clone(),
        project: setup.project.clone(),
        location: setup.location.clone(),
        model: setup.model_id.clone(),
        gateway_id: app.config.gateway_id.clone(),
    };
    let meter = Meter::start(&app, context, limits, setup_bytes);
    tracing::info!(model = %setup.model_id, project = %setup.project, location = %setup.location, "session started");
    app.metrics.sessions_active.inc();

    let (mut up_tx, mut up_rx) = upstream.split();
    let (mut client_tx, mut client_rx) = client.split();
    let resume = resume.map(std::sync::Mutex::new);
    let activity = Activity::default();
    // Whether the end's upstream close (if any) is still to be counted: false once a failed
    // resume already counted the connection it was about.
    let mut count_upstream_end = true;
    let end = {
        let mut relay = Relay {
            max_frame_bytes: app.config.max_frame_bytes,
            idle_timeout: app.config.idle_timeout,
            deadline: tokio::time::Instant::now() + app.config.max_session,
            drain: app.drain.subscribe(),
            drain_grace: app.config.drain_grace,
            usage: &meter,
            metrics: &app.metrics,
            counters: &meter.counters,
            client_media: &meter.client_media,
            output_media: &meter.output_media,
            activity: &activity,
            resume: resume.as_ref(),
            keepalive: Keepalive {
                interval: app.config.resumption.ping_interval,
                pong_timeout: app.config.resumption.pong_timeout,
            },
        };
        loop {
            let end = relay
                .run(&mut client_tx, &mut client_rx, &mut up_tx, &mut up_rx)
                .await;
            let Some(state) = resume.as_ref() else {
                break end;
            };
            let decision = resume::lock(state).decide(&end);
            let cause = match decision {
                Decision::End => break end,
                Decision::Fail(c) => {
                    // The old upstream's own close, if it closed, is counted.
                    meter.observe_end(&end);
                    app.metrics
                        .resumptions
                        .get_or_create(&crate::metrics::ResultLabel { result: "failed" })
                        .inc();
                    break End::Gateway(c);
                }
                Decision::Resume(cause) => cause,
            };
            tracing::info!(cause = %cause, "resuming on a new upstream connection");
            // Google refuses a resume while the old connection is open: close it first. What
            // it still sends is billed (Google counts it) but not shown to the client.
            let answered =
                resume::close_old(&mut up_tx, &mut up_rx, |p| bill_unsent(&meter, p)).await;
            // Telemetry: the old connection ends here (its span gets its close code, the close
            // is counted), whoever closed it.
            meter
                .observer
                .upstream_closed(old_close_code(&end, answered));
            let mut connected = false;
            // Boxed: the connect's state is large and only alive during a resume.
            let reconnect = Box::pin(resume::reconnect(
                &app,
                state,
                &setup.location,
                &setup.project,
                setup.credentials.as_deref(),
                req.version,
                &mut connected,
            ));
            // The relay no longer watches the key: a key revoked, deleted or expired before
            // or during the resume ends the session here, and no new upstream connection is
            // opened for it (one being opened is dropped unused).
            let opened = tokio::select! {
                biased;
                c = meter.key_ended() => Err(c),
                opened = reconnect => Ok(opened),
            };
            if connected {
                meter
                    .upstream_connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // A span and a count per upstream connection, resumed ones included.
                meter.observer.upstream_connected();
            }
            match opened {
                Err(key_ended) => break End::Gateway(key_ended),
                Ok(Ok(up)) => {
                    (up_tx, up_rx) = up.split();
                    meter
                        .resumptions
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    app.metrics
                        .resumptions
                        .get_or_create(&crate::metrics::ResultLabel { result: "ok" })
                        .inc();
                    tracing::info!(resumptions = resume::lock(state).resumptions(), "resumed");
                }
                Ok(Err(c)) => {
                    app.metrics
                        .resumptions
                        .get_or_create(&crate::metrics::ResultLabel { result: "failed" })
                        .inc();
                    tracing::warn!(close.code = c.code, close.reason = %c.reason, "resumption failed");
                    // Without a new connection there is no upstream close left to count: the
                    // old one's was counted above.
                    count_upstream_end = connected;
                    // The client gets the upstream's close code and reason.
                    break End::UpstreamClosed(Some(CloseFrame {
                        code: CloseCode::from(c.code),
                        reason: c.reason.into(),
                    }));
                }
            }
        }
    };

    if count_upstream_end {
        meter.observe_end(&end);
    }
    let (code, reason, closed_by) = close_both(&end, &mut client_tx, &mut up_tx).await;
    app.metrics.sessions_active.dec();
    app.metrics
        .sessions_total
        .get_or_create(&crate::metrics::CodeLabel { code })
        .inc();
    let (duration, reports) = meter.end(code, &reason, closed_by);
    tracing::info!(close.code = code, close.reason = %reason, closed_by = ?closed_by, duration_s = duration, reports, "session ended");
}

/// The close code of the upstream connection a resumption replaces: its own close when it
/// closed (1005 without a code; `None` when it dropped), else (a switch after `goAway`) the
/// code it answered the gateway's close with, if it answered.
fn old_close_code(end: &End, answered: Option<u16>) -> Option<u16> {
    match end {
        End::UpstreamClosed(f) => Some(f.as_ref().map_or(1005, |f| u16::from(f.code))),
        End::UpstreamGone(_) => None,
        _ => answered,
    }
}

/// Closes both sides as `end` requires and returns what the session records: the close code
/// and reason (what the client was told, or what it told us) and who closed.
async fn close_both<C, U>(end: &End, client_tx: &mut C, up_tx: &mut U) -> (u16, String, ClosedBy)
where
    C: Sink<Message> + Unpin,
    U: Sink<Message> + Unpin,
{
    match end {
        End::ClientClosed(f) => {
            let (code, reason) = f
                .as_ref()
                .map(|f| (u16::from(f.code), f.reason.to_string()))
                .unwrap_or((1005, String::new()));
            let upstream_close = Close::new(
                if code == 1005 { close::NORMAL } else { code },
                reason.clone(),
            );
            close_ws(up_tx, &upstream_close).await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, client_tx.close()).await;
            (code, reason, ClosedBy::Client)
        }
        End::ClientGone(why) => {
            close_ws(up_tx, &Close::new(1001, "client disconnected")).await;
            (1006, why.clone(), ClosedBy::Client)
        }
        End::UpstreamClosed(f) => {
            let c = f
                .as_ref()
                .map(|f| Close::new(u16::from(f.code), f.reason.to_string()))
                .unwrap_or_else(|| Close::new(close::NORMAL, "upstream closed the session"));
            // A close without a status (1005) cannot be sent on; report a normal close.
            let c = if c.code == 1005 {
                Close::new(close::NORMAL, c.reason)
            } else {
                c
            };
            close_ws(client_tx, &c).await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, up_tx.close()).await;
            (c.code, c.reason, ClosedBy::Upstream)
        }
        End::UpstreamGone(why) => {
            tracing::warn!(cause = %why, "upstream connection lost");
            let c = Close::new(close::INTERNAL, "upstream connection lost");
            close_ws(client_tx, &c).await;
            (c.code, c.reason, ClosedBy::Upstream)
        }
        End::Switch => {
            // Only when a switch could not become a resumption (its bounds ran out meanwhile).
            let c = Close::new(1001, "upstream connection ended");
            close_ws(client_tx, &c).await;
            close_ws(up_tx, &Close::new(close::NORMAL, c.reason.clone())).await;
            (c.code, c.reason, ClosedBy::Upstream)
        }
        End::Gateway(c) => {
            close_ws(client_tx, c).await;
            close_ws(up_tx, &Close::new(close::NORMAL, c.reason.clone())).await;
            (c.code, c.reason.clone(), ClosedBy::Gateway)
        }
    }
}

/// What a session needs once the upstream has its setup.
struct Prepared {
    grant: std::sync::Arc<Grant>,
    /// The rewritten setup (its frame already sent and released).
    setup: setup::Setup,
    /// Size of the setup frame sent upstream.
    setup_bytes: usize,
    upstream: Upstream,
    /// Transparent resumption, when this session has it.
    resume: Option<Resume>,
    /// The key's and team's records as they change (revocation, expiry, budgets).
    limits: crate::records::Limits,
    /// The key's concurrent-session slot, released when the session ends.
    slot: crate::limits::Slot,
}

/// Everything before the relay, in order: credential, budget, session slot, the setup frame
/// (read, rewritten, allowed), the upstream opened and sent the setup.
async fn prepare<S>(
    app: &App,
    client: &mut WebSocketStream<S>,
    req: &Request,
    span: &tracing::Span,
) -> Result<Prepared, Close>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let credential = policy::require_credential(&req.credential)?;
    let grant = policy::authenticate(app, credential).await?;
    let key = &grant.key;
    span.record("key_id", key.key_id.as_str());
    tracing::debug!(
        credential.source = credential.place.as_str(),
        browser_token = grant.browser_token,
        "credential accepted"
    );
    policy::check_budget(app, key)?;
    // Watched from here: a revocation while the upstream opens still reaches the relay. A
    // key the mirror already shows revoked, deleted or expired (auth's answer was cached, or
    // given just before) is refused here.
    let limits = policy::watch_limits(app, key)?;
    let slot = policy::acquire_slot(app, key)?;

    let first = first_frame(client, app.config.setup_timeout).await?;
    if first.len() > app.config.max_frame_bytes {
        return Err(Close::new(close::TOO_BIG, "setup frame too large"));
    }
    let placement = Placement {
        query_project: req.query.project.clone(),
        query_location: req.query.location.clone(),
        key_project: key.default_project.clone(),
        key_location: key.default_location.clone(),
        config_project: app.config.default_project.clone(),
        config_location: app.config.default_location.clone(),
        model_list: app.config.model_list.clone(),
        developer_api: req.version.is_developer(),
    };
    let mut setup = setup::rewrite(&first, &placement)?;
    drop(first);
    policy::check_setup(&grant, &setup)?;

    // The key's own resumption bounds, within the gateway's.
    let bounds = app
        .config
        .resumption
        .for_key(key.max_resumptions, key.max_resumption_seconds);
    let resume = match Resume::new(&bounds, &setup.frame) {
        Some((state, frame)) => {
            setup.frame = frame;
            Some(state)
        }
        None => None,
    };
    // The setup frame may have taken `GATEWAY_SETUP_TIMEOUT`: no upstream connection for a
    // key that ended meanwhile.
    policy::still_usable(&limits)?;
    let mut upstream = upstream::open(
        app,
        &setup.location,
        &setup.project,
        setup.credentials.as_deref(),
        req.version,
    )
    .await?;
    // Sent, then forgotten: a long system instruction should not stay in every session's memory.
    let setup_bytes = setup.frame.len();
    upstream
        .send(Message::binary(std::mem::take(&mut setup.frame)))
        .await
        .map_err(|e| {
            Close::new(
                close::TRY_AGAIN_LATER,
                format!("upstream failed during setup: {e}"),
            )
        })?;
    Ok(Prepared {
        grant,
        setup,
        setup_bytes,
        upstream,
        resume,
        limits,
        slot,
    })
}

/// The client's first data frame, which must be setup, within `timeout` (pings skipped).
async fn first_frame<S>(
    client: &mut WebSocketStream<S>,
    timeout: Duration,
) -> Result<Vec<u8>, Close>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(timeout, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t.as_bytes().to_vec()),
                Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => {
                    return Err(Close::new(close::NORMAL, "client closed before setup"));
                }
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                    return Err(Close::new(close::TOO_BIG, "frame too large"));
                }
                Some(Err(e)) => return Err(Close::new(close::POLICY, format!("bad frame: {e}"))),
            }
        }
    })
    .await
    .map_err(|_| Close::new(close::POLICY, "setup not received in time"))?
}

/// Bills a server frame the client never sees (the old upstream's last frames before a
/// resume): its usage is reported like a relayed frame's.
fn bill_unsent(meter: &Meter<'_>, frame: &[u8]) {
    let lock = |m: &std::sync::Mutex<super::inspect::Media>| {
        std::mem::take(&mut *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    };
    let mut out = meter
        .output_media
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let parsed = super::inspect::inspect_server(frame, &mut out);
    drop(out);
    if let Some(tokens) = parsed.usage {
        let mut media = lock(&meter.output_media);
        media.merge(lock(&meter.client_media));
        meter.report(tokens, media);
    }
}
