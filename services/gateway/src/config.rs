//! The gateway's configuration: defaults, then the YAML file, then the environment.

use livegate_common::config::{ConfigError, FileConfig};
use livegate_common::env::{Env, EnvError, EnvExt};
use livegate_common::leases;
use livegate_common::nats::{NatsConfigError, NatsOptions};
use livegate_common::subjects;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Listen address (default `0.0.0.0:4000`).
pub const LISTEN: &str = "GATEWAY_LISTEN";
/// PEM certificate chain; with [`TLS_KEY`], serve `wss://` / `https://`.
pub const TLS_CERT: &str = "GATEWAY_TLS_CERT";
/// PEM private key.
pub const TLS_KEY: &str = "GATEWAY_TLS_KEY";
/// Auth service URL.
pub const AUTH_URL: &str = "AUTH_URL";
/// Default for [`AUTH_URL`].
/// Secret presented to auth for `GetAccessToken`.
pub const INTERNAL_TOKEN: &str = "LIVEGATE_INTERNAL_TOKEN";
/// Default project (LiteLLM's variable).
pub const DEFAULT_PROJECT: &str = "DEFAULT_VERTEXAI_PROJECT";
/// Default location (LiteLLM's variable).
pub const DEFAULT_LOCATION: &str = "DEFAULT_VERTEXAI_LOCATION";
/// Upstream URL override (e.g. the emulator).
pub const VERTEX_LIVE_URL: &str = "VERTEX_LIVE_URL";
/// How long a client has to send `setup` (humantime, e.g. `10s`).
pub const SETUP_TIMEOUT: &str = "GATEWAY_SETUP_TIMEOUT";
/// Largest frame accepted from either side, in bytes.
pub const MAX_FRAME_BYTES: &str = "GATEWAY_MAX_FRAME_BYTES";
/// A session with no frame either way for this long is closed.
pub const IDLE_TIMEOUT: &str = "GATEWAY_IDLE_TIMEOUT";
/// A session is closed after this long.
pub const MAX_SESSION: &str = "GATEWAY_MAX_SESSION_DURATION";
/// Drain grace period after SIGTERM (the `timeLeft` of the synthesized `goAway`).
pub const DRAIN_GRACE: &str = "GATEWAY_DRAIN_GRACE";
/// How long a successful key check is reused.
pub const AUTH_CACHE_TTL: &str = "GATEWAY_AUTH_CACHE_TTL";
/// Usage events held while NATS is unreachable.
pub const EVENT_BUFFER: &str = "GATEWAY_EVENT_BUFFER";
/// How long the usage publisher lets events gather before a round trip to NATS.
pub const BUS_LINGER: &str = "GATEWAY_BUS_LINGER";
/// Upstream connect (TCP + TLS + WebSocket handshake) timeout.
pub const UPSTREAM_CONNECT_TIMEOUT: &str = "GATEWAY_UPSTREAM_CONNECT_TIMEOUT";
/// Most concurrent sessions (each holds two sockets); default: what the open-files limit allows.
pub const MAX_SESSIONS: &str = "GATEWAY_MAX_SESSIONS";
/// Relay threads, each a single-threaded runtime owning its connections (default 0: connections
/// run on the main multi-threaded runtime).
pub const RELAY_THREADS: &str = "GATEWAY_RELAY_THREADS";
/// This replica's name in events and metrics (default: the host name).
pub const GATEWAY_ID: &str = "GATEWAY_ID";
/// How long a connection has to send a complete HTTP request head (each request on a
/// keep-alive connection gets this long again).
pub const HEADER_TIMEOUT: &str = "GATEWAY_HEADER_TIMEOUT";
/// How long a connection has to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: &str = "GATEWAY_TLS_HANDSHAKE_TIMEOUT";
/// How long a request body (the token endpoint's) may take to arrive.
pub const BODY_TIMEOUT: &str = "GATEWAY_BODY_TIMEOUT";
/// Most open client connections (any phase: TLS, HTTP, WebSocket); beyond it new ones are
/// accepted and closed at once.
pub const MAX_CONNECTIONS: &str = "GATEWAY_MAX_CONNECTIONS";
/// Most open client connections from one peer IP address (default 0: no per-IP cap).
pub const MAX_CONNECTIONS_PER_IP: &str = "GATEWAY_MAX_CONNECTIONS_PER_IP";
/// This process's lease on the bus (humantime, 1s to 10m, default 15s): it is renewed every
/// third of it, and metering closes the sessions of a process whose lease ran out as lost.
pub const LEASE: &str = "GATEWAY_LEASE";

