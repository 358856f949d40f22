//! The `livegate.auth.v1.Auth` gRPC service. Handlers are thin: they check the caller, then
//! call the [`Store`], [`browser`] or [`GoogleTokens`]. Errors become `tonic::Status` here and
//! only here; clients get a generic message, the log gets the cause.

use crate::browser;
use crate::google::{GoogleTokens, TokenError};
use crate::keys::{self, KeyRecord, MAX_CREDENTIAL_LEN, SettingsError, UPDATABLE_FIELDS};
use crate::store::{Store, StoreError};
use crate::teams::{self, TEAM_FIELDS, TeamRecord};
use livegate_common::credential;
use livegate_common::subjects::{spend_key_for_key, spend_key_for_team};
use livegate_proto::auth::auth_server::Auth;
use livegate_proto::auth::*;
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

/// The one message every failed key check gets, so callers cannot tell unknown, revoked and
/// expired keys apart.
const INVALID_CREDENTIAL: &str = "invalid, expired or revoked API key";

/// Why a browser token is refused by `MintBrowserToken`, whatever its spelling.
const BROWSER_TOKEN_CANNOT_MINT: &str =
    "a browser token cannot mint another browser token; present the API key";

/// The service state shared by all requests.
pub struct AuthService {
    pub(crate) store: Store,
    pub(crate) google: Arc<GoogleTokens>,
    pub(crate) master_key: Option<SecretString>,
    pub(crate) internal_token: Option<SecretString>,
}

fn secret_eq(given: &str, expected: &SecretString) -> bool {
    given
        .as_bytes()
        .ct_eq(expected.expose_secret().as_bytes())
        .into()
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        // As a `dyn Error`, so the log line carries the NATS cause (the source chain) too.
        tracing::error!(error = &e as &dyn std::error::Error, "key store failure");
        Status::unavailable("key store unavailable")
    }
}

