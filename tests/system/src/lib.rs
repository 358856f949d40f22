//! A whole livegate stack in one test process: a real nats-server, the auth service (with a
//! generated service account), the Live API emulator (verifying that account's self-signed
//! JWTs, as Google would) and the gateway, each on `127.0.0.1:0`.
//!
//! Tests talk to the gateway over real WebSockets and read what it published from JetStream.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::large_futures,
    reason = "test support: a failed step fails the test loudly; tasks are owned by the test"
)]

pub mod process;

use livegate_emulator::{Emulator, EmulatorConfig};
use livegate_proto::auth::auth_client::AuthClient;
use livegate_proto::auth::{CreateKeyRequest, KeySettings};
use livegate_proto::usage::{SessionEvent, UsageReport};
use livegate_test_support::google::TestServiceAccount;
use livegate_test_support::nats::NatsServer;
use prost::Message as _;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub use livegate_gateway::Config as GatewayConfig;

/// The master key the stack's auth accepts.
pub const MASTER: &str = "system-test-master";
/// The internal token between gateway and auth.
pub const INTERNAL: &str = "system-test-internal";
/// The default project the gateway is configured with.
pub const PROJECT: &str = "test-project";
/// A model every test key may use.
pub const MODEL: &str = "gemini-live-2.5-flash";

pub use livegate_test_support::live::{
    Ws, close_of, json_of, litellm_setup, litellm_text_turn, next_frame, open_session, read_turn,
    setup, text_turn, turn_text,
};

/// A running service: its address and a way to stop it.
pub struct Service {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    /// Runs `f` (a service's `run`) on a fresh loopback listener in this process, until
    /// [`Service::stop`] or the end of the test.
    pub async fn spawn<F, Fut>(f: F) -> Self
    where
        F: FnOnce(tokio::net::TcpListener, oneshot::Receiver<()>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(f(listener, rx));
        Self {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// How the service ended, if it has (for a failure message); `None` while it runs.
    pub async fn ended(&mut self) -> Option<String> {
        match self.task.take() {
            Some(task) if task.is_finished() => Some(format!("{:?}", task.await)),
            running => {
                self.task = running;
                None
            }
        }
    }

    /// Triggers the shutdown signal and waits (bounded) for `run` to return.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("service did not stop within 30 s")
                .expect("service task panicked")
                .expect("service returned an error");
        }
    }
}

/// Options for [`Stack::start`].
pub struct Options {
    /// Let the gateway config be adjusted before it starts.
    pub gateway: Box<dyn FnOnce(&mut GatewayConfig) + Send>,
    /// Start auth without Google credentials.
    pub no_google_credentials: bool,
    /// Also run metering against the shared test ClickHouse (a fresh database).
    pub metering: bool,
    /// Let the auth config be adjusted before it starts.
    pub auth: Box<dyn FnOnce(&mut livegate_auth::Config) + Send>,
    /// Let the emulator config be adjusted before it starts (e.g. more service-account keys).
    pub emulator: Box<dyn FnOnce(&mut EmulatorConfig) + Send>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gateway: Box::new(|_| {}),
            no_google_credentials: false,
            metering: false,
            auth: Box::new(|_| {}),
            emulator: Box::new(|_| {}),
        }
    }
}

