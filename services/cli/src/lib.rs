//! The `livegate` admin CLI.
//!
//! - `keys create|list|update|revoke`: API key administration (master key required).
//! - `teams set|show|list|clear`: team budgets (master key required).
//! - `token`: mint a short-lived browser token from an API key.
//! - `spend`: spend by key, team, model or day from ClickHouse.
//! - `doctor`: one line per wiring check, with a fix for each failure.
//!
//! Every command prints its result on stdout (`--json` for machines); failures are one line
//! on stderr and exit 1.

mod auth_client;
mod doctor;
mod keys;
mod reprice;
mod spend;
mod teams;

use clap::{Parser, Subcommand};

/// livegate's admin command line.
#[derive(Debug, Parser)]
#[command(name = "livegate", version, about)]
pub struct Args {
    /// Auth service URL.
    #[arg(long, env = "AUTH_URL", default_value = livegate_proto::contract::DEFAULT_AUTH_URL, global = true)]
    pub auth_url: String,
    /// Master key for admin calls.
    #[arg(
        long,
        env = "LIVEGATE_MASTER_KEY",
        hide_env_values = true,
        global = true
    )]
    pub master_key: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Manage teams (team budgets).
    #[command(subcommand)]
    Teams(teams::TeamsCommand),
    /// Mint a short-lived browser token (for `?access_token=` or the subprotocol).
    Token(keys::TokenArgs),
    /// Spend reports from ClickHouse.
    Spend(spend::SpendArgs),
    /// Check the deployment: NATS, JetStream, KV, cluster replicas, ClickHouse schema, auth,
    /// Google credentials.
    Doctor(doctor::DoctorArgs),
}

/// Runs one CLI command, writing its output to `out`.
///
/// # Errors
/// Any failure, phrased for the user in one line.
pub async fn run(args: Args, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let auth = || auth_client::AuthClient::new(&args.auth_url, args.master_key.as_deref());
    match args.command {
        Command::Keys(cmd) => keys::run_keys(cmd, &auth()?, out).await,
        Command::Teams(cmd) => teams::run_teams(cmd, &auth()?, out).await,
        Command::Token(t) => keys::run_token(t, &auth()?, out).await,
        Command::Spend(s) => spend::run_spend(s, out).await,
        Command::Doctor(d) => Box::pin(doctor::run_doctor(d, &auth()?, out)).await,
    }
}
