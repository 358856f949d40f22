//! The gateway's view of the auth service: `CheckKey` with a short TTL cache (invalidated at
//! once when a key record changes in KV; a browser token's answer ends with the token), and Google access tokens cached until shortly
//! before the expiry auth reports, with one refresh shared by all waiting sessions.

use crate::metrics::{Metrics, ResultLabel};
use livegate_proto::auth::auth_client::AuthClient as Grpc;
use livegate_proto::auth::{CheckKeyRequest, GetAccessTokenRequest, KeyInfo};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tonic::transport::{Channel, Endpoint};

/// Stop using a Google token this long before the expiry auth reported.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);
/// Longest wait for a connection to auth.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest call to auth.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Prune the key cache when it grows past this many entries.
const CACHE_PRUNE_AT: usize = 10_000;

/// A checked credential.
#[derive(Debug, Clone)]
pub struct Grant {
    pub key: KeyInfo,
    /// A browser token's model restriction (empty = none).
    pub bound_model: String,
    pub browser_token: bool,
}

/// Why a credential was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Unknown, revoked, expired or malformed (→ 4401); the status message is safe to show
    /// the client.
    #[error("credential rejected by auth")]
    Rejected(#[source] tonic::Status),
    /// Auth could not be asked (→ 1011).
    #[error("auth service unavailable")]
    Unavailable(#[source] tonic::Status),
}

/// Why no Google token is available.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No Google credentials (→ 4001).
    #[error("auth has no usable Google credentials")]
    NotConfigured(#[source] tonic::Status),
    /// Auth or Google failed (→ 1011).
    #[error("cannot get a Google access token from auth")]
    Unavailable(#[source] tonic::Status),
}

struct Cached {
    grant: Arc<Grant>,
    at: Instant,
    /// A browser token's own expiry, Unix seconds: its answer is not served after it, however
    /// young (auth refuses the token from then on).
    credential_expires_at: Option<i64>,
}

impl Cached {
    /// Whether this answer may still be served, `ttl` after it was cached at most.
    fn fresh(&self, ttl: Duration) -> bool {
        self.at.elapsed() < ttl
            && self
                .credential_expires_at
                .is_none_or(|exp| exp > unix_now())
    }
}

/// Seconds since the Unix epoch (0 before it).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Shared by every session of this replica.
pub struct AuthClient {
    channel: Channel,
    grpc: Grpc<Channel>,
    internal_token: Option<SecretString>,
    ttl: Duration,
    /// sha256(credential) → grant. A std mutex: lookups are tiny and never await.
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    /// Google tokens by credential set (`""`: the default one), each with its reuse deadline.
    token: tokio::sync::Mutex<std::collections::HashMap<String, (String, Instant)>>,
    metrics: Metrics,
}

impl AuthClient {
    /// A lazily connecting client (the gateway starts even while auth is still starting).
    ///
    /// # Errors
    /// When `url` is not a valid URI.
    pub fn new(
        url: &str,
        internal_token: Option<SecretString>,
        ttl: Duration,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            grpc: Grpc::new(channel.clone()),
            channel,
            internal_token,
            ttl,
            cache: Mutex::new(HashMap::new()),
            token: tokio::sync::Mutex::new(std::collections::HashMap::new()),
            metrics,
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a credential, from the cache when a fresh answer is there.
    ///
    /// # Errors
    /// [`CheckError`].
    pub async fn check(&self, credential: &str) -> Result<Arc<Grant>, CheckError> {
        let id: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
        if let Some(c) = self.cache().get(&id)
            && c.fresh(self.ttl)
        {
            self.metrics
                .auth_cache
                .get_or_create(&ResultLabel { result: "hit" })
                .inc();
            return Ok(c.grant.clone());
        }
        self.metrics
            .auth_cache
            .get_or_create(&ResultLabel { result: "miss" })
            .inc();
        let resp = self
            .grpc
            .clone()
            .check_key(CheckKeyRequest {
                credential: credential.to_string(),
            })
            .await;
        match resp {
            Ok(r) => {
                let r = r.into_inner();
                let credential_expires_at = r.credential_expires_at.map(|t| t.seconds);
                let grant = Arc::new(Grant {
                    key: r.key.unwrap_or_default(),
                    bound_model: r.bound_model,
                    browser_token: r.is_browser_token,
                });
                let mut cache = self.cache();
                if cache.len() >= CACHE_PRUNE_AT {
                    let ttl = self.ttl;
                    cache.retain(|_, c| c.fresh(ttl));
                }
                cache.insert(
                    id,
                    Cached {
                        grant: grant.clone(),
                        at: Instant::now(),
                        credential_expires_at,
                    },
                );
                Ok(grant)
            }
            Err(s) => match s.code() {
                tonic::Code::Unauthenticated | tonic::Code::InvalidArgument => {
                    Err(CheckError::Rejected(s))
                }
                _ => Err(CheckError::Unavailable(s)),
            },
        }
    }

    /// True when auth answers its health check with `SERVING`.
    pub async fn ready(&self) -> bool {
        livegate_proto::contract::is_serving(self.channel.clone(), Duration::from_secs(2)).await
    }

    /// Mints a browser token for the key in `credential`.
    ///
    /// # Errors
    /// The auth service's status (its message is safe to show the caller).
    pub async fn mint_browser_token(
        &self,
        credential: &str,
        ttl_seconds: u32,
        model: &str,
    ) -> Result<livegate_proto::auth::MintBrowserTokenResponse, tonic::Status> {
        self.grpc
            .clone()
            .mint_browser_token(livegate_proto::auth::MintBrowserTokenRequest {
                credential: credential.to_string(),
                ttl_seconds,
                model: model.to_string(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// How long after a key record changed a check answered before the change may still be
    /// served from this cache: one asked just before the change, answered as late as a call
    /// may take, then cached for the TTL.
    pub fn answers_outlive_changes_by(&self) -> Duration {
        CONNECT_TIMEOUT + REQUEST_TIMEOUT + self.ttl
    }

    /// Forgets cached answers for a key (its record changed: revoked, limits updated).
    pub fn invalidate_key(&self, key_id: &str) {
        self.cache().retain(|_, c| c.grant.key.key_id != key_id);
    }

    /// Forgets cached answers for every key of a team (its team record changed: the team
    /// budget each `KeyInfo` carries).
    pub fn invalidate_team(&self, team_id: &str) {
        self.cache().retain(|_, c| c.grant.key.team_id != team_id);
    }

    /// Caches `grant` for `credential` as a successful check would.
    #[cfg(test)]
    pub(crate) fn insert_for_test(&self, credential: &str, grant: Grant) {
        let id: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
        self.cache().insert(
            id,
            Cached {
                grant: Arc::new(grant),
                at: Instant::now(),
                credential_expires_at: None,
            },
        );
    }

    /// Whether a check of `credential` would be answered from the cache.
    #[cfg(test)]
    pub(crate) fn cached_for_test(&self, credential: &str) -> bool {
        let id: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
        self.cache().contains_key(&id)
    }

    /// A Google access token for the upstream.
    ///
    /// # Errors
    /// [`TokenError`].
    pub async fn access_token(&self, credentials: Option<&str>) -> Result<String, TokenError> {
        let credentials = credentials.unwrap_or_default();
        let mut cache = self.token.lock().await;
        if let Some((token, until)) = cache.get(credentials)
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let mut req = tonic::Request::new(GetAccessTokenRequest {
            credentials: credentials.to_string(),
            ..GetAccessTokenRequest::default()
        });
        if let Some(t) = &self.internal_token
            && let Ok(v) = t.expose_secret().parse()
        {
            req.metadata_mut()
                .insert(livegate_proto::contract::INTERNAL_TOKEN_METADATA, v);
        }
        match self.grpc.clone().get_access_token(req).await {
            Ok(r) => {
                let r = r.into_inner();
                let valid_for = r
                    .expires_at
                    .and_then(|t| SystemTime::try_from(t).ok())
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or_default()
                    .saturating_sub(TOKEN_MARGIN);
                cache.insert(
                    credentials.to_string(),
                    (r.access_token.clone(), Instant::now() + valid_for),
                );
                Ok(r.access_token)
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                Err(TokenError::NotConfigured(s))
            }
            Err(s) => Err(TokenError::Unavailable(s)),
        }
    }
}
