//! livegate's load generator (`livegate-loadgen`): opens many concurrent Live API sessions
//! against a WebSocket URL (the gateway, or the emulator directly) and reports per-turn
//! latency percentiles, frames/s, session setups/s, errors by close code or kind, and the
//! RSS and CPU time of processes named with `--pid`.
//!
//! - `cli`: arguments ([`Cli`]).
//! - `frames`: client frames built once, and a substring classifier for server frames.
//! - `client`: one connection (source addresses, handshake, bounded close) and the
//!   [`client::Failure`] kinds errors are counted by.
//! - `run`: the modes `text`, `audio`, `idle`, `setup`.
//! - `events`: the metering throughput benchmark (NATS → metering → ClickHouse).
//! - `relay`: a bare TCP relay, the floor bench.sh compares the gateway with.
//! - `resume`: the resumption benchmark (gap at a resumption, CPU per resumption).
//! - `procstat`: `/proc/PID/status` and `/proc/PID/stat` readings.
//! - `report`: [`Report`] (the `--json` form), its table, and the side-by-side comparison
//!   `scripts/bench.sh` prints (medians and paired deltas when there are several rounds).

pub mod cli;
pub mod client;
pub mod events;
pub mod frames;
pub mod procstat;
pub mod relay;
pub mod report;
pub mod resume;
mod run;

pub use cli::{Cli, Command};
pub use report::Report;
pub use run::run;

use anyhow::Context as _;
use std::io::Write;

/// Raises the soft open-files limit to the hard one and says so when `sockets` will not fit.
/// Each session is one socket here, and two in the gateway (client and upstream).
pub fn raise_nofile_limit(sockets: u64) {
    let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    // stdin/out/err, the runtime's epoll and eventfds, /proc reads.
    let needed = sockets + 32;
    if soft < needed {
        tracing::warn!(
            limit = soft,
            needed,
            "RLIMIT_NOFILE is lower than the sockets this run needs; the last sessions will \
             fail with 'Too many open files'. Raise the hard limit (ulimit -Hn, as root or \
             with CAP_SYS_RESOURCE) or split the load over several processes"
        );
    }
}

/// Runs a parsed command to completion, writing its output to `out`.
///
/// # Errors
/// Unreadable report files, a bad URL, a failed write.
pub async fn main_with(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Compare { files, side } => {
            let mut reports = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                let r: Report = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", f.display()))?;
                reports.push(r);
            }
            write!(out, "{}", report::render_all(&reports, &side)?)?;
        }
        Command::Resume {
            common,
            sessions,
            duration,
            baseline_cpu_per_turn_ms,
        } => {
            let r = resume::run(&common, sessions, duration, baseline_cpu_per_turn_ms).await?;
            let text = serde_json::to_string_pretty(&r)?;
            if let Some(path) = &common.json_out {
                std::fs::write(path, format!("{text}\n"))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if common.json {
                writeln!(out, "{text}")?;
            } else {
                write!(out, "{}", resume::render(&r))?;
            }
        }
        Command::Relay { listen, to, .. } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            relay::run(listener, to, livegate_common::shutdown::signal()).await?;
        }
        Command::Events { args } => {
            let (json, json_out) = (args.json, args.json_out.clone());
            let r = events::run(args).await?;
            let text = serde_json::to_string_pretty(&r)?;
            if let Some(path) = json_out {
                std::fs::write(&path, format!("{text}\n"))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                writeln!(out, "{text}")?;
            } else {
                write!(out, "{}", events::render(&r))?;
            }
        }
        command => {
            let (json, json_out) = match &command {
                Command::Text { common, .. }
                | Command::Audio { common, .. }
                | Command::Idle { common, .. }
                | Command::Setup { common, .. } => (common.json, common.json_out.clone()),
                Command::Compare { .. }
                | Command::Events { .. }
                | Command::Relay { .. }
                | Command::Resume { .. } => (false, None),
            };
            let r = run(command).await?;
            let text = serde_json::to_string_pretty(&r)?;
            if let Some(path) = json_out {
                std::fs::write(&path, format!("{text}\n"))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                writeln!(out, "{text}")?;
            } else {
                write!(out, "{}", report::render(&r))?;
            }
        }
    }
    Ok(())
}
