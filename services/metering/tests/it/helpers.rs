//! `spawn_metering` and friends: the bus as the gateway uses it, ClickHouse assertions, and
//! polling under timeouts (never fixed sleeps).

use async_nats::jetstream;
use livegate_common::subjects;
use livegate_metering::Config;
use livegate_proto::prost::Message as _;
use livegate_proto::prost_types::Timestamp;
use livegate_proto::usage::*;
use livegate_test_support::{ClickHouseServer, NatsServer, names};
use rust_decimal::Decimal;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Upper bound for any "eventually" in these tests.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `check` every 50 ms until it returns `Some`, or panics after `PATIENCE` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let result = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    match result {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A test's world: its own NATS, a ClickHouse database, unique bus names.
pub struct World {
    pub nats: NatsServer,
    pub ch: ChRef,
    pub db: String,
    pub js: jetstream::Context,
    pub stream: String,
    pub consumer: String,
    pub bucket: String,
}

/// The shared ClickHouse, or a private one (fault tests stop and restart it).
pub enum ChRef {
    Shared(&'static ClickHouseServer),
    Own(ClickHouseServer),
}

impl std::ops::Deref for ChRef {
    type Target = ClickHouseServer;
    fn deref(&self) -> &ClickHouseServer {
        match self {
            ChRef::Shared(s) => s,
            ChRef::Own(s) => s,
        }
    }
}

impl World {
    pub async fn new() -> Self {
        Self::with(ChRef::Shared(ClickHouseServer::shared().await.unwrap())).await
    }

    pub async fn with_own_clickhouse() -> Self {
        Self::with(ChRef::Own(ClickHouseServer::start().await.unwrap())).await
    }

    /// With `LIVEGATE_USAGE`, `livegate-metering` and `livegate_spend`, as a binary run with
    /// default settings uses them (the NATS server is still this test's own).
    pub async fn with_contract_names() -> Self {
        let mut w = Self::new().await;
        w.js.delete_stream(&w.stream).await.unwrap();
        w.stream = subjects::STREAM.to_string();
        livegate_common::stream::ensure_usage_stream(&w.js, &w.stream, &Default::default())
            .await
            .unwrap();
        w.consumer = subjects::METERING_CONSUMER.to_string();
        w.bucket = subjects::SPEND_BUCKET.to_string();
        w
    }

    async fn with(ch: ChRef) -> Self {
        livegate_test_support::init_crypto();
        livegate_test_support::init_tracing();
        let nats = NatsServer::start().await.unwrap();
        let js = jetstream::new(nats.client().await.unwrap());
        let stream = names::unique("USAGE");
        // As the gateway does before publishing.
        livegate_common::stream::ensure_usage_stream(&js, &stream, &Default::default())
            .await
            .unwrap();
        Self {
            nats,
            ch,
            // Not created here: metering's migrations create it.
            db: names::unique("t_metering"),
            js,
            stream,
            consumer: names::unique("metering"),
            bucket: names::unique("spend"),
        }
    }

    pub fn ch_mut(&mut self) -> &mut ClickHouseServer {
        match &mut self.ch {
            ChRef::Own(s) => s,
            ChRef::Shared(_) => panic!("the shared ClickHouse cannot be stopped"),
        }
    }

    /// A config for this world: small batches, short ack wait so redelivery after an abort
    /// takes seconds, not a minute.
    pub fn config(&self) -> Config {
        let mut c = Config::for_servers(self.nats.url(), self.ch.http_url(), &self.db);
        c.stream = self.stream.clone();
        c.consumer = self.consumer.clone();
        c.spend_bucket = self.bucket.clone();
        c.batch_size = 25;
        c.flush_interval = Duration::from_millis(100);
        c.ack_wait = Duration::from_secs(3);
        c.insert_retries = 3;
        c
    }

    /// The first column of the first row of `sql` (with `{db}` replaced).
    pub async fn scalar(&self, sql: &str) -> String {
        self.ch
            .query(&sql.replace("{db}", &self.db))
            .await
            .unwrap()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Like [`scalar`](Self::scalar) but `None` while ClickHouse or the table is not there.
    pub async fn try_scalar(&self, sql: &str) -> Option<String> {
        self.ch
            .query(&sql.replace("{db}", &self.db))
            .await
            .ok()
            .map(|s| s.lines().next().unwrap_or_default().to_string())
    }

    /// All rows of `sql` as tab-separated lines.
    pub async fn rows(&self, sql: &str) -> Vec<String> {
        self.ch
            .query(&sql.replace("{db}", &self.db))
            .await
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until `SELECT count() FROM {db}.usage_events FINAL` is `n`.
    pub async fn wait_usage_rows(&self, n: u64) {
        eventually(&format!("{n} usage rows"), || async {
            let c = self
                .try_scalar("SELECT count() FROM {db}.usage_events FINAL")
                .await?;
            (c == n.to_string()).then_some(())
        })
        .await;
    }

    /// Waits until `n` sessions are in `sessions FINAL` *and* in `spend_daily FINAL` (ClickHouse
    /// shows a table's rows a moment before the rows its materialized views derive from them).
    pub async fn wait_sessions(&self, n: u64) {
        eventually(
            &format!("{n} sessions in sessions and spend_daily"),
            || async {
                let s = self
                    .try_scalar("SELECT count() FROM {db}.sessions FINAL")
                    .await?;
                let d = self
                    .try_scalar("SELECT sum(sessions) FROM {db}.spend_daily FINAL")
                    .await?;
                (s == n.to_string() && d == n.to_string()).then_some(())
            },
        )
        .await;
    }

    /// The spend KV value for `kv_key`, once present.
    pub async fn spend(&self, kv_key: &str) -> Option<Decimal> {
        let kv = self.js.get_key_value(&self.bucket).await.ok()?;
        let v = kv.get(kv_key).await.ok()??;
        Decimal::from_str(std::str::from_utf8(&v).ok()?).ok()
    }

    /// Waits until the spend KV value for `kv_key` equals `usd`.
    pub async fn wait_spend(&self, kv_key: &str, usd: &str) {
        let want = dec(usd);
        eventually(&format!("spend {kv_key} = {usd}"), || async {
            (self.spend(kv_key).await == Some(want)).then_some(())
        })
        .await;
    }

    pub async fn publish_report(&self, r: &UsageReport) {
        self.publish(subjects::USAGE_REPORT, &r.event_id, r.encode_to_vec())
            .await;
    }

    pub async fn publish_session(&self, e: &SessionEvent) {
        let id = match &e.event {
            Some(session_event::Event::Started(s)) => s.event_id.clone(),
            Some(session_event::Event::Ended(s)) => s.event_id.clone(),
            None => String::new(),
        };
        self.publish(subjects::SESSION_EVENT, &id, e.encode_to_vec())
            .await;
    }

    /// Publishes with `Nats-Msg-Id` = `msg_id` and waits for JetStream's ack.
    pub async fn publish(&self, subject: &str, msg_id: &str, payload: Vec<u8>) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        self.js
            .publish_with_headers(subject.to_string(), headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// A running in-process metering.
pub struct Metering {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Metering {
    /// Graceful shutdown: waits for `run` to return Ok.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Like a crash: the task is aborted wherever it is; nothing is flushed or acked.
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// `GET path` → (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// The value of a metric line starting with `name` (e.g.
    /// `livegate_metering_events_inserted_total`), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Metering {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub async fn spawn_metering(config: Config) -> Metering {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(livegate_metering::run(config, listener, async {
        let _ = rx.await;
    }));
    Metering {
        addr,
        stop: Some(tx),
        task: Some(task),
    }
}

/// A one-shot HTTP/1.0 GET.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// A ClickHouse decimal as text → `Decimal` (normalised for comparison).
pub fn ch_dec(s: &str) -> Decimal {
    Decimal::from_str(s.trim()).unwrap().normalize()
}

pub fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

/// 2027-01-15 08:00:00 UTC: all events of these tests happen on that day.
pub const T0: i64 = 1_800_000_000;

pub fn context(session: &str, key: &str, team: &str, model: &str) -> SessionContext {
    SessionContext {
        session_id: session.into(),
        key_id: key.into(),
        team_id: team.into(),
        user_id: "user-1".into(),
        project: "proj-1".into(),
        location: "us-central1".into(),
        model: model.into(),
        gateway_id: "gw-1".into(),
    }
}

pub fn mt(modality: Modality, n: u64) -> ModalityTokens {
    ModalityTokens {
        modality: modality as i32,
        token_count: n,
    }
}

/// A report as the gateway publishes it: `{session}:{seq}`.
pub fn report(
    ctx: &SessionContext,
    seq: u64,
    tokens: TokenUsage,
    media: MediaMeasurements,
) -> UsageReport {
    UsageReport {
        event_id: format!("{}:{seq}", ctx.session_id),
        context: Some(ctx.clone()),
        seq,
        occurred_at: ts(T0 + seq as i64),
        tokens: Some(tokens),
        media: Some(media),
    }
}

/// A plain text report: `prompt` text tokens in, `response` text tokens out.
pub fn text_report(ctx: &SessionContext, seq: u64, prompt: u64, response: u64) -> UsageReport {
    report(
        ctx,
        seq,
        TokenUsage {
            prompt_tokens: prompt,
            response_tokens: response,
            total_tokens: prompt + response,
            prompt_details: vec![mt(Modality::Text, prompt)],
            response_details: vec![mt(Modality::Text, response)],
            ..TokenUsage::default()
        },
        MediaMeasurements::default(),
    )
}

pub fn started(ctx: &SessionContext) -> SessionEvent {
    SessionEvent {
        event: Some(session_event::Event::Started(SessionStarted {
            event_id: format!("{}:start", ctx.session_id),
            context: Some(ctx.clone()),
            started_at: ts(T0),
            gateway_instance: String::new(),
        })),
    }
}

pub fn ended(
    ctx: &SessionContext,
    reports: u64,
    duration: f64,
    trailing: MediaMeasurements,
) -> SessionEvent {
    SessionEvent {
        event: Some(session_event::Event::Ended(SessionEnded {
            event_id: format!("{}:end", ctx.session_id),
            context: Some(ctx.clone()),
            started_at: ts(T0),
            ended_at: ts(T0 + duration as i64),
            duration_seconds: duration,
            close_code: 1000,
            close_reason: "bye".into(),
            closed_by: ClosedBy::Client as i32,
            frames_in: 10,
            frames_out: 20,
            bytes_in: 1000,
            bytes_out: 2000,
            reports,
            trailing_media: Some(trailing),
            upstream_connections: 3,
            resumptions: 2,
        })),
    }
}
