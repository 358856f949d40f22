//! Issue 4's targets for this machine, which the comparison judges the gateway against.

/// Added p50 latency per turn, ms.
pub const ADDED_P50_MS: f64 = 0.05;
/// Added p99 latency per turn, ms.
pub const ADDED_P99_MS: f64 = 0.2;
/// Session setups per second per core (per gateway CPU-second).
pub const SETUPS_PER_CORE: f64 = 1000.0;
/// RSS per idle session, KiB.
pub const IDLE_KIB: f64 = 32.0;
/// Idle sessions held.
pub const IDLE_SESSIONS: u64 = 20_000;
