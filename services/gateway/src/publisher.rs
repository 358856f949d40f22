//! The usage publisher: usage and session events to JetStream, without ever blocking a session.
//!
//! Sessions hand events to [`Bus::send`], which never waits: events go into a bounded queue
//! ([`Config::event_buffer`](crate::Config)). One publisher task drains it in order: when an
//! event arrives at an idle publisher it lets more gather for
//! [`Config::bus_linger`](crate::Config) (a few milliseconds; metering batches far longer), so
//! a busy gateway makes one NATS round trip per batch instead of one per model turn. It
//! publishes batches with `Nats-Msg-Id` = the event id (so JetStream drops duplicates of a retry) and
//! waits for the acks; a failed batch is retried from its first unacknowledged event with
//! backoff until NATS is back. When the queue is full the event is dropped, counted in
//! `livegate_gateway_bus_dropped_total` and logged: never silently.
//!
//! The publisher runs on a thread of its own ([`spawn`]), with its own single-threaded
//! runtime and its own NATS connection: publishing, acks and NATS socket traffic then never
//! occupy or wake the runtime threads that relay frames (on a 2-core machine that cut the
//! wake-ups of relay threads by about one per model turn).
//!
//! The same thread heartbeats this process's lease ([`heartbeat`]): the key
//! `Config::instance_id` in the `livegate_leases` bucket, rewritten every lease/3. It runs
//! beside the publisher so that a process whose events can still flow keeps its lease, and it
//! ends (deleting the key) only after the publisher has flushed every `SessionEnded`: a clean
//! stop never leaves sessions for metering to close as lost.

use crate::metrics::Metrics;
use async_nats::jetstream;
use bytes::Bytes;
use livegate_common::subjects;
use prost::Message;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Events published per round trip.
const BATCH: usize = 256;
/// How long a batch may wait for its acks.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// One event ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: &'static str,
    pub msg_id: String,
    pub payload: Bytes,
}

impl Outgoing {
    /// A `UsageReport`.
    pub fn report(r: &livegate_proto::usage::UsageReport) -> Self {
        Self {
            subject: subjects::USAGE_REPORT,
            msg_id: r.event_id.clone(),
            payload: r.encode_to_vec().into(),
        }
    }

    /// A `SessionEvent` with its event id.
    pub fn session(event_id: String, e: &livegate_proto::usage::SessionEvent) -> Self {
        Self {
            subject: subjects::SESSION_EVENT,
            msg_id: event_id,
            payload: e.encode_to_vec().into(),
        }
    }
}

/// The sending side, cloned into every session.
#[derive(Clone)]
pub struct Bus {
    tx: mpsc::Sender<Outgoing>,
    metrics: Metrics,
    /// The publisher's NATS client, once its thread has created it (for readiness).
    client: Arc<OnceLock<async_nats::Client>>,
}

impl Bus {
    /// Whether the publisher's own NATS connection is up.
    pub fn connected(&self) -> bool {
        self.client
            .get()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected)
    }

    /// Queues an event; never waits. Returns false when the buffer was full (counted, logged).
    pub fn send(&self, event: Outgoing) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => {
                self.metrics.bus_buffered.inc();
                true
            }
            Err(mpsc::error::TrySendError::Full(e)) => {
                self.metrics.bus_dropped.inc();
                tracing::error!(event_id = %e.msg_id, subject = e.subject, "usage event dropped: bus buffer full (NATS unreachable for too long?)");
                false
            }
            Err(mpsc::error::TrySendError::Closed(e)) => {
                self.metrics.bus_dropped.inc();
                tracing::error!(event_id = %e.msg_id, subject = e.subject, "usage event dropped: the usage publisher has ended");
                false
            }
        }
    }
}

/// Where and how the publisher thread connects and publishes.
pub struct Settings {
    pub nats: async_nats::ConnectOptions,
    /// The servers (`NATS_URL`, possibly several).
    pub nats_url: Vec<async_nats::ServerAddr>,
    pub stream: String,
    /// Replicas and byte limit of the usage stream and the leases bucket.
    pub layout: livegate_common::stream::StreamLayout,
    pub capacity: usize,
    pub linger: Duration,
    pub metrics: Metrics,
    /// Cancelled when the gateway stops: the publisher flushes what is queued and ends.
    pub stop: tokio_util::sync::CancellationToken,
    /// How long it may keep trying to flush after `stop` (see [`Publisher::run`]).
    pub flush_deadline: Duration,
    /// This process's lease (see [`heartbeat`]).
    pub lease: LeaseSettings,
}

