//! livegate's gateway (`livegate-gateway`): the client-facing Live API WebSocket relay.
//!
//! - [`config`]: [`Config`], loaded once by `main`.
//! - `server`: accept loop, routing, health/metrics/token endpoints, the WebSocket upgrade.
//! - `ws`: one session: credential and query parsing (`request`), `setup` rewriting
//!   (`setup`), the upstream URL (`upstream`), the relay loop (`relay`), frame metering
//!   (`inspect`), close codes (`close`), and the session's life (`session`).
//! - `auth`: `CheckKey` and Google tokens from the auth service, cached.
//! - `bus`: usage events to JetStream through a bounded, retrying queue.
//! - `views`: spend totals and key changes mirrored from NATS KV.
//! - `limits`: concurrent sessions per key.
//! - `metrics`: Prometheus metrics.
//! - `workers`: relay threads, each a single-threaded runtime owning its connections.
//! - [`run`]: serves until the shutdown future resolves, then drains.

pub mod config;

mod auth;
mod bus;
mod limits;
mod metrics;
mod server;
mod state;
mod views;
mod workers;
mod ws;

pub use config::Config;

use anyhow::Context as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long the publisher may keep trying to flush usage events after the drain.
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key in {}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("building the TLS configuration")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

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
        Some((c, k)) => Some(tls_acceptor(c, k)?),
        None => None,
    };
    let metrics = metrics::Metrics::new();
    let nats_options = |role: &str| {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .name(format!("livegate-gateway {}{role}", config.gateway_id))
    };
    let nats = nats_options("")
        .connect(&config.nats_url)
        .await
        .with_context(|| format!("NATS URL {}", config.nats_url))?;
    let js = async_nats::jetstream::new(nats.clone());
    let stop = CancellationToken::new();
    let auth = Arc::new(auth::AuthClient::new(
        &config.auth_url,
        config.internal_token.clone(),
        config.auth_cache_ttl,
        metrics.clone(),
    )?);
    let spend = views::start(
        js.clone(),
        config.spend_bucket.clone(),
        config.keys_bucket.clone(),
        auth.clone(),
        stop.clone(),
    );
    let flush = CancellationToken::new();
    // Should this future be dropped instead of finishing, the publisher thread still
    // flushes (bounded) and ends.
    let _flush_on_drop = flush.clone().drop_guard();
    let (bus, publisher) = bus::spawn(bus::Settings {
        nats: nats_options(" publisher"),
        nats_url: config.nats_url.clone(),
        stream: config.stream.clone(),
        capacity: config.event_buffer,
        linger: config.bus_linger,
        metrics: metrics.clone(),
        stop: flush.clone(),
        flush_deadline: FLUSH_DEADLINE,
    })
    .context("starting the usage publisher thread")?;
    let grace = config.drain_grace;
    let relay_threads = config.relay_threads;
    let app = state::App {
        config: Arc::new(config),
        auth,
        bus,
        spend,
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
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(error.message = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let serve = async move |tcp: TcpStream| match tls {
            None => server::serve_connection(app, tcp, peer).await,
            Some(acceptor) => match acceptor.accept(tcp).await {
                Ok(stream) => server::serve_connection(app, stream, peer).await,
                Err(e) => tracing::debug!(%peer, error.message = %e, "TLS handshake failed"),
            },
        };
        let Some(workers) = &workers else {
            tokio::spawn(serve(tcp));
            continue;
        };
        // Move the socket to a relay thread: it leaves this runtime's reactor here and joins
        // the relay thread's there.
        let tcp = match tcp.into_std() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(%peer, error.message = %e, "could not hand a connection to a relay thread");
                continue;
            }
        };
        workers.spawn(async move {
            match TcpStream::from_std(tcp) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::warn!(%peer, error.message = %e, "could not register a connection on a relay thread"),
            }
        });
    }

    drop(listener);
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
    flush.cancel();
    drop(app);
    if let Some(workers) = workers {
        // Joining threads blocks: not on this runtime's own threads.
        let _ = tokio::task::spawn_blocking(move || drop(workers)).await;
    }
    let _ = publisher.await;
    tracing::info!("livegate-gateway stopped");
    Ok(())
}
