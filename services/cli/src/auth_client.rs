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

    /// One line for a failed call.
    pub(crate) fn explain(&self, status: tonic::Status) -> anyhow::Error {
        match status.code() {
            tonic::Code::Unavailable if status.message().contains("transport") => anyhow!(
                "cannot reach the auth service at {} ({}); is livegate-auth running?",
                self.url,
                status.message()
            ),
            code => anyhow!("{} ({code:?})", status.message()),
        }
    }
}
