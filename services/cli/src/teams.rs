//! `livegate teams …`: team budgets (auth's team records).

use crate::auth_client::AuthClient;
use anyhow::anyhow;
use clap::Subcommand;
use livegate_proto::auth::{
    ClearTeamRequest, GetTeamRequest, ListTeamsRequest, SetTeamRequest, TeamInfo, TeamSettings,
};
use std::io::Write;

/// `livegate teams …`
#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// Set a team's settings (creating its record); only the flags given change.
    Set {
        /// Team id (as keys name it with `--team`).
        team: String,
        /// Team budget in USD (e.g. 100 or 12.50), enforced on every key of the team; ""
        /// removes it.
        #[arg(long = "max-budget-usd", visible_alias = "max-budget")]
        max_budget_usd: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a team: budget, spend, live keys.
    Show {
        /// Team id.
        team: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List teams: those with a record and those live keys name.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a team's record (its budget); its keys keep working.
    Clear {
        /// Team id.
        team: String,
    },
}

fn team_json(t: &TeamInfo) -> serde_json::Value {
    let ts = |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| t.seconds);
    serde_json::json!({
        "team_id": t.team_id,
        "max_budget_usd": t.max_budget_usd,
        "spend_usd": t.spend_usd,
        "keys": t.keys,
        "has_record": t.has_record,
        "created_at": ts(&t.created_at),
        "updated_at": ts(&t.updated_at),
    })
}

fn team_line(t: &TeamInfo) -> String {
    let budget = if t.max_budget_usd.is_empty() {
        "-".to_string()
    } else {
        format!("${}", t.max_budget_usd)
    };
    format!(
        "{:<24} ${:<14} {:<14} {}",
        t.team_id, t.spend_usd, budget, t.keys
    )
}

const HEADER: (&str, &str, &str, &str) = ("TEAM", "SPEND", "BUDGET", "KEYS");

fn header() -> String {
    format!(
        "{:<24} {:<15} {:<14} {}",
        HEADER.0, HEADER.1, HEADER.2, HEADER.3
    )
}

pub(crate) async fn run_teams(
    cmd: TeamsCommand,
    client: &AuthClient,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cmd {
        TeamsCommand::Set {
            team,
            max_budget_usd,
            json,
        } => {
            let mut settings = TeamSettings::default();
            let mut mask = Vec::new();
            if let Some(v) = max_budget_usd {
                settings.max_budget_usd = v;
                mask.push("max_budget_usd".to_string());
            }
            if mask.is_empty() {
                return Err(anyhow!(
                    "nothing to set: pass at least one setting flag (--max-budget-usd)"
                ));
            }
            let info = client
                .grpc()
                .set_team(client.admin(SetTeamRequest {
                    team_id: team,
                    settings: Some(settings),
                    update_mask: mask,
                })?)
                .await
                .map_err(|s| client.explain(s))?
                .into_inner();
            if json {
                writeln!(out, "{}", team_json(&info))?;
            } else {
                let budget = if info.max_budget_usd.is_empty() {
                    "no budget".to_string()
                } else {
                    format!("budget ${}", info.max_budget_usd)
                };
                writeln!(out, "set team {}: {budget}", info.team_id)?;
            }
        }
        TeamsCommand::Show { team, json } => {
            let info = client
                .grpc()
                .get_team(client.admin(GetTeamRequest { team_id: team })?)
                .await
                .map_err(|s| client.explain(s))?
                .into_inner();
            if json {
                writeln!(out, "{}", team_json(&info))?;
            } else {
                writeln!(out, "{}", header())?;
                writeln!(out, "{}", team_line(&info))?;
            }
        }
        TeamsCommand::List { json } => {
            let teams = client
                .grpc()
                .list_teams(client.admin(ListTeamsRequest {})?)
                .await
                .map_err(|s| client.explain(s))?
                .into_inner()
                .teams;
            if json {
                let v: Vec<_> = teams.iter().map(team_json).collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                writeln!(out, "{}", header())?;
                for t in &teams {
                    writeln!(out, "{}", team_line(t))?;
                }
            }
        }
        TeamsCommand::Clear { team } => {
            let resp = client
                .grpc()
                .clear_team(client.admin(ClearTeamRequest { team_id: team })?)
                .await
                .map_err(|s| client.explain(s))?
                .into_inner();
            if resp.cleared {
                writeln!(out, "cleared team {} (no team budget now)", resp.team_id)?;
            } else {
                writeln!(out, "team {} had no record; nothing to clear", resp.team_id)?;
            }
        }
    }
    Ok(())
}