/// Transparent upstream resumption: `client` (when the client's setup has
/// `sessionResumption`, the default), `always` (every session), or `off`.
pub const RESUMPTION: &str = "GATEWAY_RESUMPTION";
/// Most resumptions per session.
pub const RESUME_MAX: &str = "GATEWAY_RESUME_MAX";
/// No resumption once a session is this old (humantime).
pub const RESUME_MAX_DURATION: &str = "GATEWAY_RESUME_MAX_DURATION";
/// Client frames held for replay until upstream confirms them, in bytes per session.
pub const RESUME_BUFFER_BYTES: &str = "GATEWAY_RESUME_BUFFER_BYTES";
/// `true`: the client also sees the upstream's `goAway` when the gateway will resume.
pub const RESUME_FORWARD_GO_AWAY: &str = "GATEWAY_RESUME_FORWARD_GO_AWAY";
/// How often the gateway pings the upstream (humantime; `0` turns keepalive off).
pub const UPSTREAM_PING_INTERVAL: &str = "GATEWAY_UPSTREAM_PING_INTERVAL";
/// How long a ping to the upstream may go unanswered before the connection counts as lost.
pub const UPSTREAM_PONG_TIMEOUT: &str = "GATEWAY_UPSTREAM_PONG_TIMEOUT";
/// Price table layered over the built-in one (LiteLLM's format, the file metering bills
/// with): the gateway prices usage with it for per-turn budget checks.
pub const PRICING_FILE: &str = "PRICING_FILE";
/// Most API keys named in the per-key session metric; later keys are counted as `other`.
pub const METRICS_MAX_KEYS: &str = "GATEWAY_METRICS_MAX_KEYS";
/// A Gemini Developer API key (a secret): when set, Developer-API-shaped client paths are
/// relayed to the Developer API with it instead of being served against Vertex AI.
pub const GEMINI_API_KEY: &str = "GATEWAY_GEMINI_API_KEY";
/// A file holding [`GEMINI_API_KEY`] (one line; for secrets mounted as files).
pub const GEMINI_API_KEY_FILE: &str = "GATEWAY_GEMINI_API_KEY_FILE";
/// Developer API base URL override (e.g. the emulator's `ws://127.0.0.1:PORT`); the gateway
/// appends the `/ws/google.ai.generativelanguage.…` path.
pub const GEMINI_API_URL: &str = "GATEWAY_GEMINI_API_URL";

/// Longest Gemini API key accepted (Google's are 39 characters); also bounds the file read.
const MAX_GEMINI_API_KEY: usize = 512;

