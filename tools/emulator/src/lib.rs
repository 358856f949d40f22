//! `livegate-emulator`: a faithful local stand-in for the Vertex AI Live API
//! (`BidiGenerateContent` over WebSocket), for tests, benchmarks and the no-credentials demo.
//! It also serves the Gemini Developer API's Live paths ([`DEVELOPER_PATHS`], API-key auth),
//! and records every handshake ([`Emulator::handshakes`]) so tests can tell which upstream
//! and which credential a connection used.
//!
//! Module map:
//! - [`config`]: [`EmulatorConfig`] (tokens, service-account keys, initial behaviour).
//! - [`behaviour`]: [`Behaviour`] knobs changeable at run time (go-away, forced close, reply
//!   delay, generation pace, usage names, frame type).
//! - `server`: accept loop, routing, bearer / JWT auth, the WebSocket upgrade in hyper.
//! - `connection`: one session's socket loop (timers, delayed replies, recording).
//! - `session`: the protocol state machine, free of I/O (`session/live38.rs`: what Gemini
//!   3.8 Live adds).
//! - `replies`: replies waiting to go out, at the generation pace, and interruptions.
//! - [`usage`]: the token-counting formulas.
//! - `jwt`: RS256 self-signed JWT verification.
//! - `slow_pong`: holds client pings back so pongs come as late as Google's.
//! - `state`: counters, recorded usage, resumption handles shared by all sessions.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use livegate_emulator::{Emulator, EmulatorConfig};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let emulator = Emulator::start(listener, EmulatorConfig::default()).await;
//! println!("{}", emulator.url());
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```

pub mod behaviour;
pub mod config;
mod connection;
mod jwt;
mod replies;
mod server;
mod session;
mod slow_pong;
mod state;
pub mod usage;
mod wire;

pub use behaviour::{Behaviour, ConnectionAge, UsageNames};
pub use config::{ConfigError, EmulatorConfig, ServiceAccountKey};
pub use connection::MAX_MESSAGE_BYTES;
pub use jwt::CLOUD_PLATFORM_SCOPE;
pub use server::{DEVELOPER_PATHS, Handshake, LIVE_PATHS, LiveApi, MAX_HANDSHAKES};
pub use state::{
    ConsumedMessage, DEFAULT_HANDLE_TTL, MAX_CONSUMED, MAX_RECORDED_USAGE, RecordedUsage, Stats,
};

use state::Shared;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long [`Emulator::shutdown`] waits for sessions to finish their close handshakes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running emulator. Dropping it stops the server too (without waiting).
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    front: Arc<server::Front>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Emulator {
    /// Starts serving on `listener` (already bound, so clients can connect at once).
    ///
    /// Service-account keys that do not parse are logged and ignored (call
    /// [`EmulatorConfig::validate`] first to refuse them instead).
    pub async fn start(listener: TcpListener, config: EmulatorConfig) -> Emulator {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut keys = jwt::KeySet::default();
        for k in &config.service_account_keys {
            match jwt::parse_public_key(&k.public_key_pem) {
                Ok(key) => keys.insert(k.kid.clone(), key),
                Err(e) => {
                    tracing::error!(kid = %k.kid, error.message = %e, "service-account key ignored")
                }
            }
        }
        let auth_required = config.auth_required();
        let shared = Arc::new(Shared::new(
            config.tokens,
            keys,
            auth_required,
            config.behaviour,
        ));
        let front = Arc::new(server::Front::new(config.developer_api_keys));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(server::accept_loop(
            listener,
            shared.clone(),
            front.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        tracing::debug!(%addr, auth_required, "emulator started");
        Emulator {
            addr,
            shared,
            front,
            cancel,
            tracker,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR` (what to give as a base URL).
    pub fn base_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The `v1` Live endpoint: `ws://ADDR/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent`.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, LIVE_PATHS[0])
    }

    /// The Gemini Developer API Live endpoint in `version` (`v1`, `v1beta`, `v1alpha`):
    /// `ws://ADDR/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent`.
    pub fn developer_url(&self, version: &str) -> String {
        format!(
            "ws://{}/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent",
            self.addr
        )
    }

    /// Every Live handshake seen (accepted or refused), oldest first (the most recent
    /// [`MAX_HANDSHAKES`]): path, API, and which credentials came (never their values).
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.front.handshakes()
    }

    /// Replaces the behaviour (see [`Behaviour`] for when open sessions notice).
    pub fn set_behaviour(&self, b: Behaviour) {
        self.shared.set_behaviour(b);
    }

    /// The current behaviour.
    pub fn behaviour(&self) -> Behaviour {
        (*self.shared.behaviour()).clone()
    }

    /// Every `usageMetadata` sent so far, in sending order (the most recent
    /// [`MAX_RECORDED_USAGE`]). Recorded just before the frame is written, so anything a
    /// client has read is already here.
    pub fn recorded_usage(&self) -> Vec<RecordedUsage> {
        self.shared.recorded_usage()
    }

    /// The client messages session `session_id` (its `setupComplete.sessionId`, which a
    /// resume keeps) has consumed, in order, across its connections; empty unless
    /// [`Behaviour::record_consumed`] is on. A resume from a handle forgets what was consumed
    /// after the handle was issued, as the session's state does, so a client that resumes
    /// correctly finds every message it sent here exactly once.
    pub fn consumed(&self, session_id: &str) -> Vec<ConsumedMessage> {
        self.shared.consumed(session_id)
    }

    /// Ids of the sessions the emulator remembers (for resumption), oldest first.
    pub fn session_ids(&self) -> Vec<String> {
        self.shared.session_ids()
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Also appends every usage record as a JSON line (`session_id`, `seq`, `at_ms`,
    /// `usage`) to `path`.
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub fn record_to_file(&self, path: &Path) -> std::io::Result<()> {
        self.shared.record_to_file(path)
    }

    /// Stops accepting, closes open sessions with 1001, and waits (bounded) for them to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions still open after the shutdown grace period");
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Serves until `shutdown` resolves, then stops as [`Emulator::shutdown`] does.
///
/// # Errors
/// When a service-account key does not parse.
pub async fn run(
    listener: TcpListener,
    config: EmulatorConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    let emulator = Emulator::start(listener, config).await;
    shutdown.await;
    emulator.shutdown().await;
    Ok(())
}
