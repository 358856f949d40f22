//! livegate's wire contracts, generated from `livegate/v1/*.proto`.
//!
//! - [`usage`]: bus events on NATS JetStream (`UsageReport`, `SessionStarted`, `SessionEnded`).
//! - [`auth`]: the auth service's gRPC API (client and server).
//! - [`contract`]: what the auth API's callers share beyond the `.proto` files (default URL,
//!   internal-token metadata name, health probe).

pub mod contract;

/// Bus events (package `livegate.usage.v1`).
pub mod usage {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("livegate.usage.v1");
}

/// The auth gRPC API (package `livegate.auth.v1`).
pub mod auth {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("livegate.auth.v1");
}

pub use prost;
pub use prost_types;
