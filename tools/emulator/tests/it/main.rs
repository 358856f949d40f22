//! Integration tests: a real emulator on 127.0.0.1:0, real tokio-tungstenite clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::large_futures,
    reason = "tests: a failed step fails loudly; tasks and environment belong to the test"
)]

mod auth;
mod helpers;
mod lifecycle;
mod live38;
mod media;
mod process;
mod protocol;
mod resumption;