/// The running stack.
pub struct Stack {
    pub nats: NatsServer,
    pub auth: Service,
    pub gateway: Service,
    pub emulator: Emulator,
    pub service_account: TestServiceAccount,
    /// Metering and its ClickHouse database, when asked for.
    pub metering: Option<Service>,
    pub clickhouse: Option<(
        &'static livegate_test_support::clickhouse::ClickHouseServer,
        String,
    )>,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A stack whose gateway config `adjust` changes before it starts (the other options at
    /// their defaults).
    pub async fn start_with_gateway(
        adjust: impl FnOnce(&mut GatewayConfig) + Send + 'static,
    ) -> Self {
        Self::start_with(Options {
            gateway: Box::new(adjust),
            ..Options::default()
        })
        .await
    }

    pub async fn start_with(options: Options) -> Self {
        livegate_test_support::init_crypto();
        let dir = tempfile::tempdir().unwrap();
        let nats = NatsServer::start().await.unwrap();
        let service_account = TestServiceAccount::generate(dir.path()).unwrap();
        let emulator_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut emulator_cfg = EmulatorConfig {
            service_account_keys: vec![service_account.emulator_key()],
            ..EmulatorConfig::default()
        };
        (options.emulator)(&mut emulator_cfg);
        let emulator = Emulator::start(emulator_listener, emulator_cfg).await;

        let mut auth_cfg = livegate_auth::Config::for_nats(nats.url());
        auth_cfg.master_key = Some(SecretString::from(MASTER));
        auth_cfg.internal_token = Some(SecretString::from(INTERNAL));
        auth_cfg.google.application_credentials = Some(if options.no_google_credentials {
            dir.path()
                .join("missing.json")
                .to_string_lossy()
                .into_owned()
        } else {
            service_account.path.to_string_lossy().into_owned()
        });
        (options.auth)(&mut auth_cfg);
        let auth = Service::spawn(|l, rx| {
            livegate_auth::run(auth_cfg, l, async {
                let _ = rx.await;
            })
        })
        .await;

        wait_for_auth(auth.addr).await;
        let mut gw = gateway_config(&nats, &auth, &emulator, "gw-test");
        (options.gateway)(&mut gw);
        let gateway = spawn_gateway(gw).await;
        let (metering, clickhouse) = if options.metering {
            let ch = livegate_test_support::clickhouse::ClickHouseServer::shared()
                .await
                .unwrap();
            let db = ch.create_database("system").await.unwrap();
            let mut cfg =
                livegate_metering::Config::for_servers(nats.url(), ch.http_url(), db.clone());
            cfg.flush_interval = Duration::from_millis(100);
            let svc = Service::spawn(|l, rx| {
                livegate_metering::run(cfg, l, async {
                    let _ = rx.await;
                })
            })
            .await;
            // Ready once its schema is applied and it consumes: a test may query at once.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while http(svc.addr, "GET", "/readyz", &[], "").await.0 != 200 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "metering not ready within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (Some(svc), Some((ch, db)))
        } else {
            (None, None)
        };
        Self {
            nats,
            auth,
            gateway,
            emulator,
            service_account,
            metering,
            clickhouse,
            _dir: dir,
        }
    }

    /// Another gateway replica (`gateway_id`) on the stack's NATS, auth and emulator,
    /// configured like [`Stack::gateway`] with its defaults (stopped when dropped).
    /// The environment of a `livegate-gateway` *process* on this stack's NATS, auth and
    /// emulator (for tests that start the binary: signals, exit, its own env); add to it.
    pub fn gateway_env(&self, gateway_id: &str) -> Vec<(&'static str, String)> {
        vec![
            ("LIVEGATE_LOG", "info".into()),
            ("NATS_URL", self.nats.url()),
            ("GATEWAY_LISTEN", "127.0.0.1:0".into()),
            ("GATEWAY_ID", gateway_id.into()),
            ("AUTH_URL", format!("http://{}", self.auth.addr)),
            ("LIVEGATE_INTERNAL_TOKEN", INTERNAL.into()),
            ("VERTEX_LIVE_URL", self.emulator.url()),
            ("DEFAULT_VERTEXAI_PROJECT", PROJECT.into()),
        ]
    }

    pub async fn another_gateway(&self, gateway_id: &str) -> Service {
        spawn_gateway(gateway_config(
            &self.nats,
            &self.auth,
            &self.emulator,
            gateway_id,
        ))
        .await
    }

    /// Runs SQL on the stack's ClickHouse (`{db}` stands for its database) and returns the
    /// raw TSV answer.
    pub async fn sql(&self, sql: &str) -> String {
        let (ch, db) = self
            .clickhouse
            .as_ref()
            .expect("stack started without metering");
        ch.query(&sql.replace("{db}", db)).await.unwrap()
    }

    /// Polls `sql` until its answer is non-empty and not `0` (bounded).
    pub async fn sql_until(&self, limit: Duration, sql: &str) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let out = self.sql(sql).await;
            let t = out.trim();
            if (!t.is_empty() && t != "0") || tokio::time::Instant::now() >= deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An admin client for the stack's auth.
    pub async fn auth_client(&self) -> AuthClient<tonic::transport::Channel> {
        AuthClient::connect(format!("http://{}", self.auth.addr))
            .await
            .unwrap()
    }

    /// Creates an API key with these settings; returns (key, key id).
    pub async fn create_key(&self, settings: KeySettings) -> (String, String) {
        let mut req = tonic::Request::new(CreateKeyRequest {
            settings: Some(settings),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
        let resp = self
            .auth_client()
            .await
            .create_key(req)
            .await
            .unwrap()
            .into_inner();
        (resp.key, resp.info.unwrap().key_id)
    }

    /// A key with no restrictions.
    pub async fn key(&self) -> String {
        self.create_key(KeySettings::default()).await.0
    }

    /// `ws://gateway{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.gateway.addr)
    }

    /// Opens a WebSocket to the gateway with `Authorization: Bearer key`.
    pub async fn connect(&self, path: &str, key: Option<&str>) -> Ws {
        connect_at(self.gateway.addr, path, key).await
    }

    /// A JetStream context on the stack's NATS.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.nats.client().await.unwrap())
    }

    /// The spend bucket (`livegate_spend`) as metering opens it: where tests read or write
    /// key and team spend.
    pub async fn spend_bucket(&self) -> async_nats::jetstream::kv::Store {
        livegate_common::kv::open_bucket(
            &self.jetstream().await,
            livegate_common::subjects::SPEND_BUCKET,
            livegate_common::subjects::SPEND_HISTORY,
            &livegate_common::stream::StreamLayout::default(),
        )
        .await
        .unwrap()
    }

    /// Every event on the usage stream so far, waiting until `done` holds (bounded).
    pub async fn events_until(&self, limit: Duration, done: impl Fn(&Events) -> bool) -> Events {
        let js = self.jetstream().await;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let events = read_all(&js).await;
            if done(&events) || tokio::time::Instant::now() >= deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until auth answers an admin call (its KV buckets exist then), at most 15 s.
async fn wait_for_auth(addr: SocketAddr) {
    let ready = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Ok(mut c) = AuthClient::connect(format!("http://{addr}")).await {
                let mut req = tonic::Request::new(livegate_proto::auth::ListKeysRequest::default());
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
                if c.list_keys(req).await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "auth did not become ready within 15 s");
}

/// What the gateway published.
#[derive(Debug, Default, Clone)]
pub struct Events {
    /// (Nats-Msg-Id, report)
    pub reports: Vec<(String, UsageReport)>,
    /// (Nats-Msg-Id, event)
    pub sessions: Vec<(String, SessionEvent)>,
}

impl Events {
    pub fn ended(&self) -> Vec<livegate_proto::usage::SessionEnded> {
        self.sessions
            .iter()
            .filter_map(|(_, e)| match &e.event {
                Some(livegate_proto::usage::session_event::Event::Ended(x)) => Some(x.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn started(&self) -> Vec<livegate_proto::usage::SessionStarted> {
        self.sessions
            .iter()
            .filter_map(|(_, e)| match &e.event {
                Some(livegate_proto::usage::session_event::Event::Started(x)) => Some(x.clone()),
                _ => None,
            })
            .collect()
    }
}

async fn read_all(js: &async_nats::jetstream::Context) -> Events {
    let mut events = Events::default();
    let Ok(mut stream) = js.get_stream(livegate_common::subjects::STREAM).await else {
        return events;
    };
    let Ok(info) = stream.info().await else {
        return events;
    };
    let last = info.state.last_sequence;
    for seq in 1..=last {
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        let id = msg
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        if msg.subject.as_str() == livegate_common::subjects::USAGE_REPORT {
            events
                .reports
                .push((id, UsageReport::decode(msg.payload.as_ref()).unwrap()));
        } else {
            events
                .sessions
                .push((id, SessionEvent::decode(msg.payload.as_ref()).unwrap()));
        }
    }
    events
}

/// The gateway config of a stack's replica: its NATS, auth and emulator, the test project,
/// a short drain.
fn gateway_config(
    nats: &NatsServer,
    auth: &Service,
    emulator: &Emulator,
    gateway_id: &str,
) -> GatewayConfig {
    let mut gw = GatewayConfig::defaults(nats.url());
    gw.auth_url = format!("http://{}", auth.addr);
    gw.internal_token = Some(SecretString::from(INTERNAL));
    gw.vertex_live_url = Some(emulator.url());
    gw.default_project = Some(PROJECT.to_string());
    gw.drain_grace = Duration::from_secs(1);
    gw.gateway_id = gateway_id.into();
    gw
}

/// The value of `series` (its name and labels exactly as exposed, e.g.
/// `livegate_gateway_sessions_total{code="1000"}`) in a Prometheus text exposition; `None` when
/// the series is absent.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `GET /metrics` at `addr` (a gateway or metering), asserting 200.
pub async fn scrape(addr: SocketAddr) -> String {
    let (status, _, body) = http(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Opens a WebSocket to the gateway at `addr` with `Authorization: Bearer key`.
pub async fn connect_at(addr: SocketAddr, path: &str, key: Option<&str>) -> Ws {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(k) = key {
        req.headers_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("gateway handshake");
    ws
}

async fn spawn_gateway(gw: GatewayConfig) -> Service {
    Service::spawn(|l, rx| {
        livegate_gateway::run(gw, l, async {
            let _ = rx.await;
        })
    })
    .await
}

/// A minimal HTTP/1.1 exchange with the gateway (one request, `Connection: close`); returns
/// the status code, the headers block and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("HTTP response within 10 s")
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

/// A self-signed certificate for `localhost` and `127.0.0.1`, written to a directory as
/// `cert.pem` and `key.pem` for a TLS gateway.
pub struct SelfSignedTls {
    /// `cert.pem`.
    pub cert_path: std::path::PathBuf,
    /// `key.pem`.
    pub key_path: std::path::PathBuf,
    /// The certificate, for a client's trust roots.
    pub der: rustls::pki_types::CertificateDer<'static>,
}

/// Generates a [`SelfSignedTls`] in `dir`.
pub fn self_signed_tls(dir: &std::path::Path) -> SelfSignedTls {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    SelfSignedTls {
        cert_path,
        key_path,
        der: cert.cert.der().clone(),
    }
}
