//! Whole-system tests: client → gateway → emulator, with real auth and a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bus_permissions;
mod cli;
mod clients;
mod close_codes;
mod http;
mod metering;
mod relay;
mod start_script;
mod usage;
