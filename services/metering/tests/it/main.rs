//! Metering integration tests: real nats-server and clickhouse-server on loopback, events
//! published as the gateway publishes them, metering run in-process (or as its binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod binary;
mod duplicates;
mod faults;
mod migrations;
mod pipeline;
