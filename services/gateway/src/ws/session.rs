//! One client session, from the upgraded socket to `SessionEnded`: authenticate, limit, read
//! and rewrite `setup`, open the upstream, relay, close both sides, publish the end.

use super::close::{self, Close};
use super::inspect::Media;
use super::relay::{Counters, End, Relay, UsageSink};
use super::request::{Credential, Query};
use super::setup::{self, Placement};
use super::upstream::{self, ApiVersion};
use crate::auth::{CheckError, Grant, TokenError};
use crate::publisher::Outgoing;
use crate::state::App;
use futures_util::{SinkExt, StreamExt};
use livegate_proto::usage::{
    ClosedBy, SessionContext, SessionEnded, SessionEvent, SessionStarted, TokenUsage, UsageReport,
    session_event,
};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Longest wait for a close handshake before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the HTTP layer learned before upgrading.
pub struct Request {
    pub credential: Option<Credential>,
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
    S: futures_util::Sink<Message> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = ws.send(close_msg(c)).await;
        let _ = ws.close().await;
    })
    .await;
}

/// Publishes usage reports for the relay and answers its budget question.
struct Meter<'a> {
    app: &'a App,
    context: SessionContext,
    seq: AtomicU64,
    max_budget: String,
}

impl UsageSink for Meter<'_> {
    fn report(&self, tokens: TokenUsage, mut media: Media) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let report = UsageReport {
            event_id: format!("{}:{seq}", self.context.session_id),
            context: Some(self.context.clone()),
            seq,
            occurred_at: Some(SystemTime::now().into()),
            tokens: Some(tokens),
            media: Some(media.take()),
        };
        self.app.bus.send(Outgoing::report(&report));
    }

    fn budget_spent(&self) -> bool {
        !self.max_budget.is_empty()
            && self
                .app
                .spend
                .budget_spent(&self.context.key_id, &self.max_budget)
    }
}

