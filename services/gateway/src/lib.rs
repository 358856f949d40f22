//! livegate's gateway (`livegate-gateway`): the client-facing Live API WebSocket relay.
//!
//! - [`config`]: [`Config`], loaded once by `main`.
//! - `server`: the accept loop and TLS, routing, the health/readiness/metrics and token
//!   endpoints, and the WebSocket upgrade.
//! - `ws`: one session: credential and query parsing (`request`), the pre-relay checks
//!   (`policy`), `setup` rewriting (`setup`), the upstream URL and connection (`upstream`),
//!   the relay loop (`relay`), frame measuring (`inspect`), usage and session events
//!   (`meter`), close codes (`close`), and the session's life (`session`).
//! - `auth`: `CheckKey` and Google tokens from the auth service, cached.
//! - `publisher`: usage and session events to JetStream through a bounded, retrying queue,
//!   and this process's lease heartbeat (`livegate_leases`).
//! - `mirrors`: spend totals and key-record changes mirrored from NATS KV.
//! - `records`: key and team records as live sessions watch them (revocation, expiry, budgets).
//! - `limits`: concurrent sessions per key, and open client connections (total and per IP).
//! - `metrics`: Prometheus metrics.
//! - `state`: what every connection shares.
//! - `workers`: relay threads, each a single-threaded runtime owning its connections.
//! - [`run`] (this file): starts those parts, serves until the shutdown future resolves,
//!   then drains.

pub mod config;

mod auth;
mod limits;
mod metrics;
mod mirrors;
mod publisher;
mod records;
mod server;
mod state;
mod workers;
mod ws;

pub use config::Config;
pub use ws::resume::{Mode as ResumptionMode, ResumeConfig};

/// The parsers that read untrusted client and upstream bytes, exported for the fuzz targets
/// in `fuzz/` and their corpus replay test (`tests/it/fuzz_corpus.rs`). Not an API.
#[doc(hidden)]
pub mod untrusted {
    pub use crate::ws::close::{self, Close};
    pub use crate::ws::inspect::{Media, ServerFrame, inspect_server, measure_client};
    pub use crate::ws::request::{Credential, Query, credential, parse_query};
    pub use crate::ws::setup::{Placement, Setup, rewrite};
}

use anyhow::Context as _;
use livegate_common::nats::Role;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long the publisher may keep trying to flush usage events after the drain.
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// Serves on `listener` until `shutdown` resolves, then drains: new upgrades are refused,
/// every session gets a `goAway` and is closed with 1012 after the grace period, and queued
/// usage events are flushed to NATS before returning.
///
/// # Errors
/// Bad TLS files or an invalid auth URL; NATS being down is not an error (events wait).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let tls = match &config.tls {
        Some((c, k)) => Some(server::tls::acceptor(c, k)?),
        None => None,
    };
    let metrics = metrics::Metrics::with_max_keys(config.metrics_max_keys);
    let pricing = Arc::new(
        livegate_common::pricing::Pricing::load(config.pricing_file.as_deref())
            .context("loading PRICING_FILE")?,
    );
    // One table for the whole process, shared by every session and reloaded in place on
    // SIGHUP: the next priced report and the next turn's check use the new prices.
    let stop_reload = CancellationToken::new();
    #[expect(
        clippy::disallowed_methods,
        reason = "owned by this future: awaited after the drain, aborted if it is dropped"
    )]
    let reload = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        livegate_common::pricing::reload_on_sighup(pricing.clone(), stop_reload.clone(), {
            let reloads = metrics.pricing_reloads.clone();
            move |outcome| {
                reloads
                    .get_or_create(&metrics::OutcomeLabel {
                        outcome: outcome.as_str(),
                    })
                    .inc();
            }
        }),
    ));
    // Credentials, TLS and the gateway's inbox prefix come from `config.nats` (one parser for
    // every service); the publisher gets a connection of its own with the same settings.
    let nats_base = || {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
    };
    let nats = config
        .nats
        .connect(nats_base(), Role::Gateway, &config.gateway_id)
        .await?;
    let js = async_nats::jetstream::new(nats.clone());
    let stop = CancellationToken::new();
    let auth = Arc::new(auth::AuthClient::new(
        &config.auth_url,
        config.internal_token.clone(),
        config.auth_cache_ttl,
        metrics.clone(),
    )?);
    let (spend, records) = mirrors::start(
        js.clone(),
        *config.nats.layout(),
        config.spend_bucket.clone(),
        config.keys_bucket.clone(),
        auth.clone(),
        metrics.key_records_ignored.clone(),
        stop.clone(),
    );
    let flush = CancellationToken::new();
    // Should this future be dropped instead of finishing, the publisher thread still
    // flushes (bounded) and ends.
    let _flush_on_drop = flush.clone().drop_guard();
    let (bus, publisher_done) = publisher::spawn(publisher::Settings {
        nats: config.nats.apply(
            nats_base(),
            Role::Gateway,
            &format!("{} publisher", config.gateway_id),
        )?,
        nats_url: config.nats.server_addrs()?,
        stream: config.stream.clone(),
        layout: *config.nats.layout(),
        capacity: config.event_buffer,
        linger: config.bus_linger,
        metrics: metrics.clone(),
        stop: flush.clone(),
        flush_deadline: FLUSH_DEADLINE,
        lease: publisher::LeaseSettings {
            instance_id: config.instance_id.clone(),
            gateway_id: config.gateway_id.clone(),
            lease: config.lease,
            layout: *config.nats.layout(),
        },
    })
    .context("starting the usage publisher thread")?;
    let grace = config.drain_grace;
    let relay_threads = config.relay_threads;
    let app = state::App {
        config: Arc::new(config),
        auth,
        bus,
        spend,
        records,
        pricing,
        sessions: limits::Sessions::default(),
        metrics,
        drain: Arc::new(tokio::sync::watch::channel(false).0),
        draining: Arc::new(AtomicBool::new(false)),
        nats,
        tracker: tokio_util::task::TaskTracker::new(),
    };

    let workers = match relay_threads {
        0 => None,
        n => Some(workers::Workers::start(n).context("starting the relay threads")?),
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    tracing::info!(
        %addr,
        scheme,
        relay_threads = workers.as_ref().map_or(0, workers::Workers::len),
        "livegate-gateway listening on {addr}"
    );
    server::accept_until(listener, tls, workers.as_ref(), &app, shutdown).await;

    let active = app.tracker.len();
    tracing::info!(
        sessions = active,
        grace_s = grace.as_secs_f64(),
        "draining: goAway sent, closing sessions with 1012 after the grace period"
    );
    app.draining.store(true, Ordering::Relaxed);
    app.drain.send_replace(true);
    app.tracker.close();
    if tokio::time::timeout(grace + Duration::from_secs(5), app.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = app.tracker.len(),
            "sessions still running after the drain period"
        );
    }
    stop.cancel();
    stop_reload.cancel();
    flush.cancel();
    let _ = reload.await;
    drop(app);
    if let Some(workers) = workers {
        // Joining threads blocks: not on this runtime's own threads.
        let _ = tokio::task::spawn_blocking(move || drop(workers)).await;
    }
    let _ = publisher_done.await;
    tracing::info!("livegate-gateway stopped");
    Ok(())
}
