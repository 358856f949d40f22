//! `spawn_auth`: runs `livegate_auth::run` in-process on 127.0.0.1:0.

use livegate_auth::{Config, INTERNAL_TOKEN_METADATA};
use livegate_proto::auth::auth_client::AuthClient;
use livegate_proto::auth::{CreateKeyRequest, KeySettings};
use secrecy::SecretString;
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const MASTER: &str = "test-master-key";
pub const INTERNAL: &str = "test-internal-token";

pub struct TestAuth {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestAuth {
    pub async fn client(&self) -> AuthClient<Channel> {
        AuthClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to auth")
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

pub fn config(nats_url: &str) -> Config {
    let mut c = Config::for_nats(nats_url);
    c.master_key = Some(SecretString::from(MASTER));
    c.internal_token = Some(SecretString::from(INTERNAL));
    c
}

pub async fn spawn_auth(config: Config) -> TestAuth {
    livegate_test_support::init_crypto();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(livegate_auth::run(config, listener, async {
        let _ = rx.await;
    }));
    // The listener is bound before run starts, so connecting needs no wait; but run opens the
    // KV store before serving, so the first call may queue briefly inside the accept backlog.
    TestAuth {
        addr,
        stop: Some(tx),
        task: Some(task),
    }
}

pub fn admin<T>(msg: T) -> tonic::Request<T> {
    with_meta(msg, "authorization", &format!("Bearer {MASTER}"))
}

pub fn internal<T>(msg: T) -> tonic::Request<T> {
    with_meta(msg, INTERNAL_TOKEN_METADATA, INTERNAL)
}

pub fn with_meta<T>(msg: T, name: &'static str, value: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(name, value.parse().unwrap());
    req
}

/// Creates a key and returns (plaintext, key id).
pub async fn create_key(
    client: &mut AuthClient<Channel>,
    settings: KeySettings,
) -> (String, String) {
    let resp = client
        .create_key(admin(CreateKeyRequest {
            settings: Some(settings),
        }))
        .await
        .unwrap()
        .into_inner();
    (resp.key, resp.info.unwrap().key_id)
}

/// Polls `f` every 20 ms until it returns true, at most `limit`.
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(limit, async {
        loop {
            if f().await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}
