//! The harness proof: real nats-server and clickhouse-server on loopback, and the real
//! google-cloud-auth crate against the emulator and the fake Google endpoints. One test
//! binary, so all ClickHouse tests share one server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::large_futures,
    reason = "tests: a failed step fails loudly; tasks and environment belong to the test"
)]

mod clickhouse;
mod google;
mod nats;