impl From<SettingsError> for Status {
    fn from(e: SettingsError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

impl AuthService {
    fn require_master<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(master) = &self.master_key else {
            return Err(Status::permission_denied(
                "admin API disabled: LIVEGATE_MASTER_KEY is not configured",
            ));
        };
        let given = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated("missing authorization metadata (Bearer <master key>)")
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization metadata is not valid ASCII"))?;
        let token = credential::bearer(given);
        if secret_eq(token, master) {
            Ok(())
        } else {
            tracing::warn!("admin call with a wrong master key refused");
            Err(Status::unauthenticated("wrong master key"))
        }
    }

    fn require_internal<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(expected) = &self.internal_token else {
            return Err(Status::permission_denied(
                "GetAccessToken disabled: LIVEGATE_INTERNAL_TOKEN is not configured",
            ));
        };
        let ok = req
            .metadata()
            .get(livegate_proto::contract::INTERNAL_TOKEN_METADATA)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| secret_eq(v, expected));
        if ok {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "GetAccessToken requires the internal token",
            ))
        }
    }

    fn info(&self, r: &KeyRecord) -> KeyInfo {
        let (team_spend, team_budget) = if r.team_id.is_empty() {
            (Decimal::ZERO, None)
        } else {
            (
                self.store.spend(&spend_key_for_team(&r.team_id)),
                self.store.team(&r.team_id).and_then(|t| t.max_budget_usd),
            )
        };
        r.info(
            self.store.spend(&spend_key_for_key(&r.key_id)),
            team_spend,
            team_budget,
        )
    }

    /// A team's public view: its record (if any), spend and live keys.
    fn team_info(&self, team_id: &str, record: Option<&TeamRecord>) -> TeamInfo {
        let keys = self
            .store
            .list()
            .iter()
            .filter(|r| !r.revoked && r.team_id == team_id)
            .count();
        teams::info(
            team_id,
            record,
            self.store.spend(&spend_key_for_team(team_id)),
            keys,
        )
    }

    fn team_id(given: &str) -> Result<&str, Status> {
        let team_id = given.trim();
        if team_id.is_empty() {
            return Err(Status::invalid_argument("team id is empty"));
        }
        teams::check_team_id(team_id)?;
        Ok(team_id)
    }

    /// Resolves a credential (API key or browser token) to a usable key record, and the
    /// browser token's claims when it is one. The credential is taken exactly as given: the
    /// gateway reads it with the shared parser, and auth trims nothing into validity.
    fn resolve(&self, credential: &str) -> Result<(KeyRecord, Option<browser::Claims>), Status> {
        if credential.is_empty() {
            return Err(Status::invalid_argument("credential is empty"));
        }
        if credential.len() > MAX_CREDENTIAL_LEN {
            return Err(Status::invalid_argument(format!(
                "credential is longer than {MAX_CREDENTIAL_LEN} bytes"
            )));
        }
        if !credential::is_well_formed(credential) {
            return Err(Status::invalid_argument(
                "credential has characters no livegate credential has (whitespace, separators or non-ASCII)",
            ));
        }
        let now = keys::now_unix();
        let (record, claims) = if credential.starts_with(browser::TOKEN_PREFIX) {
            let claims = browser::verify(self.store.browser_secret(), credential, now)
                .ok_or_else(|| Status::unauthenticated(INVALID_CREDENTIAL))?;
            let record = self
                .store
                .by_id(&claims.key_id)
                .ok_or_else(|| Status::unauthenticated(INVALID_CREDENTIAL))?;
            (record, Some(claims))
        } else {
            let hash = keys::hash(credential);
            let record = self
                .store
                .by_hash(&hash)
                .filter(|r| bool::from(r.hash.as_bytes().ct_eq(hash.as_bytes())))
                .ok_or_else(|| Status::unauthenticated(INVALID_CREDENTIAL))?;
            (record, None)
        };
        if record.is_usable_at(now) {
            Ok((record, claims))
        } else {
            Err(Status::unauthenticated(INVALID_CREDENTIAL))
        }
    }

    fn find(&self, id_or_alias: &str) -> Result<KeyRecord, Status> {
        let id_or_alias = id_or_alias.trim();
        if id_or_alias.is_empty() {
            return Err(Status::invalid_argument("key id or alias is empty"));
        }
        self.store
            .find(id_or_alias)
            .ok_or_else(|| Status::not_found(format!("no key with id or alias {id_or_alias:?}")))
    }

    fn alias_taken(&self, alias: &str, except_key_id: &str) -> bool {
        self.store
            .list()
            .iter()
            .any(|r| !r.revoked && r.alias == alias && r.key_id != except_key_id)
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn check_key(
        &self,
        req: Request<CheckKeyRequest>,
    ) -> Result<Response<CheckKeyResponse>, Status> {
        let (record, claims) = self.resolve(&req.get_ref().credential)?;
        Ok(Response::new(CheckKeyResponse {
            key: Some(self.info(&record)),
            bound_model: claims.as_ref().map(|c| c.model.clone()).unwrap_or_default(),
            is_browser_token: claims.is_some(),
            // The gateway caches answers: a token's cached answer must end with the token.
            credential_expires_at: claims.as_ref().map(|c| prost_types::Timestamp {
                seconds: c.exp,
                nanos: 0,
            }),
        }))
    }

    async fn get_access_token(
        &self,
        req: Request<GetAccessTokenRequest>,
    ) -> Result<Response<GetAccessTokenResponse>, Status> {
        self.require_internal(&req)?;
        match self.google.token_for(&req.get_ref().credentials).await {
            Ok(t) => Ok(Response::new(GetAccessTokenResponse {
                access_token: t.access_token,
                expires_at: Some(prost_types::Timestamp::from(t.expires_at)),
                source: t.source.to_string(),
            })),
            Err(e @ TokenError::NotConfigured(_)) => {
                tracing::warn!(error.message = %e, "no Google credentials");
                Err(Status::failed_precondition(e.to_string()))
            }
            Err(e @ TokenError::Unavailable { .. }) => {
                tracing::warn!(error.message = %e, "Google token unavailable");
                Err(Status::unavailable(e.to_string()))
            }
        }
    }

    async fn create_key(
        &self,
        req: Request<CreateKeyRequest>,
    ) -> Result<Response<CreateKeyResponse>, Status> {
        self.require_master(&req)?;
        let settings = req.into_inner().settings.unwrap_or_default();
        let new = keys::generate();
        let record = KeyRecord::new(new.hash, keys::new_key_id(), &settings)?;
        if self.alias_taken(&record.alias, &record.key_id) {
            return Err(Status::already_exists(format!(
                "a live key with alias {:?} already exists",
                record.alias
            )));
        }
        self.store.put(&record).await?;
        tracing::info!(key_id = %record.key_id, alias = %record.alias, team_id = %record.team_id, "key created");
        Ok(Response::new(CreateKeyResponse {
            key: new.plaintext,
            info: Some(self.info(&record)),
        }))
    }

    async fn list_keys(
        &self,
        req: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        self.require_master(&req)?;
        let include_revoked = req.get_ref().include_revoked;
        let keys = self
            .store
            .list()
            .iter()
            .filter(|r| include_revoked || !r.revoked)
            .map(|r| self.info(r))
            .collect();
        Ok(Response::new(ListKeysResponse { keys }))
    }

    async fn update_key(
        &self,
        req: Request<UpdateKeyRequest>,
    ) -> Result<Response<KeyInfo>, Status> {
        self.require_master(&req)?;
        let req = req.into_inner();
        let mut record = self.find(&req.key)?;
        if record.revoked {
            return Err(Status::failed_precondition("key is revoked"));
        }
        let settings = req.settings.unwrap_or_default();
        if let Some(bad) = req
            .update_mask
            .iter()
            .find(|f| !UPDATABLE_FIELDS.contains(&f.as_str()))
        {
            return Err(Status::invalid_argument(format!(
                "cannot update field {bad:?}; updatable: {}",
                UPDATABLE_FIELDS.join(", ")
            )));
        }
        let fields: Vec<&str> = req.update_mask.iter().map(String::as_str).collect();
        record.apply(&settings, &fields)?;
        if self.alias_taken(&record.alias, &record.key_id) {
            return Err(Status::already_exists(format!(
                "a live key with alias {:?} already exists",
                record.alias
            )));
        }
        self.store.put(&record).await?;
        tracing::info!(key_id = %record.key_id, fields = ?fields, "key updated");
        Ok(Response::new(self.info(&record)))
    }

    async fn revoke_key(
        &self,
        req: Request<RevokeKeyRequest>,
    ) -> Result<Response<RevokeKeyResponse>, Status> {
        self.require_master(&req)?;
        let mut record = self.find(&req.get_ref().key)?;
        if !record.revoked {
            record.revoked = true;
            self.store.put(&record).await?;
            tracing::info!(key_id = %record.key_id, "key revoked");
        }
        Ok(Response::new(RevokeKeyResponse {
            key_id: record.key_id,
        }))
    }

    async fn set_team(&self, req: Request<SetTeamRequest>) -> Result<Response<TeamInfo>, Status> {
        self.require_master(&req)?;
        let req = req.into_inner();
        let team_id = Self::team_id(&req.team_id)?;
        if let Some(bad) = req
            .update_mask
            .iter()
            .find(|f| !TEAM_FIELDS.contains(&f.as_str()))
        {
            return Err(Status::invalid_argument(format!(
                "cannot set team field {bad:?}; settable: {}",
                TEAM_FIELDS.join(", ")
            )));
        }
        let mut record = self
            .store
            .team(team_id)
            .unwrap_or_else(|| TeamRecord::new(team_id));
        let fields: Vec<&str> = req.update_mask.iter().map(String::as_str).collect();
        record.apply(&req.settings.unwrap_or_default(), &fields)?;
        self.store.put_team(&record).await?;
        tracing::info!(team_id = %record.team_id, max_budget_usd = ?record.max_budget_usd, "team set");
        Ok(Response::new(self.team_info(team_id, Some(&record))))
    }

    async fn get_team(&self, req: Request<GetTeamRequest>) -> Result<Response<TeamInfo>, Status> {
        self.require_master(&req)?;
        let team_id = Self::team_id(&req.get_ref().team_id)?;
        let record = self.store.team(team_id);
        let info = self.team_info(team_id, record.as_ref());
        if record.is_none() && info.keys == 0 {
            return Err(Status::not_found(format!(
                "no team {team_id:?}: no team record and no live key names it"
            )));
        }
        Ok(Response::new(info))
    }

    async fn list_teams(
        &self,
        req: Request<ListTeamsRequest>,
    ) -> Result<Response<ListTeamsResponse>, Status> {
        self.require_master(&req)?;
        let records: std::collections::BTreeMap<String, TeamRecord> = self
            .store
            .teams()
            .into_iter()
            .map(|t| (t.team_id.clone(), t))
            .collect();
        let mut ids: std::collections::BTreeSet<String> = records.keys().cloned().collect();
        ids.extend(
            self.store
                .list()
                .into_iter()
                .filter(|r| !r.revoked && !r.team_id.is_empty())
                .map(|r| r.team_id),
        );
        let teams = ids
            .iter()
            .map(|id| self.team_info(id, records.get(id)))
            .collect();
        Ok(Response::new(ListTeamsResponse { teams }))
    }

    async fn clear_team(
        &self,
        req: Request<ClearTeamRequest>,
    ) -> Result<Response<ClearTeamResponse>, Status> {
        self.require_master(&req)?;
        let team_id = Self::team_id(&req.get_ref().team_id)?;
        let cleared = self.store.delete_team(team_id).await?;
        if cleared {
            tracing::info!(team_id = %team_id, "team record cleared");
        }
        Ok(Response::new(ClearTeamResponse {
            team_id: team_id.to_string(),
            cleared,
        }))
    }

    async fn mint_browser_token(
        &self,
        req: Request<MintBrowserTokenRequest>,
    ) -> Result<Response<MintBrowserTokenResponse>, Status> {
        let req = req.into_inner();
        // Decided on what the credential resolved to, not on how it was spelled: a browser
        // token never mints another (that would renew itself forever and shed its binding).
        let (record, minted_from) = self.resolve(&req.credential)?;
        if minted_from.is_some() {
            return Err(Status::unauthenticated(BROWSER_TOKEN_CANNOT_MINT));
        }
        let ttl = match req.ttl_seconds {
            0 => browser::MAX_TTL_SECONDS,
            t if t <= browser::MAX_TTL_SECONDS => t,
            t => {
                return Err(Status::invalid_argument(format!(
                    "ttl_seconds {t} exceeds the maximum of {} (15 minutes)",
                    browser::MAX_TTL_SECONDS
                )));
            }
        };
        let model = req.model.trim().to_string();
        if !browser::model_allowed(&record, &model) {
            return Err(Status::permission_denied(format!(
                "model {model:?} is not allowed for this key (allowed: {})",
                record.allowed_models.join(", ")
            )));
        }
        let exp = browser::expiry(&record, keys::now_unix(), ttl);
        let token = browser::mint(
            self.store.browser_secret(),
            &browser::Claims {
                key_id: record.key_id.clone(),
                exp,
                model,
            },
        );
        tracing::info!(key_id = %record.key_id, ttl_seconds = ttl, "browser token minted");
        Ok(Response::new(MintBrowserTokenResponse {
            token,
            expires_at: Some(prost_types::Timestamp {
                seconds: exp,
                nanos: 0,
            }),
        }))
    }
}
