//! `livegate keys …` and `livegate token`.

use crate::auth_client::AuthClient;
use anyhow::{Context, anyhow};
use clap::{Args as ClapArgs, Subcommand};
use livegate_proto::auth::{
    CreateKeyRequest, KeyInfo, KeySettings, ListKeysRequest, MintBrowserTokenRequest,
    RevokeKeyRequest, UpdateKeyRequest,
};
use std::io::Write;
use std::time::{Duration, SystemTime};

/// `livegate keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once (the key alone on the last line, or JSON with --json).
    Create(CreateArgs),
    /// List keys (never the keys themselves).
    List {
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change settings of a key; only the flags given are changed.
    Update {
        /// Key id or alias.
        key: String,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key (effective on every gateway within a second).
    Revoke {
        /// Key id or alias.
        key: String,
    },
}

/// `livegate keys create`
#[derive(Debug, ClapArgs)]
pub struct CreateArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Print JSON (`{"key": …, "info": …}`).
    #[arg(long)]
    json: bool,
}

/// Settings shared by create and update.
#[derive(Debug, ClapArgs)]
pub struct SettingsArgs {
    /// Human name (unique among live keys).
    #[arg(long)]
    alias: Option<String>,
    /// Team id (spend is totalled per team).
    #[arg(long)]
    team: Option<String>,
    /// User id.
    #[arg(long)]
    user: Option<String>,
    /// Allowed model ids, comma-separated (empty = all).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Allowed Google projects, comma-separated (empty = all).
    #[arg(long, value_delimiter = ',')]
    projects: Option<Vec<String>>,
    /// Project used when the client names none.
    #[arg(long)]
    default_project: Option<String>,
    /// Location used when the client names none.
    #[arg(long)]
    default_location: Option<String>,
    /// Concurrent sessions allowed (0 = unlimited).
    #[arg(long)]
    max_sessions: Option<u32>,
    /// Budget in USD (e.g. 25 or 12.50); "" removes it.
    #[arg(long)]
    max_budget: Option<String>,
    /// Lifetime from now, e.g. 30d, 12h, 90m.
    #[arg(long, value_parser = humantime::parse_duration)]
    expires: Option<Duration>,
    /// Most transparent resumptions per session (0 = none); "" uses the gateway's limit. The
    /// gateway applies the smaller of this and GATEWAY_RESUME_MAX.
    #[arg(long)]
    max_resumptions: Option<String>,
    /// No resumption once a session is this old, e.g. 30m, 2h; "" uses the gateway's limit.
    /// The gateway applies the smaller of this and GATEWAY_RESUME_MAX_DURATION.
    #[arg(long)]
    max_resumption_duration: Option<String>,
}

/// A flag value that may be "" (back to the gateway's default): `None` then.
fn optional_flag<T>(
    flag: &str,
    v: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> anyhow::Result<Option<T>> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    parse(v)
        .map(Some)
        .map_err(|e| anyhow!("--{flag} {v:?}: {e}"))
}

impl SettingsArgs {
    /// The settings message and the names of the fields that were given.
    fn to_settings(&self) -> anyhow::Result<(KeySettings, Vec<String>)> {
        let mut s = KeySettings::default();
        let mut mask = Vec::new();
        let mut set = |name: &str| mask.push(name.to_string());
        if let Some(v) = &self.alias {
            s.alias.clone_from(v);
            set("alias");
        }
        if let Some(v) = &self.team {
            s.team_id.clone_from(v);
            set("team_id");
        }
        if let Some(v) = &self.user {
            s.user_id.clone_from(v);
            set("user_id");
        }
        if let Some(v) = &self.models {
            s.allowed_models = v.iter().filter(|m| !m.trim().is_empty()).cloned().collect();
            set("allowed_models");
        }
        if let Some(v) = &self.projects {
            s.allowed_projects = v.iter().filter(|m| !m.trim().is_empty()).cloned().collect();
            set("allowed_projects");
        }
        if let Some(v) = &self.default_project {
            s.default_project.clone_from(v);
            set("default_project");
        }
        if let Some(v) = &self.default_location {
            s.default_location.clone_from(v);
            set("default_location");
        }
        if let Some(v) = self.max_sessions {
            s.max_concurrent_sessions = v;
            set("max_concurrent_sessions");
        }
        if let Some(v) = &self.max_budget {
            s.max_budget_usd.clone_from(v);
            set("max_budget_usd");
        }
        if let Some(d) = self.expires {
            let at = SystemTime::now()
                .checked_add(d)
                .ok_or_else(|| anyhow!("--expires is too far in the future"))?;
            s.expires_at = Some(prost_types::Timestamp::from(at));
            set("expires_at");
        }
        if let Some(v) = &self.max_resumptions {
            s.max_resumptions = optional_flag("max-resumptions", v, |v| {
                v.parse::<u32>().map_err(|e| e.to_string())
            })?;
            set("max_resumptions");
        }
        if let Some(v) = &self.max_resumption_duration {
            s.max_resumption_seconds = optional_flag("max-resumption-duration", v, |v| {
                humantime::parse_duration(v)
                    .map(|d| d.as_secs())
                    .map_err(|e| e.to_string())
            })?;
            set("max_resumption_seconds");
        }
        Ok((s, mask))
    }
}

