//! The parts of the auth API's contract that are not in the `.proto` files: where auth
//! listens by default, the metadata entry that carries the internal token, and the
//! `grpc.health.v1` probe every client of auth uses.

use std::time::Duration;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Where the gateway and the CLI look for auth when `AUTH_URL` is not set.
pub const DEFAULT_AUTH_URL: &str = "http://127.0.0.1:50051";

/// gRPC metadata entry carrying `LIVEGATE_INTERNAL_TOKEN` on `GetAccessToken` calls.
pub const INTERNAL_TOKEN_METADATA: &str = "x-livegate-internal-token";

/// True when the server behind `channel` answers its overall `grpc.health.v1` check with
/// `SERVING` within `timeout`. Any error, timeout or other status is `false`.
pub async fn is_serving(channel: Channel, timeout: Duration) -> bool {
    let mut client = HealthClient::new(channel);
    let req = HealthCheckRequest {
        service: String::new(),
    };
    matches!(
        tokio::time::timeout(timeout, client.check(req)).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
    )
}
