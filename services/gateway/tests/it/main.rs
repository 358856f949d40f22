//! The gateway's integration tests, built as one binary: the gateway's `run` on
//! `127.0.0.1:0` with a real nats-server, a fake auth service and the Live API emulator
//! ([`helpers::spawn_app`]); no real auth, metering or ClickHouse (`tests/system` runs those).
//!
//! - `endpoints`: `/healthz`, `/readyz`, `/metrics`, the token endpoint, routing.
//! - `sessions`: refusals before the relay, and a relayed session with its events on NATS.
//! - `fuzz_corpus`: the fuzz targets' seeds, regressions and seeded mutations (`fuzz/`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::large_futures,
    reason = "tests: a failed step fails loudly; tasks and environment belong to the test"
)]

mod endpoints;
mod fuzz_corpus;
mod helpers;
mod sessions;
