//! livegate's auth service (`livegate-auth`): a tonic gRPC server for API key checks, key
//! administration, browser tokens and Google access tokens.
//!
//! - [`config`]: [`Config`], loaded once by `main`.
//! - `keys`: key generation, hashing and the stored record.
//! - `teams`: team records (a team's budget), stored next to the key records.
//! - `store`: key and team records and spend in NATS KV, mirrored in memory by watches.
//! - `browser`: short-lived, HMAC-signed browser tokens.
//! - `google`: access tokens from `google-cloud-auth`, in the documented source order.
//! - `service`: the gRPC handlers.
//! - [`run`]: serves until the shutdown future resolves.

pub mod config;

mod browser;
mod google;
mod keys;
mod service;
mod store;
mod teams;

pub use config::Config;
pub use livegate_proto::contract::INTERNAL_TOKEN_METADATA;

use livegate_proto::auth::auth_server::AuthServer;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the auth gRPC API (and `grpc.health.v1`) on `listener` until `shutdown` resolves.
///
/// On shutdown the health service turns `NOT_SERVING` first, then in-flight calls finish.
///
/// # Errors
/// When NATS is unreachable at start-up or the server fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let addr = listener.local_addr()?;
    let nats = config
        .nats
        .connect(
            async_nats::ConnectOptions::new(),
            livegate_common::nats::Role::Auth,
            "",
        )
        .await?;
    let js = async_nats::jetstream::new(nats);
    let stop = CancellationToken::new();
    let store = store::Store::open(
        &js,
        store::Buckets {
            keys: &config.keys_bucket,
            spend: &config.spend_bucket,
            auth: &config.auth_bucket,
            layout: *config.nats.layout(),
        },
        stop.clone(),
    )
    .await
    .context("opening the key store")?;
    let google = Arc::new(google::GoogleTokens::from_sources(&config.google));
    if config.master_key.is_none() {
        tracing::warn!("LIVEGATE_MASTER_KEY not set: admin calls will be refused");
    }
    if config.internal_token.is_none() {
        tracing::warn!("LIVEGATE_INTERNAL_TOKEN not set: GetAccessToken will be refused");
    }
    let service = service::AuthService {
        store,
        google,
        master_key: config.master_key,
        internal_token: config.internal_token,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AuthServer<service::AuthService>>()
        .await;

    tracing::info!(%addr, google.credentials.source = service.google.source(), "livegate-auth listening on {addr}");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let drain = {
        let health = health.clone();
        async move {
            shutdown.await;
            health
                .set_not_serving::<AuthServer<service::AuthService>>()
                .await;
            tracing::info!("draining: health NOT_SERVING, finishing in-flight calls");
        }
    };
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthServer::new(service))
        .serve_with_incoming_shutdown(incoming, drain)
        .await;
    stop.cancel();
    result.context("gRPC server failed")?;
    tracing::info!("livegate-auth stopped");
    Ok(())
}