/// Runs a session on an upgraded client socket until it ends.
pub async fn run<S>(app: App, client: WebSocketStream<S>, req: Request)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tracing::Instrument;
    let session_id = new_session_id();
    let span = tracing::info_span!("session", %session_id, peer = %req.peer, key_id = tracing::field::Empty);
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
        session_id: session_id.clone(),
        key_id: key.key_id.clone(),
        team_id: key.team_id.clone(),
        user_id: key.user_id.clone(),
        project: setup.project.clone(),
        location: setup.location.clone(),
        model: setup.model_id.clone(),
        gateway_id: app.config.gateway_id.clone(),
    };
    let started_at = SystemTime::now();
    app.bus.send(Outgoing::session(
        format!("{session_id}:start"),
        &SessionEvent {
            event: Some(session_event::Event::Started(SessionStarted {
                event_id: format!("{session_id}:start"),
                context: Some(context.clone()),
                started_at: Some(started_at.into()),
            })),
        },
    ));
    tracing::info!(model = %setup.model_id, project = %setup.project, location = %setup.location, "session started");
    app.metrics.sessions_active.inc();

    let meter = Meter {
        app: &app,
        context: context.clone(),
        seq: AtomicU64::new(0),
        max_budget: key.max_budget_usd.clone(),
    };
    let counters = Counters::default();
    let client_media = Mutex::new(Media::default());
    let output_media = Mutex::new(Media::default());
    // The setup frame itself counts as relayed.
    counters.frames_in.store(1, Ordering::Relaxed);
    counters
        .bytes_in
        .store(setup_bytes as u64, Ordering::Relaxed);

    let (mut up_tx, mut up_rx) = upstream.split();
    let (mut client_tx, mut client_rx) = client.split();
    let mut relay = Relay {
        max_frame_bytes: app.config.max_frame_bytes,
        idle_timeout: app.config.idle_timeout,
        deadline: tokio::time::Instant::now() + app.config.max_session,
        drain: app.drain.subscribe(),
        drain_grace: app.config.drain_grace,
        usage: &meter,
        metrics: &app.metrics,
        counters: &counters,
        client_media: &client_media,
        output_media: &output_media,
    };
    let end = relay
        .run(&mut client_tx, &mut client_rx, &mut up_tx, &mut up_rx)
        .await;

    // Close both sides as the end requires; record what the client was told.
    let (code, reason, closed_by) = match &end {
        End::ClientClosed(f) => {
            let (code, reason) = f
                .as_ref()
                .map(|f| (u16::from(f.code), f.reason.to_string()))
                .unwrap_or((1005, String::new()));
            let upstream_close = Close::new(
                if code == 1005 { close::NORMAL } else { code },
                reason.clone(),
            );
            close_ws(&mut up_tx, &upstream_close).await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, client_tx.close()).await;
            (code, reason, ClosedBy::Client)
        }
        End::ClientGone(why) => {
            close_ws(&mut up_tx, &Close::new(1001, "client disconnected")).await;
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
            close_ws(&mut client_tx, &c).await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, up_tx.close()).await;
            (c.code, c.reason, ClosedBy::Upstream)
        }
        End::UpstreamGone(why) => {
            tracing::warn!(cause = %why, "upstream connection lost");
            let c = Close::new(close::INTERNAL, "upstream connection lost");
            close_ws(&mut client_tx, &c).await;
            (c.code, c.reason, ClosedBy::Upstream)
        }
        End::Gateway(c) => {
            close_ws(&mut client_tx, c).await;
            close_ws(&mut up_tx, &Close::new(close::NORMAL, c.reason.clone())).await;
            (c.code, c.reason.clone(), ClosedBy::Gateway)
        }
    };
    app.metrics.sessions_active.dec();
    app.metrics
        .sessions_total
        .get_or_create(&crate::metrics::CodeLabel { code })
        .inc();

    let mut trailing = std::mem::take(
        &mut *client_media
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    trailing.merge(std::mem::take(
        &mut *output_media
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    ));
    let ended_at = SystemTime::now();
    let duration = ended_at
        .duration_since(started_at)
        .unwrap_or_default()
        .as_secs_f64();
    let reports = meter.seq.load(Ordering::Relaxed);
    app.bus.send(Outgoing::session(
        format!("{session_id}:end"),
        &SessionEvent {
            event: Some(session_event::Event::Ended(SessionEnded {
                event_id: format!("{session_id}:end"),
                context: Some(context),
                started_at: Some(started_at.into()),
                ended_at: Some(ended_at.into()),
                duration_seconds: duration,
                close_code: u32::from(code),
                close_reason: reason.clone(),
                closed_by: closed_by as i32,
                frames_in: counters.frames_in.load(Ordering::Relaxed),
                frames_out: counters.frames_out.load(Ordering::Relaxed),
                bytes_in: counters.bytes_in.load(Ordering::Relaxed),
                bytes_out: counters.bytes_out.load(Ordering::Relaxed),
                reports,
                trailing_media: Some(trailing.take()),
            })),
        },
    ));
    tracing::info!(close.code = code, close.reason = %reason, closed_by = ?closed_by, duration_s = duration, reports, "session ended");
}

type Upstream = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a session needs once the upstream has its setup.
struct Prepared {
    grant: std::sync::Arc<Grant>,
    /// The rewritten setup (its frame already sent and released).
    setup: setup::Setup,
    /// Size of the setup frame sent upstream.
    setup_bytes: usize,
    upstream: Upstream,
    /// The key's concurrent-session slot, released when the session ends.
    slot: crate::limits::Slot,
}