/// What [`heartbeat`] writes, and how often.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The key: this process's instance id.
    pub instance_id: String,
    pub gateway_id: String,
    /// Renewed every third of it.
    pub lease: Duration,
    /// Replicas of the leases bucket.
    pub layout: livegate_common::stream::StreamLayout,
}

/// Starts the publisher on a thread of its own (a single-threaded runtime and a NATS
/// connection of its own) and returns the bus and a receiver that completes when the
/// publisher has ended (after `stop`, with everything flushed or given up on).
///
/// # Errors
/// The thread or its runtime cannot be created.
pub fn spawn(s: Settings) -> std::io::Result<(Bus, tokio::sync::oneshot::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(s.capacity.max(1));
    let client_slot = Arc::new(OnceLock::new());
    let bus = Bus {
        tx,
        metrics: s.metrics.clone(),
        client: client_slot.clone(),
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    // The runtime is built on the thread (a runtime must not be dropped inside another one,
    // which a failed spawn would do); the thread reports whether that worked.
    let (built_tx, built_rx) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
    std::thread::Builder::new()
        .name("usage-publisher".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => {
                    let _ = built_tx.send(Ok(()));
                    r
                }
                Err(e) => {
                    let _ = built_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                // retry_on_initial_connect: this returns at once and connects in the
                // background; events wait in the queue meanwhile.
                match s.nats.connect(&s.nats_url).await {
                    Ok(client) => {
                        let _ = client_slot.set(client.clone());
                        let js = jetstream::new(client);
                        let publisher = Publisher {
                            js: js.clone(),
                            stream: s.stream,
                            layout: s.layout,
                            rx,
                            linger: s.linger,
                            metrics: s.metrics,
                        };
                        let published = tokio_util::sync::CancellationToken::new();
                        let beat = heartbeat(js, s.lease, published.clone());
                        let publish = async {
                            publisher.run(s.stop, s.flush_deadline).await;
                            published.cancel();
                        };
                        tokio::join!(beat, publish);
                    }
                    Err(e) => {
                        // Unreachable in practice: the gateway's own connection with the
                        // same URL succeeded first. Never silent all the same.
                        tracing::error!(error.message = %e, "usage publisher cannot connect to NATS; usage events will be dropped");
                        drop(rx);
                    }
                }
            });
            let _ = done_tx.send(());
        })?;
    // Waits only for the runtime to be built (start-up, once).
    built_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("usage publisher thread ended early")))?;
    Ok((bus, done_rx))
}

