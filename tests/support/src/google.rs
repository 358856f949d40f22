//! Google authentication without Google, so tests exercise the real `google-cloud-auth` 1.18.
//!
//! What the crate does (read from its source):
//! - **service account** JSON: it never calls `token_uri`. Each token is a *self-signed JWT*,
//!   RS256, header `{"alg":"RS256","typ":"JWT","kid":<private_key_id>}`, claims
//!   `iss`/`sub` = `client_email`, `scope` = the scopes joined by spaces, `aud: null`,
//!   `iat` = now − 10 s, `exp` = now + 3610 s. The key must be PKCS#8 PEM and the JSON must
//!   have `project_id`. [`TestServiceAccount`] makes such a key (with `livegate-demo-credentials`,
//!   the generator demo mode uses); the emulator (or
//!   [`TestServiceAccount::verify_jwt`]) checks the signature with the public half.
//! - **authorized_user** JSON: POSTs to `token_uri` (honoured; also settable with
//!   `user_account::Builder::with_token_uri`) a **JSON** body (`Content-Type:
//!   application/json`, not a form) `{"grant_type":"refresh_token","client_id",
//!   "client_secret","refresh_token","scopes":null|"a b"}`, and reads `access_token`,
//!   `token_type`, `expires_in`. [`FakeTokenEndpoint`] answers it (forms too).
//! - **metadata server**: `GET {endpoint}/computeMetadata/v1/instance/service-accounts/default/token`
//!   with header `metadata-flavor: Google` and, if scopes were set, `?scopes=a,b` (comma
//!   separated). `universe_domain()` reads `/computeMetadata/v1/universe/universe-domain`. The
//!   endpoint is set with `mds::Builder::with_endpoint("http://127.0.0.1:PORT")`, but the
//!   `GCE_METADATA_HOST` env var, when set, wins over it. [`FakeMetadataServer`] answers these.
//! - All three cache the token in a background task (spawned at `build()`, so build inside a
//!   tokio runtime) that refreshes 240 s before expiry, or 10 s after fetching when the token
//!   lives shorter than that.
//! - The crate's HTTP client needs a rustls provider: call [`crate::init_crypto`] first.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, anyhow, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use http::{Method, Request, StatusCode};
use livegate_demo_credentials::ServiceAccount;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier as _;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::httpio::{Handler, Server, json as json_response, respond};

/// The scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The project id written into test credentials and served by [`FakeMetadataServer`].
pub use livegate_demo_credentials::PROJECT_ID as TEST_PROJECT_ID;

/// A freshly generated service account key and its JSON key file: demo mode's key
/// ([`livegate_demo_credentials::ServiceAccount`], whose fields it derefs to: `path`, `json`,
/// `kid`, `client_email`, `project_id`) plus what tests do with it.
#[derive(Debug)]
pub struct TestServiceAccount(ServiceAccount);

impl std::ops::Deref for TestServiceAccount {
    type Target = ServiceAccount;

    fn deref(&self) -> &ServiceAccount {
        &self.0
    }
}

