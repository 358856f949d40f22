//! The checks a session must pass before it relays, each refusal as the close the client
//! gets: a credential auth accepts (4401, or 1011 when auth cannot be asked), a key and team
//! budget not yet spent (4402), a free concurrent-session slot for the key (4429), and a project and
//! model the key, and a browser token's model binding, allow (4403).

use super::close::{self, Close};
use super::request::{Credential, Presented};
use super::setup::Setup;
use crate::auth::{CheckError, Grant};
use crate::limits::Slot;
use crate::records::{KeyLimits, Limits};
use crate::state::App;
use livegate_proto::auth::KeyInfo;
use std::sync::Arc;

/// The client's credential, which every session needs.
///
/// # Errors
/// 4401 when the client presented none, or a malformed or ambiguous one.
pub fn require_credential(credential: &Presented) -> Result<&Credential, Close> {
    match credential {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(Close::new(close::UNAUTHORIZED, "missing API key")),
        Err(refused) => Err(Close::new(close::UNAUTHORIZED, refused.to_string())),
    }
}

/// Asks auth (or its cache) about the client's credential.
///
/// # Errors
/// 4401 when auth rejects it; 1011 when auth cannot be asked.
pub async fn authenticate(app: &App, credential: &Credential) -> Result<Arc<Grant>, Close> {
    app.auth
        .check(credential.value.expose())
        .await
        .map_err(|e| match e {
            CheckError::Rejected(s) => Close::new(close::UNAUTHORIZED, s.message()),
            CheckError::Unavailable(s) => {
                tracing::error!(cause = %s.message(), code = ?s.code(), "auth unavailable");
                Close::new(close::INTERNAL, "auth service unavailable")
            }
        })
}

/// Refuses a key whose budget, or whose team's budget, is spent.
///
/// # Errors
/// 4402 when the key (or its team) has a budget and its spend has reached it.
pub fn check_budget(app: &App, key: &KeyInfo) -> Result<(), Close> {
    use livegate_common::subjects::{spend_key_for_key, spend_key_for_team};
    // Either view may be ahead: the gateway's KV mirror or the spend auth just reported.
    let spent = |spend_usd: &str, budget: &str, spend_key: &str| {
        let per_auth = matches!(
            (spend_usd.parse::<rust_decimal::Decimal>(), budget.parse::<rust_decimal::Decimal>()),
            (Ok(spend), Ok(budget)) if spend >= budget
        );
        per_auth || app.spend.budget_spent(spend_key, budget)
    };
    if spent(
        &key.spend_usd,
        &key.max_budget_usd,
        &spend_key_for_key(&key.key_id),
    ) {
        return Err(Close::new(
            close::BUDGET_SPENT,
            "budget spent for this API key",
        ));
    }
    if !key.team_id.is_empty()
        && spent(
            &key.team_spend_usd,
            &key.team_max_budget_usd,
            &spend_key_for_team(&key.team_id),
        )
    {
        return Err(Close::new(
            close::BUDGET_SPENT,
            "budget spent for this API key's team",
        ));
    }
    Ok(())
}

/// Subscribes the session to its key's and team's records, starting from what auth granted
/// (or what the gateway's keys mirror shows, when newer): a revocation, a deletion or the
/// key's expiry ends the session (4401), and budget changes apply from its next check.
///
/// # Errors
/// 4401 when the key may not be used already: auth's answer came from the cache, or was
/// given just before a revocation the mirror has since seen, or the key expired since
/// ([`still_usable`]).
pub fn watch_limits(app: &App, key: &KeyInfo) -> Result<Limits, Close> {
    let budgets = super::turns::Budgets::of(key);
    let granted = KeyLimits {
        ended: None,
        expires_at: key.expires_at.as_ref().map(|t| t.seconds),
        max_budget_usd: budgets.key,
    };
    let limits = app
        .records
        .subscribe(&key.key_id, &key.team_id, granted, budgets.team);
    still_usable(&limits)?;
    Ok(limits)
}

/// Refuses a session whose key was revoked, deleted or expired, before it opens an upstream
/// connection (Google bills connections, not only turns).
///
/// # Errors
/// 4401 with the reason a live session would get (`API key revoked`, …).
pub fn still_usable(limits: &Limits) -> Result<(), Close> {
    match limits.ended_now() {
        Some(ended) => Err(Close::new(close::UNAUTHORIZED, ended.reason())),
        None => Ok(()),
    }
}

/// Takes one of the key's concurrent-session slots on this replica.
///
/// # Errors
/// 4429 when the key already holds as many sessions as it may.
pub fn acquire_slot(app: &App, key: &KeyInfo) -> Result<Slot, Close> {
    app.sessions
        .acquire(&key.key_id, key.max_concurrent_sessions)
        .ok_or_else(|| {
            Close::new(
                close::TOO_MANY,
                format!(
                    "concurrent session limit ({}) reached for this API key",
                    key.max_concurrent_sessions
                ),
            )
        })
}

/// Checks the rewritten setup's project and model against the key's allow-lists and a browser
/// token's model binding (empty lists and no binding allow everything).
///
/// # Errors
/// 4403 naming the project or model that is not allowed.
pub fn check_setup(grant: &Grant, setup: &Setup) -> Result<(), Close> {
    let key = &grant.key;
    if !key.allowed_projects.is_empty() && !key.allowed_projects.iter().any(|p| p == &setup.project)
    {
        return Err(Close::new(
            close::FORBIDDEN,
            format!("project {} is not allowed for this API key", setup.project),
        ));
    }
    // A model_list alias may be named by itself or by the model it stands for.
    // A Developer API session's `gemini/{id}` is also allowed by its bare id.
    let bare = setup
        .model_id
        .strip_prefix(super::setup::DEVELOPER_MODEL_PREFIX);
    let names = |m: &String| {
        m == &setup.model_id || bare == Some(m.as_str()) || setup.alias.as_ref() == Some(m)
    };
    let model_ok = key.allowed_models.is_empty() || key.allowed_models.iter().any(names);
    let bound_ok = grant.bound_model.is_empty() || names(&grant.bound_model);
    if !model_ok || !bound_ok {
        return Err(Close::new(
            close::FORBIDDEN,
            format!("model {} is not allowed for this API key", setup.model_id),
        ));
    }
    Ok(())
}