/// Default for [`MAX_FRAME_BYTES`]: a Live audio chunk is about 16 KiB and a JPEG video frame
/// at most about 1 MiB (base64 makes it 1.33 MiB), so 4 MiB leaves room without letting one
/// message pin 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Why the configuration is unusable (the binary exits with `EX_USAGE`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable is set but invalid.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The YAML file is unreadable or invalid.
    #[error(transparent)]
    File(#[from] ConfigError),
    /// The NATS settings (`NATS_URL`, credentials, TLS) are unusable.
    #[error(transparent)]
    Nats(#[from] NatsConfigError),
    /// The lease is outside what leases accept.
    #[error("GATEWAY_LEASE must be between {min:?} and {max:?}, got {got:?}")]
    Lease {
        got: Duration,
        min: Duration,
        max: Duration,
    },
    /// Only one of the TLS variables is set.
    #[error("set both GATEWAY_TLS_CERT and GATEWAY_TLS_KEY, or neither")]
    HalfTls,
    /// The Gemini API key is unusable. The message never includes the key.
    #[error("{name}: {reason}")]
    GeminiKey {
        /// The variable's name.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// A value that must be positive is zero (a zero timeout would refuse every connection,
    /// a zero frame limit every message).
    #[error("{name} must be greater than zero")]
    Zero {
        /// The variable's name.
        name: &'static str,
    },
}

/// Everything the gateway needs, loaded once in `main` and passed down.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where `main` binds the listener it hands to [`run`](crate::run).
    pub listen: SocketAddr,
    /// (certificate chain, private key) PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub auth_url: String,
    pub internal_token: Option<SecretString>,
    /// `NATS_URL`, credentials and TLS (livegate_common::nats).
    pub nats: NatsOptions,
    pub default_project: Option<String>,
    pub default_location: String,
    /// The config file's LiteLLM `model_list` (Vertex AI deployments): setup models naming a
    /// `model_name` are sent as its deployment (see `ws::setup`).
    pub model_list: std::sync::Arc<[livegate_common::config::Deployment]>,
    pub vertex_live_url: Option<String>,
    /// [`GEMINI_API_KEY`] (or [`GEMINI_API_KEY_FILE`]): the Developer API upstream, when set.
    /// Never logged (`Debug` shows it redacted).
    pub gemini_api_key: Option<SecretString>,
    /// [`GEMINI_API_URL`].
    pub gemini_api_url: Option<String>,
    pub setup_timeout: Duration,
    pub max_frame_bytes: usize,
    pub idle_timeout: Duration,
    pub max_session: Duration,
    pub drain_grace: Duration,
    pub auth_cache_ttl: Duration,
    pub event_buffer: usize,
    /// Events gather this long before a publish round trip (fewer, fuller batches: less CPU
    /// in the gateway and NATS, off the relay's hot moments); 0 publishes each at once.
    pub bus_linger: Duration,
    pub upstream_connect_timeout: Duration,
    pub gateway_id: String,
    /// Most concurrent sessions; 0 = unlimited. Beyond it, upgrades get a fast 503 instead of
    /// piling up in the accept backlog once file descriptors run out.
    pub max_sessions: usize,
    /// Relay threads (see `workers`); 0 (the default) runs connections on the main runtime. In
    /// bench.sh relay threads cut text-turn latency and CPU at 1,000 turns/s but added latency
    /// to low-rate audio streams and cost set-up CPU, so they are opt-in.
    pub relay_threads: usize,
    /// Time allowed for a request head (hyper's header read timeout); pre-auth, so short.
    pub header_timeout: Duration,
    /// Time allowed for the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time allowed for a request body (the token endpoint reads one, at most 4 KiB).
    pub body_timeout: Duration,
    /// Most open client connections, counted from accept until the socket closes (so an
    /// upgraded session's socket stays counted); 0 = unlimited.
    pub max_connections: usize,
    /// Most open client connections per peer IP address; 0 = no per-IP cap.
    pub max_connections_per_ip: usize,
    /// Stream usage events go to (tests may isolate with their own name).
    pub stream: String,
    pub keys_bucket: String,
    pub spend_bucket: String,
    /// This process's lease ([`LEASE`]): heartbeats go out every third of it.
    pub lease: Duration,
    /// This process's instance id, fresh at every start: the key of its lease and the
    /// `gateway_instance` of its `SessionStarted` events.
    pub instance_id: String,
    /// Transparent upstream resumption and upstream keepalive (`GATEWAY_RESUM*`,
    /// `GATEWAY_UPSTREAM_P*`).
    pub resumption: crate::ws::resume::ResumeConfig,
    /// [`PRICING_FILE`], read at start (per-turn budget checks).
    pub pricing_file: Option<PathBuf>,
    /// [`METRICS_MAX_KEYS`].
    pub metrics_max_keys: usize,
}

/// Two descriptors per session (client and upstream), keeping 256 for everything else.
fn sessions_fitting_open_files_limit() -> usize {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, _)) if soft != rlimit::INFINITY => {
            usize::try_from(soft.saturating_sub(256) / 2).unwrap_or(usize::MAX)
        }
        _ => 0,
    }
}

/// A duration that must not be zero, or `default` when unset.
fn positive_duration(
    env: &impl Env,
    name: &'static str,
    default: Duration,
) -> Result<Duration, Error> {
    let d = env.duration(name, default)?;
    if d.is_zero() {
        return Err(Error::Zero { name });
    }
    Ok(d)
}

/// [`GEMINI_API_KEY`] or the contents of [`GEMINI_API_KEY_FILE`] (not both), trimmed, and
/// checked to be something an HTTP header can carry.
fn gemini_api_key(env: &impl Env) -> Result<Option<SecretString>, Error> {
    let bad = |name, reason: &str| Error::GeminiKey {
        name,
        reason: reason.to_string(),
    };
    let (name, key) = match (env.var(GEMINI_API_KEY), env.var(GEMINI_API_KEY_FILE)) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(bad(
                GEMINI_API_KEY,
                "set it or GATEWAY_GEMINI_API_KEY_FILE, not both",
            ));
        }
        (Some(k), None) => (GEMINI_API_KEY, k),
        (None, Some(path)) => {
            use std::io::Read as _;
            let mut text = String::new();
            std::fs::File::open(path.trim())
                .and_then(|f| {
                    f.take(MAX_GEMINI_API_KEY as u64 + 2)
                        .read_to_string(&mut text)
                })
                .map_err(|e| Error::GeminiKey {
                    name: GEMINI_API_KEY_FILE,
                    reason: format!("cannot read {}: {e}", path.trim()),
                })?;
            (GEMINI_API_KEY_FILE, text)
        }
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(bad(name, "the key is empty"));
    }
    if key.len() > MAX_GEMINI_API_KEY {
        return Err(bad(name, "the key is too long"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            name,
            "the key must be printable ASCII without spaces (one line)",
        ));
    }
    Ok(Some(SecretString::from(key.to_string())))
}

