//! A thin wrapper over the generated auth gRPC client that adds the master key and turns
//! statuses into one-line errors.

use anyhow::{Context, anyhow};
use livegate_proto::auth::auth_client::AuthClient as Grpc;
use tonic::transport::{Channel, Endpoint};

pub(crate) struct AuthClient {
    url: String,
    channel: Channel,
    master_key: Option<String>,
}

impl AuthClient {
    pub(crate) fn new(url: &str, master_key: Option<&str>) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .with_context(|| format!("invalid auth URL {url:?}"))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15));
        Ok(Self {
            url: url.to_string(),
            channel: endpoint.connect_lazy(),
            master_key: master_key.map(str::to_string),
        })
    }

    pub(crate) fn grpc(&self) -> Grpc<Channel> {
        Grpc::new(self.channel.clone())
    }

    /// A request carrying the master key.
    pub(crate) fn admin<T>(&self, msg: T) -> anyhow::Result<tonic::Request<T>> {
        let key = self.master_key.as_deref().ok_or_else(|| {
            anyhow!("no master key: set LIVEGATE_MASTER_KEY or pass --master-key")
        })?;
        let mut req = tonic::Request::new(msg);
        let value = format!("Bearer {key}")
            .parse()
            .map_err(|_| anyhow!("the master key contains characters not allowed in a header"))?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// True when auth's gRPC health check answers `SERVING`.
    pub(crate) async fn ready(&self) -> bool {
        livegate_proto::contract::is_serving(
            self.channel.clone(),
            std::time::Duration::from_secs(5),
        )
        .await
    }

    /// Lists keys with the master key: `None` without one, else the count or the error.
    pub(crate) async fn check_master(&self) -> Option<Result<usize, String>> {
        let req = self
            .admin(livegate_proto::auth::ListKeysRequest::default())
            .ok()?;
        Some(
            self.grpc()
                .list_keys(req)
                .await
                .map(|r| r.into_inner().keys.len())
                .map_err(|s| s.message().to_string()),
        )
    }

    /// Asks auth for a Google token and returns where it came from (never the token).
    pub(crate) async fn google_source(&self, internal_token: &str) -> Result<String, String> {
        let mut req = tonic::Request::new(livegate_proto::auth::GetAccessTokenRequest::default());
        let v = internal_token
            .parse()
            .map_err(|_| "the internal token is not a valid header value".to_string())?;
        req.metadata_mut()
            .insert(livegate_proto::contract::INTERNAL_TOKEN_METADATA, v);
        self.grpc()
            .get_access_token(req)
            .await
            .map(|r| r.into_inner().source)
            .map_err(|s| format!("{} ({:?})", s.message(), s.code()))
    }

    /// One line for a failed call.
    pub(crate) fn explain(&self, status: tonic::Status) -> anyhow::Error {
        match status.code() {
            tonic::Code::Unavailable => anyhow!(
                "cannot reach the auth service at {} ({}); is livegate-auth running?",
                self.url,
                status.message()
            ),
            code => anyhow!("{} ({code:?})", status.message()),
        }
    }
}
