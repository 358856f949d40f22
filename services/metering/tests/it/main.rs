//! Metering integration tests: real nats-server and clickhouse-server on loopback, events
//! published as the gateway publishes them, metering run in-process (or as its binary).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::large_futures,
    reason = "tests: a failed step fails loudly; tasks and environment belong to the test"
)]

mod helpers;

mod binary;
mod dead_letters;
mod duplicates;
mod faults;
mod migrations;
mod pipeline;
mod sessions;
mod spend;