impl Config {
    /// Builds the configuration from the file and the environment (env wins).
    ///
    /// # Errors
    /// [`Error`] when a value is present but invalid.
    pub fn load(file: &FileConfig, env: &impl Env) -> Result<Self, Error> {
        let tls = match (env.var(TLS_CERT), env.var(TLS_KEY)) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            _ => return Err(Error::HalfTls),
        };
        let mut c = Self::defaults(NatsOptions::from_env(env)?);
        c.listen = env.parse(LISTEN)?.unwrap_or(c.listen);
        c.tls = tls;
        c.auth_url = env.var_or(AUTH_URL, livegate_proto::contract::DEFAULT_AUTH_URL);
        c.internal_token = env.var(INTERNAL_TOKEN).map(SecretString::from);
        c.default_project = env
            .var(DEFAULT_PROJECT)
            .or_else(|| file.vertex_project.clone());
        c.default_location = env
            .var(DEFAULT_LOCATION)
            .or_else(|| file.vertex_location.clone())
            .unwrap_or(c.default_location);
        c.model_list = file.model_list.clone().into();
        c.vertex_live_url = env.var(VERTEX_LIVE_URL);
        c.gemini_api_key = gemini_api_key(env)?;
        c.gemini_api_url = env.var(GEMINI_API_URL);
        c.setup_timeout = env.duration(SETUP_TIMEOUT, c.setup_timeout)?;
        c.max_frame_bytes = env.parse(MAX_FRAME_BYTES)?.unwrap_or(c.max_frame_bytes);
        if c.max_frame_bytes == 0 {
            return Err(Error::Zero {
                name: MAX_FRAME_BYTES,
            });
        }
        c.idle_timeout = env.duration(IDLE_TIMEOUT, c.idle_timeout)?;
        c.max_session = env.duration(MAX_SESSION, c.max_session)?;
        c.drain_grace = env.duration(DRAIN_GRACE, c.drain_grace)?;
        c.auth_cache_ttl = env.duration(AUTH_CACHE_TTL, c.auth_cache_ttl)?;
        c.event_buffer = env.parse(EVENT_BUFFER)?.unwrap_or(c.event_buffer);
        c.bus_linger = env.duration(BUS_LINGER, c.bus_linger)?;
        c.upstream_connect_timeout =
            env.duration(UPSTREAM_CONNECT_TIMEOUT, c.upstream_connect_timeout)?;
        c.max_sessions = match env.parse(MAX_SESSIONS)? {
            Some(n) => n,
            None => sessions_fitting_open_files_limit(),
        };
        c.relay_threads = env.parse(RELAY_THREADS)?.unwrap_or(c.relay_threads);
        c.header_timeout = positive_duration(env, HEADER_TIMEOUT, c.header_timeout)?;
        c.tls_handshake_timeout =
            positive_duration(env, TLS_HANDSHAKE_TIMEOUT, c.tls_handshake_timeout)?;
        c.body_timeout = positive_duration(env, BODY_TIMEOUT, c.body_timeout)?;
        // Each connection may become a session holding a second (upstream) socket, so the
        // same budget as sessions: connections plus upstream sockets fit the open-files limit.
        c.max_connections = match env.parse(MAX_CONNECTIONS)? {
            Some(n) => n,
            None => sessions_fitting_open_files_limit(),
        };
        c.max_connections_per_ip = env
            .parse(MAX_CONNECTIONS_PER_IP)?
            .unwrap_or(c.max_connections_per_ip);
        c.gateway_id = env
            .var(GATEWAY_ID)
            .or_else(|| env.var("HOSTNAME"))
            .unwrap_or(c.gateway_id);
        let r = &mut c.resumption;
        r.mode = env.parse(RESUMPTION)?.unwrap_or(r.mode);
        r.max_resumptions = env.parse(RESUME_MAX)?.unwrap_or(r.max_resumptions);
        r.max_duration = env.duration(RESUME_MAX_DURATION, r.max_duration)?;
        r.buffer_bytes = env.parse(RESUME_BUFFER_BYTES)?.unwrap_or(r.buffer_bytes);
        r.forward_go_away = env
            .parse(RESUME_FORWARD_GO_AWAY)?
            .unwrap_or(r.forward_go_away);
        r.ping_interval = env.duration(UPSTREAM_PING_INTERVAL, r.ping_interval)?;
        r.pong_timeout = positive_duration(env, UPSTREAM_PONG_TIMEOUT, r.pong_timeout)?;
        c.lease = env.duration(LEASE, c.lease)?;
        c.pricing_file = env.var(PRICING_FILE).map(PathBuf::from);
        c.metrics_max_keys = env.parse(METRICS_MAX_KEYS)?.unwrap_or(c.metrics_max_keys);
        if !(leases::MIN_LEASE..=leases::MAX_LEASE).contains(&c.lease) {
            return Err(Error::Lease {
                got: c.lease,
                min: leases::MIN_LEASE,
                max: leases::MAX_LEASE,
            });
        }
        Ok(c)
    }

    /// The defaults, listening on `0.0.0.0:4000` (`load` keeps that unless `GATEWAY_LISTEN`
    /// says otherwise). [`run`](crate::run) serves on the listener it is given, not on
    /// `listen`, so tests bind their own (`127.0.0.1:0`) and keep this default.
    pub fn defaults(nats: impl Into<NatsOptions>) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4000)),
            tls: None,
            auth_url: livegate_proto::contract::DEFAULT_AUTH_URL.to_string(),
            internal_token: None,
            nats: nats.into(),
            default_project: None,
            default_location: "us-central1".to_string(),
            model_list: std::sync::Arc::from([]),
            vertex_live_url: None,
            gemini_api_key: None,
            gemini_api_url: None,
            setup_timeout: Duration::from_secs(10),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            idle_timeout: Duration::from_secs(600),
            max_session: Duration::from_secs(3600),
            drain_grace: Duration::from_secs(10),
            auth_cache_ttl: Duration::from_secs(5),
            event_buffer: 100_000,
            bus_linger: Duration::from_millis(5),
            upstream_connect_timeout: Duration::from_secs(10),
            gateway_id: "gateway".to_string(),
            max_sessions: 0,
            relay_threads: 0,
            header_timeout: Duration::from_secs(5),
            tls_handshake_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            max_connections: 0,
            max_connections_per_ip: 0,
            stream: subjects::STREAM.to_string(),
            keys_bucket: subjects::KEYS_BUCKET.to_string(),
            spend_bucket: subjects::SPEND_BUCKET.to_string(),
            lease: leases::DEFAULT_LEASE,
            instance_id: leases::new_instance_id(),
            resumption: crate::ws::resume::ResumeConfig::default(),
            pricing_file: None,
            metrics_max_keys: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_validated() {
        let c = Config::load(&FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.lease, Duration::from_secs(15));
        assert!(livegate_common::leases::is_instance_id(&c.instance_id));
        let c = Config::load(&FileConfig::default(), &env(&[(LEASE, "3s")])).unwrap();
        assert_eq!(c.lease, Duration::from_secs(3));
        for bad in ["0s", "500ms", "11m", "soon"] {
            assert!(
                Config::load(&FileConfig::default(), &env(&[(LEASE, bad)])).is_err(),
                "{bad}"
            );
        }
    }
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        let c = Config::load(&FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.listen.port(), 4000);
        assert_eq!(c.default_location, "us-central1");
        assert_eq!(c.relay_threads, 0, "relay threads are opt-in");
        let file = FileConfig {
            vertex_project: Some("file-p".into()),
            ..FileConfig::default()
        };
        let c = Config::load(
            &file,
            &env(&[
                (SETUP_TIMEOUT, "2s"),
                (MAX_FRAME_BYTES, "1024"),
                (DEFAULT_LOCATION, "eu"),
                (RELAY_THREADS, "2"),
            ]),
        )
        .unwrap();
        assert_eq!(c.default_project.as_deref(), Some("file-p"));
        assert_eq!(c.setup_timeout, Duration::from_secs(2));
        assert_eq!(c.max_frame_bytes, 1024);
        assert_eq!(c.default_location, "eu");
        assert_eq!(c.relay_threads, 2);
    }

    #[test]
    fn invalid_values_are_errors() {
        assert!(Config::load(&FileConfig::default(), &env(&[(SETUP_TIMEOUT, "soon")])).is_err());
        assert!(Config::load(&FileConfig::default(), &env(&[(RELAY_THREADS, "two")])).is_err());
        assert!(matches!(
            Config::load(&FileConfig::default(), &env(&[(TLS_CERT, "/c.pem")])),
            Err(Error::HalfTls)
        ));
        for name in [HEADER_TIMEOUT, TLS_HANDSHAKE_TIMEOUT, BODY_TIMEOUT] {
            let err = Config::load(&FileConfig::default(), &env(&[(name, "0s")])).unwrap_err();
            assert_eq!(err.to_string(), format!("{name} must be greater than zero"));
            assert!(Config::load(&FileConfig::default(), &env(&[(name, "soon")])).is_err());
        }
        let err =
            Config::load(&FileConfig::default(), &env(&[(MAX_FRAME_BYTES, "0")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "GATEWAY_MAX_FRAME_BYTES must be greater than zero"
        );
        assert!(Config::load(&FileConfig::default(), &env(&[(MAX_CONNECTIONS, "-1")])).is_err());
    }

    #[test]
    fn the_gemini_api_key_is_read_checked_and_redacted() {
        use secrecy::ExposeSecret as _;
        let c = Config::load(&FileConfig::default(), &env(&[])).unwrap();
        assert!(c.gemini_api_key.is_none(), "Vertex only by default");
        let secret = "AIzaSy-secret-7f3e";
        let c = Config::load(
            &FileConfig::default(),
            &env(&[
                (GEMINI_API_KEY, &format!(" {secret}\n")),
                (GEMINI_API_URL, "ws://127.0.0.1:9"),
            ]),
        )
        .unwrap();
        assert_eq!(c.gemini_api_key.as_ref().unwrap().expose_secret(), secret);
        assert_eq!(c.gemini_api_url.as_deref(), Some("ws://127.0.0.1:9"));
        assert!(!format!("{c:?}").contains(secret), "Debug redacts the key");

        let dir = std::env::temp_dir().join(format!("livegate-gemini-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        let path = file.to_string_lossy().into_owned();
        let c = Config::load(
            &FileConfig::default(),
            &env(&[(GEMINI_API_KEY_FILE, &path)]),
        )
        .unwrap();
        assert_eq!(c.gemini_api_key.as_ref().unwrap().expose_secret(), secret);

        let both = env(&[(GEMINI_API_KEY, secret), (GEMINI_API_KEY_FILE, &path)]);
        assert!(Config::load(&FileConfig::default(), &both).is_err());
        let missing = dir.join("absent").to_string_lossy().into_owned();
        assert!(
            Config::load(
                &FileConfig::default(),
                &env(&[(GEMINI_API_KEY_FILE, &missing)])
            )
            .is_err()
        );
        std::fs::write(&file, "two words\n").unwrap();
        let err = Config::load(
            &FileConfig::default(),
            &env(&[(GEMINI_API_KEY_FILE, &path)]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            !err.contains("words"),
            "the error never shows the key: {err}"
        );
        std::fs::write(&file, "x".repeat(4096)).unwrap();
        assert!(
            Config::load(
                &FileConfig::default(),
                &env(&[(GEMINI_API_KEY_FILE, &path)])
            )
            .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn front_door_limits() {
        let c = Config::load(&FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.max_frame_bytes, 4 * 1024 * 1024);
        assert_eq!(c.header_timeout, Duration::from_secs(5));
        assert_eq!(c.tls_handshake_timeout, Duration::from_secs(5));
        assert_eq!(c.body_timeout, Duration::from_secs(5));
        assert_eq!(c.max_connections_per_ip, 0, "per-IP cap is opt-in");
        let c = Config::load(
            &FileConfig::default(),
            &env(&[
                (HEADER_TIMEOUT, "2s"),
                (TLS_HANDSHAKE_TIMEOUT, "3s"),
                (BODY_TIMEOUT, "500ms"),
                (MAX_CONNECTIONS, "100"),
                (MAX_CONNECTIONS_PER_IP, "10"),
            ]),
        )
        .unwrap();
        assert_eq!(c.header_timeout, Duration::from_secs(2));
        assert_eq!(c.tls_handshake_timeout, Duration::from_secs(3));
        assert_eq!(c.body_timeout, Duration::from_millis(500));
        assert_eq!((c.max_connections, c.max_connections_per_ip), (100, 10));
    }
}
