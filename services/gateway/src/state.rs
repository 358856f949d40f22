//! State shared by every connection of a gateway replica.

use crate::auth::AuthClient;
use crate::config::Config;
use crate::limits::Sessions;
use crate::metrics::Metrics;
use crate::mirrors::Spend;
use crate::publisher::Bus;
use crate::records::Records;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::watch;

/// Cheap to clone: every field is shared.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub auth: Arc<AuthClient>,
    pub bus: Bus,
    pub spend: Spend,
    /// Key and team records, which live sessions watch (revocation, expiry, budgets).
    pub records: Records,
    /// The price table, for per-turn budget checks (metering's rules and prices): one for the
    /// process, reloaded in place on SIGHUP, so every session prices with the table in force.
    pub pricing: Arc<livegate_common::pricing::Pricing>,
    pub sessions: Sessions,
    pub metrics: Metrics,
    /// Flips to true when the gateway starts draining; sessions watch it.
    pub drain: Arc<watch::Sender<bool>>,
    /// True once draining: new upgrades and `/readyz` answer 503.
    pub draining: Arc<AtomicBool>,
    pub nats: async_nats::Client,
    /// Every session task, so shutdown can wait for them.
    pub tracker: tokio_util::task::TaskTracker,
}
