//! Auth service integration tests against a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod google_tokens;
mod keys;
mod logs;