/// `livegate token`
#[derive(Debug, ClapArgs)]
pub struct TokenArgs {
    /// The API key the token derives from.
    #[arg(long, env = "LIVEGATE_API_KEY", hide_env_values = true)]
    key: String,
    /// Lifetime, at most 15m.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Restrict the token to one model.
    #[arg(long)]
    model: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn info_json(k: &KeyInfo) -> serde_json::Value {
    let ts = |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| t.seconds);
    serde_json::json!({
        "key_id": k.key_id,
        "alias": k.alias,
        "team_id": k.team_id,
        "user_id": k.user_id,
        "allowed_models": k.allowed_models,
        "allowed_projects": k.allowed_projects,
        "default_project": k.default_project,
        "default_location": k.default_location,
        "max_concurrent_sessions": k.max_concurrent_sessions,
        "max_budget_usd": k.max_budget_usd,
        "spend_usd": k.spend_usd,
        "team_spend_usd": k.team_spend_usd,
        "team_max_budget_usd": k.team_max_budget_usd,
        "max_resumptions": k.max_resumptions,
        "max_resumption_seconds": k.max_resumption_seconds,
        "created_at": ts(&k.created_at),
        "expires_at": ts(&k.expires_at),
        "revoked": k.revoked,
    })
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn info_line(k: &KeyInfo) -> String {
    let budget = if k.max_budget_usd.is_empty() {
        "-".to_string()
    } else {
        format!("${}", k.max_budget_usd)
    };
    format!(
        "{:<22} {:<20} {:<12} {:<12} ${:<14} {:<10} {}",
        k.key_id,
        k.alias,
        or_dash(&k.team_id),
        or_dash(&k.user_id),
        k.spend_usd,
        budget,
        if k.revoked { "revoked" } else { "active" }
    )
}

pub(crate) async fn run_keys(
    cmd: KeysCommand,
    client: &AuthClient,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create(a) => {
            let (settings, _) = a.settings.to_settings()?;
            let resp = client
                .grpc()
                .create_key(client.admin(CreateKeyRequest {
                    settings: Some(settings),
                })?)
                .await
                .map_err(|s| client.explain(s))?
                .into_inner();
            let info = resp.info.unwrap_or_default();
            if a.json {
                let v = serde_json::json!({"key": resp.key, "info": info_json(&info)});
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "created {} (alias {}); the key is shown only this once:",
                    info.key_id, info.alias
                )?;
                writeln!(out, "{}", resp.key)?;
            }
        }
        KeysCommand::List { all, json } => {
            let keys = client
                .grpc()
                .list_keys(client.admin(ListKeysRequest {
                    include_revoked: all,
                })?)
                .await
                .map_err(|s| client.explain(s))?
                .into_inner()
                .keys;
            if json {
                let v: Vec<_> = keys.iter().map(info_json).collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                writeln!(
                    out,
                    "{:<22} {:<20} {:<12} {:<12} {:<15} {:<10} STATUS",
                    "KEY ID", "ALIAS", "TEAM", "USER", "SPEND", "BUDGET"
                )?;
                for k in &keys {
                    writeln!(out, "{}", info_line(k))?;
                }
            }
        }
        KeysCommand::Update {
            key,
            settings,
            json,
        } => {
            let (settings, mask) = settings.to_settings()?;
            if mask.is_empty() {
                return Err(anyhow!("nothing to update: pass at least one setting flag"));
            }
            let info = client
                .grpc()
                .update_key(client.admin(UpdateKeyRequest {
                    key,
                    settings: Some(settings),
                    update_mask: mask,
                })?)
                .await
                .map_err(|s| client.explain(s))?
                .into_inner();
            if json {
                writeln!(out, "{}", info_json(&info))?;
            } else {
                writeln!(out, "updated {}", info.key_id)?;
            }
        }
        KeysCommand::Revoke { key } => {
            let resp = client
                .grpc()
                .revoke_key(client.admin(RevokeKeyRequest { key })?)
                .await
                .map_err(|s| client.explain(s))?
                .into_inner();
            writeln!(out, "revoked {}", resp.key_id)?;
        }
    }
    Ok(())
}

pub(crate) async fn run_token(
    a: TokenArgs,
    client: &AuthClient,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let ttl_seconds = u32::try_from(a.ttl.as_secs())
        .ok()
        .filter(|t| *t > 0)
        .context("--ttl must be between 1s and 15m")?;
    let resp = client
        .grpc()
        .mint_browser_token(MintBrowserTokenRequest {
            credential: a.key,
            ttl_seconds,
            model: a.model.unwrap_or_default(),
        })
        .await
        .map_err(|s| client.explain(s))?
        .into_inner();
    if a.json {
        let exp = resp.expires_at.map(|t| t.seconds);
        writeln!(
            out,
            "{}",
            serde_json::json!({"token": resp.token, "expires_at": exp})
        )?;
    } else {
        writeln!(out, "{}", resp.token)?;
    }
    Ok(())
}