impl TestServiceAccount {
    /// Generates a 2048-bit RSA key and writes `<dir>/service-account-<kid>.json` in Google's
    /// key file format (PKCS#8 private key). CPU-bound (well under a second with the
    /// workspace's optimised `rsa`); call it from a test, not a hot path.
    ///
    /// # Errors
    /// If key generation or writing the file fails.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self(ServiceAccount::generate(dir)?))
    }

    /// The key in the form the emulator's config takes.
    pub fn emulator_key(&self) -> livegate_emulator::ServiceAccountKey {
        livegate_emulator::ServiceAccountKey {
            kid: self.kid.clone(),
            public_key_pem: self.public_key_pem(),
        }
    }

    /// Real `google-cloud-auth` service-account credentials from this key, scoped to
    /// cloud-platform. Call inside a tokio runtime, after [`crate::init_crypto`].
    ///
    /// # Errors
    /// If the crate rejects the key file.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        use google_cloud_auth::credentials::service_account::{AccessSpecifier, Builder};
        Builder::new(self.json.clone())
            .with_access_specifier(AccessSpecifier::from_scopes([CLOUD_PLATFORM_SCOPE]))
            .build()
            .context("building service account credentials")
    }

    /// Checks that `jwt` is RS256, carries this key's `kid`, is signed by this key and is not
    /// expired; returns its claims.
    ///
    /// # Errors
    /// Says which check failed.
    pub fn verify_jwt(&self, jwt: &str) -> anyhow::Result<Value> {
        let (header, claims) = decode_jwt(jwt)?;
        ensure!(
            header["alg"] == "RS256",
            "alg is {}, not RS256",
            header["alg"]
        );
        ensure!(
            header["kid"] == self.kid.as_str(),
            "kid is {}, not {}",
            header["kid"],
            self.kid
        );
        let (signed, signature) = jwt.rsplit_once('.').context("JWT has no signature")?;
        let signature = Signature::try_from(URL_SAFE_NO_PAD.decode(signature)?.as_slice())
            .context("malformed signature")?;
        VerifyingKey::<Sha256>::new(self.public_key())
            .verify(signed.as_bytes(), &signature)
            .context("signature does not verify")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let exp = claims["exp"].as_u64().context("no numeric exp claim")?;
        ensure!(exp > now, "JWT expired at {exp} (now {now})");
        Ok(claims)
    }
}

/// Splits a JWT and decodes its header and claims, without checking anything.
///
/// # Errors
/// If it is not three base64url parts with JSON in the first two.
pub fn decode_jwt(jwt: &str) -> anyhow::Result<(Value, Value)> {
    let mut parts = jwt.split('.');
    let (Some(header), Some(claims), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("not a JWT (expected three dot-separated parts)");
    };
    let decode = |part: &str| -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part)?)?)
    };
    Ok((
        decode(header).context("JWT header")?,
        decode(claims).context("JWT claims")?,
    ))
}

/// The bearer token from `credentials.headers()`, as the gateway would send it upstream.
///
/// # Errors
/// If the credentials fail or produce no `Authorization: Bearer` header.
pub async fn bearer_token(credentials: &Credentials) -> anyhow::Result<String> {
    let headers = match credentials.headers(http::Extensions::new()).await? {
        CacheableResource::New { data, .. } => data,
        CacheableResource::NotModified => {
            bail!("credentials said NotModified without an entity tag")
        }
    };
    let value = headers
        .get(http::header::AUTHORIZATION)
        .context("no Authorization header")?
        .to_str()
        .context("Authorization header is not ASCII")?;
    value
        .strip_prefix("Bearer ")
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("Authorization is not a bearer token"))
}

/// Counters and knobs shared by a fake token server and its handle.
#[derive(Debug)]
struct TokenState {
    prefix: &'static str,
    requests: AtomicUsize,
    token_requests: AtomicUsize,
    issued: Mutex<Vec<String>>,
    scopes: Mutex<Vec<Option<String>>>,
    expires_in: AtomicU64,
    /// 0 = answer normally; otherwise answer token requests with this status.
    fail_status: AtomicU16,
}

impl TokenState {
    fn new(prefix: &'static str) -> Arc<Self> {
        Arc::new(Self {
            prefix,
            requests: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
            issued: Mutex::new(Vec::new()),
            scopes: Mutex::new(Vec::new()),
            expires_in: AtomicU64::new(3600),
            fail_status: AtomicU16::new(0),
        })
    }

