//! Whole-system tests: client → gateway → emulator, with real auth and a real nats-server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::large_futures,
    reason = "tests: a failed step fails loudly; tasks and environment belong to the test"
)]

mod browser;
mod budgets;
mod budgets_teams;
mod bus_permissions;
mod cli;
mod clients;
mod close_codes;
mod cluster;
mod cluster_doctor;
mod credentials;
mod developer_api;
mod front_door;
mod http;
mod leases;
mod ledger;
mod live38;
mod live_policy;
mod metering;
mod model_list;
mod pricing_reload;
mod relay;
mod resumption;
mod sdk_matrix;
mod secrets_in_logs;
mod start_script;
mod telemetry;
mod usage;
