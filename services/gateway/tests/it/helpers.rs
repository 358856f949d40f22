//! [`spawn_app`]: the gateway's `run` on `127.0.0.1:0` with a real nats-server, a fake auth
//! (an in-process gRPC server answering from a table of keys) and the Live API emulator as
//! upstream (accepting only the fake auth's Google token); plus small WebSocket, HTTP and
//! NATS helpers for the tests.

use futures_util::StreamExt;
use livegate_emulator::{Emulator, EmulatorConfig};
use livegate_gateway::Config;
use livegate_proto::auth::auth_server::{Auth, AuthServer};
use livegate_proto::auth::{
    CheckKeyRequest, CheckKeyResponse, CreateKeyRequest, CreateKeyResponse, GetAccessTokenRequest,
    GetAccessTokenResponse, KeyInfo, ListKeysRequest, ListKeysResponse, MintBrowserTokenRequest,
    MintBrowserTokenResponse, RevokeKeyRequest, RevokeKeyResponse, UpdateKeyRequest,
};
use livegate_proto::auth::{
    ClearTeamRequest, ClearTeamResponse, GetTeamRequest, ListTeamsRequest, ListTeamsResponse,
    SetTeamRequest, TeamInfo,
};
use livegate_proto::usage::{SessionEvent, UsageReport, session_event};
use livegate_test_support::NatsServer;
use prost::Message as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic::{Request, Response, Status};

/// The secret between gateway and auth.
pub const INTERNAL_TOKEN: &str = "it-internal-token";
/// The Google access token the fake auth hands out; the emulator accepts only this one.
pub const GOOGLE_TOKEN: &str = "it-google-token";
/// The project the gateway defaults to.
pub const PROJECT: &str = "it-project";
/// A model every unrestricted key may use.
pub const MODEL: &str = "gemini-live-2.5-flash";
/// What the fake auth answers for a credential it does not know.
pub const REJECTED: &str = "invalid API key";
pub use livegate_test_support::live::{
    WAIT, Ws, close_of, closed, json_of, next_frame, open_session, read_turn, setup, text_turn,
};

/// What the fake auth knows and what it was asked.
#[derive(Default)]
pub struct AuthState {
    /// Credential -> the key it checks as.
    keys: Mutex<HashMap<String, KeyInfo>>,
    /// The internal-token metadata of every `GetAccessToken` call, in order.
    pub access_token_calls: Mutex<Vec<Option<String>>>,
}

impl AuthState {
    /// Makes `credential` check as `key`.
    pub fn add_key(&self, credential: &str, key: KeyInfo) {
        self.keys
            .lock()
            .unwrap()
            .insert(credential.to_string(), key);
    }

    fn key(&self, credential: &str) -> Option<KeyInfo> {
        self.keys.lock().unwrap().get(credential).cloned()
    }
}

/// The auth service as the gateway sees it: key checks from a table, a fixed Google token
/// (only with the internal token), browser tokens for known keys; admin calls unimplemented.
struct FakeAuth(Arc<AuthState>);

#[tonic::async_trait]
impl Auth for FakeAuth {
    async fn check_key(
        &self,
        req: Request<CheckKeyRequest>,
    ) -> Result<Response<CheckKeyResponse>, Status> {
        match self.0.key(&req.get_ref().credential) {
            Some(key) => Ok(Response::new(CheckKeyResponse {
                key: Some(key),
                bound_model: String::new(),
                is_browser_token: false,
                credential_expires_at: None,
            })),
            None => Err(Status::unauthenticated(REJECTED)),
        }
    }