async fn prepare<S>(
    app: &App,
    client: &mut WebSocketStream<S>,
    req: &Request,
    span: &tracing::Span,
) -> Result<Prepared, Close>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let credential = req
        .credential
        .as_ref()
        .ok_or_else(|| Close::new(close::UNAUTHORIZED, "missing API key"))?;
    let grant = app
        .auth
        .check(&credential.value)
        .await
        .map_err(|e| match e {
            CheckError::Rejected(m) => Close::new(close::UNAUTHORIZED, m),
            CheckError::Unavailable(m) => {
                tracing::error!(cause = %m, "auth unavailable");
                Close::new(close::INTERNAL, "auth service unavailable")
            }
        })?;
    let key = &grant.key;
    span.record("key_id", key.key_id.as_str());
    tracing::debug!(
        credential.source = credential.source,
        browser_token = grant.browser_token,
        "credential accepted"
    );
    // Either view may be ahead: the gateway's KV mirror or the spend auth just reported.
    let spent_per_auth = !key.max_budget_usd.is_empty()
        && matches!(
            (key.spend_usd.parse::<rust_decimal::Decimal>(), key.max_budget_usd.parse::<rust_decimal::Decimal>()),
            (Ok(spend), Ok(budget)) if spend >= budget
        );
    if spent_per_auth
        || (!key.max_budget_usd.is_empty()
            && app.spend.budget_spent(&key.key_id, &key.max_budget_usd))
    {
        return Err(Close::new(
            close::BUDGET_SPENT,
            "budget spent for this API key",
        ));
    }
    let slot = app
        .sessions
        .acquire(&key.key_id, key.max_concurrent_sessions)
        .ok_or_else(|| {
            Close::new(
                close::TOO_MANY,
                format!(
                    "concurrent session limit ({}) reached for this API key",
                    key.max_concurrent_sessions
                ),
            )
        })?;

    // The first frame must be setup, within the timeout.
    let first = tokio::time::timeout(app.config.setup_timeout, async {
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
    .map_err(|_| Close::new(close::POLICY, "setup not received in time"))??;
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
    };
    let mut setup = setup::rewrite(&first, &placement)?;
    drop(first);
    if !key.allowed_projects.is_empty() && !key.allowed_projects.iter().any(|p| p == &setup.project)
    {
        return Err(Close::new(
            close::FORBIDDEN,
            format!("project {} is not allowed for this API key", setup.project),
        ));
    }
    let model_ok =
        key.allowed_models.is_empty() || key.allowed_models.iter().any(|m| m == &setup.model_id);
    let bound_ok = grant.bound_model.is_empty() || grant.bound_model == setup.model_id;
    if !model_ok || !bound_ok {
        return Err(Close::new(
            close::FORBIDDEN,
            format!("model {} is not allowed for this API key", setup.model_id),
        ));
    }

    let token = app.auth.access_token().await.map_err(|e| match e {
        TokenError::NotConfigured(m) => {
            tracing::warn!(cause = %m, "no Google credentials");
            Close::new(
                close::NO_CREDENTIALS,
                "Vertex AI credentials not configured",
            )
        }
        TokenError::Unavailable(m) => {
            tracing::error!(cause = %m, "no Google access token");
            Close::new(close::INTERNAL, "cannot obtain a Google access token")
        }
    })?;
    let url = upstream::url(
        app.config.vertex_live_url.as_deref(),
        &setup.location,
        req.version,
    );
    let mut upstream = connect_upstream(app, &url, &token, &setup.project).await?;
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
        slot,
    })
}

async fn connect_upstream(
    app: &App,
    url: &str,
    token: &str,
    project: &str,
) -> Result<Upstream, Close> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Close::new(close::INTERNAL, format!("invalid upstream URL: {e}")))?;
    let h = request.headers_mut();
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| Close::new(close::INTERNAL, "access token is not a valid header"))?;
    h.insert(http::header::AUTHORIZATION, bearer);
    if let Ok(p) = project.parse() {
        h.insert("x-goog-user-project", p);
    }
    let ws_config = crate::ws::socket_config(app.config.max_frame_bytes);
    let started = std::time::Instant::now();
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    let result = tokio::time::timeout(app.config.upstream_connect_timeout, connect).await;
    app.metrics
        .upstream_connect_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Err(_) => Err(Close::new(
            close::TRY_AGAIN_LATER,
            "upstream unreachable: connect timed out",
        )),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            tracing::warn!(
                status = resp.status().as_u16(),
                "upstream refused the handshake"
            );
            Err(Close::new(
                close::TRY_AGAIN_LATER,
                format!(
                    "upstream refused the handshake: HTTP {}",
                    resp.status().as_u16()
                ),
            ))
        }
        Ok(Err(e)) => {
            tracing::warn!(cause = %e, "upstream unreachable");
            Err(Close::new(
                close::TRY_AGAIN_LATER,
                format!("upstream unreachable: {e}"),
            ))
        }
    }
}