    /// Issues the next token, or the configured failure.
    fn token_response(
        &self,
        scopes: Option<String>,
    ) -> http::Response<http_body_util::Full<Bytes>> {
        let n = self.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
        lock(&self.scopes).push(scopes);
        let fail = self.fail_status.load(Ordering::SeqCst);
        if fail != 0 {
            let status = StatusCode::from_u16(fail).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return json_response(status, &json!({"error": "fake_failure"}));
        }
        let token = format!("{}-{n}", self.prefix);
        lock(&self.issued).push(token.clone());
        json_response(
            StatusCode::OK,
            &json!({
                "access_token": token,
                "expires_in": self.expires_in.load(Ordering::SeqCst),
                "token_type": "Bearer",
            }),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The OAuth client id in [`FakeTokenEndpoint`]'s authorized_user file.
pub const FAKE_CLIENT_ID: &str = "livegate-test-client.apps.example";
/// The OAuth client secret in [`FakeTokenEndpoint`]'s authorized_user file.
pub const FAKE_CLIENT_SECRET: &str = "livegate-test-secret";
/// The refresh token in [`FakeTokenEndpoint`]'s authorized_user file.
pub const FAKE_REFRESH_TOKEN: &str = "livegate-test-refresh-token";

/// A local OAuth token endpoint for `authorized_user` credentials: `POST /token` with the
/// refresh-token grant (JSON or form body) answers
/// `{"access_token":"fake-<n>","expires_in":N,"token_type":"Bearer"}`. Wrong grant or client
/// fields get `400 {"error":"invalid_grant"}`. Runs on the current tokio runtime; stops on drop.
#[derive(Debug)]
pub struct FakeTokenEndpoint {
    server: Server,
    state: Arc<TokenState>,
}

impl FakeTokenEndpoint {
    /// Starts the endpoint on `127.0.0.1:<ephemeral>`; tokens expire in 3600 s.
    ///
    /// # Errors
    /// If binding fails.
    pub async fn start() -> anyhow::Result<Self> {
        let state = TokenState::new("fake");
        let handler_state = state.clone();
        let handler: Handler = Arc::new(move |req| token_endpoint(&handler_state, &req));
        Ok(Self {
            server: Server::start(handler).await?,
            state,
        })
    }

    /// `http://127.0.0.1:<port>/token`.
    pub fn token_uri(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// Sets `expires_in` (seconds) for tokens issued from now on.
    pub fn set_expires_in(&self, seconds: u64) {
        self.state.expires_in.store(seconds, Ordering::SeqCst);
    }

    /// Makes token requests fail with `status` (e.g. 503) until called with `None`.
    pub fn fail_with(&self, status: Option<StatusCode>) {
        self.state
            .fail_status
            .store(status.map_or(0, |s| s.as_u16()), Ordering::SeqCst);
    }

    /// All HTTP requests received, good or bad.
    pub fn request_count(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The access tokens issued so far, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state.issued).clone()
    }

    /// The `scopes` field of each well-formed token request (`None` when absent or null).
    pub fn requested_scopes(&self) -> Vec<Option<String>> {
        lock(&self.state.scopes).clone()
    }

    /// An `authorized_user` credentials JSON whose `token_uri` is this endpoint.
    pub fn authorized_user_json(&self) -> Value {
        json!({
            "type": "authorized_user",
            "client_id": FAKE_CLIENT_ID,
            "client_secret": FAKE_CLIENT_SECRET,
            "refresh_token": FAKE_REFRESH_TOKEN,
            "token_uri": self.token_uri(),
        })
    }

    /// Writes [`authorized_user_json`](Self::authorized_user_json) to
    /// `<dir>/authorized-user-<port>.json` and returns the path.
    ///
    /// # Errors
    /// If writing fails.
    pub fn write_authorized_user_file(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join(format!(
            "authorized-user-{}.json",
            self.server.addr().port()
        ));
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&self.authorized_user_json())?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

fn token_endpoint(
    state: &TokenState,
    req: &Request<Bytes>,
) -> http::Response<http_body_util::Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if req.method() != Method::POST || req.uri().path() != "/token" {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"}));
    }
    let is_json = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let fields: Value = if is_json {
        serde_json::from_slice(req.body()).unwrap_or(Value::Null)
    } else {
        Value::Object(
            parse_query(&String::from_utf8_lossy(req.body()))
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    };
    let field = |name: &str| fields.get(name).and_then(Value::as_str);
    let valid = field("grant_type") == Some("refresh_token")
        && field("client_id") == Some(FAKE_CLIENT_ID)
        && field("client_secret") == Some(FAKE_CLIENT_SECRET)
        && field("refresh_token") == Some(FAKE_REFRESH_TOKEN);
    if !valid {
        return json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid_grant"}));
    }
    let scopes = field("scopes")
        .or_else(|| field("scope"))
        .map(str::to_owned);
    state.token_response(scopes)
}

/// The service account email served by [`FakeMetadataServer`].
pub const METADATA_SA_EMAIL: &str = "livegate-test@livegate-test-project.iam.gserviceaccount.com";

const MDS_SA_PREFIX: &str = "/computeMetadata/v1/instance/service-accounts/default";

/// A fake GCE metadata server. Every request must carry `Metadata-Flavor: Google` (else
/// 403), and every answer carries it. Serves:
/// - `…/instance/service-accounts/default/token[?scopes=a,b]` →
///   `{"access_token":"mds-<n>","expires_in":N,"token_type":"Bearer"}`
/// - `…/instance/service-accounts/default/email`, `…/default/scopes`,
///   `…/project/project-id`, `…/universe/universe-domain` (`googleapis.com`)
/// - everything else: 404.
///
/// Runs on the current tokio runtime; stops on drop.
#[derive(Debug)]
pub struct FakeMetadataServer {
    server: Server,
    state: Arc<TokenState>,
}

impl FakeMetadataServer {
    /// Starts the server on `127.0.0.1:<ephemeral>`; tokens expire in 3600 s.
    ///
    /// # Errors
    /// If binding fails.
    pub async fn start() -> anyhow::Result<Self> {
        let state = TokenState::new("mds");
        let handler_state = state.clone();
        let handler: Handler = Arc::new(move |req| metadata(&handler_state, &req));
        Ok(Self {
            server: Server::start(handler).await?,
            state,
        })
    }

    /// `127.0.0.1:<port>`, the form `GCE_METADATA_HOST` takes.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `http://127.0.0.1:<port>`, for `mds::Builder::with_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Sets `expires_in` (seconds) for tokens issued from now on.
    pub fn set_expires_in(&self, seconds: u64) {
        self.state.expires_in.store(seconds, Ordering::SeqCst);
    }

    /// Makes token requests fail with `status` until called with `None`.
    pub fn fail_with(&self, status: Option<StatusCode>) {
        self.state
            .fail_status
            .store(status.map_or(0, |s| s.as_u16()), Ordering::SeqCst);
    }

    /// All HTTP requests received (any path, with or without the flavor header).
    pub fn request_count(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests for a token (with a valid flavor header).
    pub fn token_request_count(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// The access tokens issued so far, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state.issued).clone()
    }

    /// The `scopes` query parameter of each token request (`None` when absent).
    pub fn requested_scopes(&self) -> Vec<Option<String>> {
        lock(&self.state.scopes).clone()
    }
}

fn metadata(
    state: &TokenState,
    req: &Request<Bytes>,
) -> http::Response<http_body_util::Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let flavored = req
        .headers()
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google");
    let mut response = if !flavored {
        respond(
            StatusCode::FORBIDDEN,
            "text/plain",
            "Missing Metadata-Flavor:Google header.\n",
        )
    } else if req.method() != Method::GET {
        respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "")
    } else {
        let path = req.uri().path().trim_end_matches('/');
        let text = |body: &str| respond(StatusCode::OK, "application/text", body.to_owned());
        match path.strip_prefix(MDS_SA_PREFIX) {
            Some("/token") => {
                let scopes = parse_query(req.uri().query().unwrap_or_default())
                    .into_iter()
                    .find_map(|(k, v)| (k == "scopes").then_some(v));
                state.token_response(scopes)
            }
            Some("/email") => text(METADATA_SA_EMAIL),
            Some("/scopes") => text(&format!("{CLOUD_PLATFORM_SCOPE}\n")),
            _ => match path {
                "/computeMetadata/v1/project/project-id" => text(TEST_PROJECT_ID),
                "/computeMetadata/v1/universe/universe-domain" => text("googleapis.com"),
                "" | "/computeMetadata/v1" => text(""),
                _ => respond(StatusCode::NOT_FOUND, "text/html", "Not Found\n"),
            },
        }
    };
    response
        .headers_mut()
        .insert("metadata-flavor", http::HeaderValue::from_static("Google"));
    response
}

/// Decodes `a=b&c=d` (`application/x-www-form-urlencoded`, also query strings).
fn parse_query(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
