//! Pieces every livegate service shares, kept deliberately small:
//!
//! - [`subjects`]: NATS stream, subject and KV bucket names (the bus contract in DESIGN.md).
//! - [`stream`]: [`stream::ensure_usage_stream`], creating the usage stream on demand.
//! - [`env`]: reading environment variables through a trait tests can back with a map.
//! - [`config`]: the optional YAML file (LiteLLM's keys, `os.environ/NAME` indirection).
//! - [`telemetry`]: `tracing` set-up from `LIVEGATE_LOG` / `LITELLM_LOG` / `LIVEGATE_LOG_FORMAT`.
//! - [`nats`]: [`nats::NatsOptions`], the one way every service connects to NATS (servers,
//!   credentials, TLS, per-role inbox prefix).
//! - [`kv`]: mirroring a NATS KV bucket into memory with a self-healing watch.
//! - [`leases`]: gateway process leases (the `livegate_leases` bucket and its value).
//! - [`credential`]: reading a credential out of an `Authorization` value (one parser).
//! - [`pricing`]: the price table (LiteLLM's format) and the per-modality pricing rules, shared
//!   by metering (the bill), the CLI (repricing) and the gateway (per-turn budget checks).
//! - [`spend`]: the value format of the `livegate_spend` KV bucket.
//! - [`clickhouse`]: the ClickHouse client constructor and database-name rule.
//! - [`shutdown`]: a future that resolves on SIGTERM or SIGINT.
//! - [`service`]: the start-up every service binary shares (logging, configuration, bind,
//!   run until a signal, exit code).

pub mod clickhouse;
pub mod config;
pub mod credential;
pub mod env;
pub mod kv;
pub mod leases;
pub mod nats;
pub mod pricing;
pub mod service;
pub mod shutdown;
pub mod spend;
pub mod stream;
pub mod subjects;
pub mod telemetry;