/// Writes this process's lease every lease/3 until `done` (the publisher has flushed), then
/// deletes it. A failed write is logged and tried again at the next beat: the lease has room
/// for two missed beats.
pub async fn heartbeat(
    js: jetstream::Context,
    s: LeaseSettings,
    done: tokio_util::sync::CancellationToken,
) {
    let value: Bytes = match serde_json::to_vec(&livegate_common::leases::Lease {
        gateway_id: s.gateway_id.clone(),
        lease_ms: u64::try_from(s.lease.as_millis()).unwrap_or(u64::MAX),
    }) {
        Ok(v) => v.into(),
        Err(e) => {
            tracing::error!(error.message = %e, "cannot encode the gateway lease; metering will close this gateway's sessions as lost");
            return;
        }
    };
    let every = s.lease / 3;
    let mut bucket: Option<jetstream::kv::Store> = None;
    loop {
        if bucket.is_none() {
            match livegate_common::leases::open_with(&js, &s.layout).await {
                Ok(b) => bucket = Some(b),
                Err(e) => tracing::warn!(error.message = %e, "cannot open the leases bucket yet"),
            }
        }
        if let Some(b) = &bucket {
            let put = tokio::time::timeout(every, b.put(&s.instance_id, value.clone()));
            match put.await {
                Ok(Ok(_)) => tracing::trace!(instance = %s.instance_id, "lease renewed"),
                Ok(Err(e)) => tracing::warn!(error.message = %e, "cannot renew the gateway lease"),
                Err(_) => tracing::warn!("renewing the gateway lease timed out"),
            }
        }
        tokio::select! {
            () = done.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
    if let Some(b) = bucket {
        // Every session's end is published: nothing of this process is left to close.
        if let Ok(Err(e)) = tokio::time::timeout(every, b.delete(&s.instance_id)).await {
            tracing::warn!(error.message = %e, "cannot delete the gateway lease at shutdown");
        }
    }
}

/// The publishing task's state.
pub struct Publisher {
    js: jetstream::Context,
    stream: String,
    layout: livegate_common::stream::StreamLayout,
    rx: mpsc::Receiver<Outgoing>,
    linger: Duration,
    metrics: Metrics,
}

impl Publisher {
    /// Publishes until `stop` is cancelled and everything queued so far is acknowledged. If
    /// that takes longer than `flush_deadline` after `stop` (NATS unreachable), the attempt
    /// in progress is abandoned and the rest is logged and counted as lost.
    pub async fn run(
        mut self,
        stop: tokio_util::sync::CancellationToken,
        flush_deadline: Duration,
    ) {
        let give_up = async {
            stop.cancelled().await;
            tokio::time::sleep(flush_deadline).await;
        };
        tokio::pin!(give_up);
        let mut stream_ready = false;
        let mut pending: VecDeque<Outgoing> = VecDeque::new();
        let mut backoff = Duration::from_millis(50);
        loop {
            if pending.is_empty() {
                if stop.is_cancelled() && self.rx.is_empty() {
                    return;
                }
                tokio::select! {
                    e = self.rx.recv() => match e {
                        Some(e) => pending.push_back(e),
                        None => return,
                    },
                    () = stop.cancelled(), if !stop.is_cancelled() => continue,
                }
                if !self.linger.is_zero() && !stop.is_cancelled() {
                    tokio::select! {
                        () = tokio::time::sleep(self.linger) => {}
                        () = stop.cancelled() => {}
                    }
                }
            }
            while pending.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(e) => pending.push_back(e),
                    Err(_) => break,
                }
            }
            let attempt = async {
                if !stream_ready {
                    match livegate_common::stream::ensure_usage_stream(
                        &self.js,
                        &self.stream,
                        &self.layout,
                    )
                    .await
                    {
                        Ok(_) => stream_ready = true,
                        Err(e) => {
                            tracing::warn!(error.message = %e, "cannot ensure the usage stream yet")
                        }
                    }
                }
                if stream_ready {
                    self.publish(&pending).await
                } else {
                    0
                }
            };
            let acked = tokio::select! {
                acked = attempt => acked,
                () = &mut give_up => return self.give_up(&pending),
            };
            for _ in 0..acked {
                pending.pop_front();
            }
            self.metrics.bus_buffered.dec_by(acked as i64);
            if acked > 0 && pending.is_empty() {
                backoff = Duration::from_millis(50);
                continue;
            }
            if acked == 0 {
                tokio::select! {
                    () = &mut give_up => return self.give_up(&pending),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }

    /// Counts and logs everything not yet acknowledged as lost (the flush deadline passed).
    fn give_up(&self, pending: &VecDeque<Outgoing>) {
        let lost = pending.len() + self.rx.len();
        tracing::error!(
            lost,
            "gave up publishing usage events at shutdown: NATS unreachable"
        );
        self.metrics.bus_dropped.inc_by(lost as u64);
    }

    /// Publishes `batch` in order and returns how many from the front were acknowledged.
    async fn publish(&self, batch: &VecDeque<Outgoing>) -> usize {
        let mut acks = Vec::with_capacity(batch.len());
        for e in batch {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", e.msg_id.as_str());
            match self
                .js
                .publish_with_headers(e.subject, headers, e.payload.clone())
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(err) => {
                    self.metrics.bus_publish_failures.inc();
                    tracing::warn!(error.message = %err, "JetStream publish failed; will retry");
                    break;
                }
            }
        }
        let results = tokio::time::timeout(
            ACK_TIMEOUT,
            futures_util::future::join_all(
                acks.into_iter().map(std::future::IntoFuture::into_future),
            ),
        )
        .await;
        let Ok(results) = results else {
            self.metrics.bus_publish_failures.inc();
            tracing::warn!("JetStream acks timed out; will retry");
            return 0;
        };
        let mut acked = 0;
        for r in results {
            match r {
                Ok(_) => acked += 1,
                Err(err) => {
                    self.metrics.bus_publish_failures.inc();
                    tracing::warn!(error.message = %err, "JetStream did not acknowledge an event; will retry");
                    break;
                }
            }
        }
        self.metrics.bus_published.inc_by(acked as u64);
        acked
    }
}