    async fn get_access_token(
        &self,
        req: Request<GetAccessTokenRequest>,
    ) -> Result<Response<GetAccessTokenResponse>, Status> {
        let presented = req
            .metadata()
            .get("x-livegate-internal-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.0
            .access_token_calls
            .lock()
            .unwrap()
            .push(presented.clone());
        if presented.as_deref() != Some(INTERNAL_TOKEN) {
            return Err(Status::permission_denied("internal token required"));
        }
        Ok(Response::new(GetAccessTokenResponse {
            access_token: GOOGLE_TOKEN.to_string(),
            expires_at: Some((SystemTime::now() + Duration::from_secs(3600)).into()),
            source: "fake".to_string(),
        }))
    }

    async fn mint_browser_token(
        &self,
        req: Request<MintBrowserTokenRequest>,
    ) -> Result<Response<MintBrowserTokenResponse>, Status> {
        match self.0.key(&req.get_ref().credential) {
            Some(_) => Ok(Response::new(MintBrowserTokenResponse {
                token: "lgb-it".to_string(),
                expires_at: Some((SystemTime::now() + Duration::from_secs(60)).into()),
            })),
            None => Err(Status::unauthenticated(REJECTED)),
        }
    }

    async fn create_key(
        &self,
        _: Request<CreateKeyRequest>,
    ) -> Result<Response<CreateKeyResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_keys(
        &self,
        _: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn update_key(&self, _: Request<UpdateKeyRequest>) -> Result<Response<KeyInfo>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn set_team(&self, _: Request<SetTeamRequest>) -> Result<Response<TeamInfo>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_team(&self, _: Request<GetTeamRequest>) -> Result<Response<TeamInfo>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_teams(
        &self,
        _: Request<ListTeamsRequest>,
    ) -> Result<Response<ListTeamsResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn clear_team(
        &self,
        _: Request<ClearTeamRequest>,
    ) -> Result<Response<ClearTeamResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn revoke_key(
        &self,
        _: Request<RevokeKeyRequest>,
    ) -> Result<Response<RevokeKeyResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

/// The running fake auth: its state, its health (`SERVING` until told otherwise) and its
/// server task, stopped on drop.
pub struct FakeAuthServer {
    pub addr: SocketAddr,
    pub state: Arc<AuthState>,
    pub health: tonic_health::server::HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAuthServer {
    /// Serves the fake on `127.0.0.1:0`; bound before this returns, so calls can start at once.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AuthState::default());
        let (health, health_service) = tonic_health::server::health_reporter();
        let server = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(AuthServer::new(FakeAuth(state.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        Self {
            addr,
            state,
            health,
            task,
        }
    }

    /// Makes auth's overall health (what the gateway's `/readyz` asks) `status`.
    pub async fn set_health(&self, status: tonic_health::ServingStatus) {
        self.health.set_service_status("", status).await;
    }
}

impl Drop for FakeAuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running gateway and everything around it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub nats: NatsServer,
    pub auth: FakeAuthServer,
    pub emulator: Emulator,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A gateway with the default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A gateway whose configuration `adjust` changes before it starts.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    livegate_test_support::init_crypto();
    livegate_test_support::init_tracing();
    let nats = NatsServer::start().await.unwrap();
    let auth = FakeAuthServer::start().await;
    let emulator = Emulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        EmulatorConfig {
            tokens: vec![GOOGLE_TOKEN.to_string()],
            ..EmulatorConfig::default()
        },
    )
    .await;
    let mut config = Config::defaults(nats.url());
    config.auth_url = format!("http://{}", auth.addr);
    config.internal_token = Some(secrecy::SecretString::from(INTERNAL_TOKEN));
    config.vertex_live_url = Some(emulator.url());
    config.default_project = Some(PROJECT.to_string());
    config.drain_grace = Duration::from_millis(200);
    config.gateway_id = "gw-it".to_string();
    adjust(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(livegate_gateway::run(config, listener, async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        nats,
        auth,
        emulator,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    /// Makes `credential` a valid key for the fake auth.
    pub fn add_key(&self, credential: &str, key: KeyInfo) {
        self.auth.state.add_key(credential, key);
    }

    /// Opens a WebSocket on `/v1/vertex-ai/live`, with `Authorization: Bearer credential`
    /// when given.
    pub async fn connect(&self, credential: Option<&str>) -> Ws {
        let mut req = format!("ws://{}/v1/vertex-ai/live", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(c) = credential {
            req.headers_mut()
                .insert("authorization", format!("Bearer {c}").parse().unwrap());
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("handshake within the wait")
            .expect("gateway handshake");
        ws
    }

    /// One HTTP/1.1 request (`Connection: close`); returns status, head and body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut out))
            .await
            .expect("HTTP response within the wait")
            .unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, head.to_string(), body.to_string())
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, _, body) = self.http("GET", "/metrics", &[], "").await;
        assert_eq!(status, 200);
        body
    }

    /// Subscribes (core NATS) to every usage and session event the gateway publishes from
    /// now on.
    pub async fn events(&self) -> EventTap {
        let client = self.nats.client().await.unwrap();
        let sub = client
            .subscribe(livegate_common::subjects::STREAM_SUBJECTS)
            .await
            .unwrap();
        // The subscription is registered with the server once this round trip returns.
        client.flush().await.unwrap();
        EventTap {
            _client: client,
            sub,
        }
    }

    /// Triggers the shutdown and waits (bounded) for `run` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("gateway stopped within 30 s")
                .expect("gateway task did not panic")
                .expect("gateway returned Ok");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One event as published: its subject, `Nats-Msg-Id` and payload.
#[derive(Debug, Clone)]
pub enum Event {
    Report(String, UsageReport),
    Session(String, SessionEvent),
}

impl Event {
    /// The `Nats-Msg-Id` it was published with.
    pub fn msg_id(&self) -> &str {
        match self {
            Self::Report(id, _) | Self::Session(id, _) => id,
        }
    }

    /// True for a `SessionEnded`.
    pub fn is_end(&self) -> bool {
        matches!(
            self,
            Self::Session(
                _,
                SessionEvent {
                    event: Some(session_event::Event::Ended(_))
                }
            )
        )
    }
}

/// A subscription to the gateway's events.
pub struct EventTap {
    _client: async_nats::Client,
    sub: async_nats::Subscriber,
}

impl EventTap {
    /// Every event until (and with) the first `SessionEnded`, bounded by [`WAIT`]. A publish
    /// retried by the gateway would show up twice here; JetStream drops such duplicates by
    /// `Nats-Msg-Id`, and so does this.
    pub async fn until_ended(&mut self) -> Vec<Event> {
        let mut events: Vec<Event> = Vec::new();
        tokio::time::timeout(WAIT, async {
            while let Some(msg) = self.sub.next().await {
                let id = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                if events.iter().any(|e| e.msg_id() == id) {
                    continue;
                }
                let event = if msg.subject.as_str() == livegate_common::subjects::USAGE_REPORT {
                    Event::Report(id, UsageReport::decode(msg.payload.as_ref()).unwrap())
                } else {
                    Event::Session(id, SessionEvent::decode(msg.payload.as_ref()).unwrap())
                };
                let end = event.is_end();
                events.push(event);
                if end {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no SessionEnded within {WAIT:?}; saw {events:?}"));
        events
    }
}

/// The number of messages JetStream's usage stream holds, once it holds at least `n`
/// (polled, bounded by [`WAIT`]).
pub async fn stream_holds(nats: &NatsServer, n: u64) -> u64 {
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let held = match js.get_stream(livegate_common::subjects::STREAM).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if held >= n || tokio::time::Instant::now() >= deadline {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A key with no restrictions.
pub fn key(key_id: &str) -> KeyInfo {
    KeyInfo {
        key_id: key_id.to_string(),
        team_id: "team-it".to_string(),
        user_id: "user-it".to_string(),
        ..KeyInfo::default()
    }
}
