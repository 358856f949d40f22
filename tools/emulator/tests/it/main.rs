//! Integration tests: a real emulator on 127.0.0.1:0, real tokio-tungstenite clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod helpers;
mod lifecycle;
mod media;
mod process;
mod protocol;
