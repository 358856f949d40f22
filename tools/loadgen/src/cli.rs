//! Command-line arguments.

use crate::procstat::Watched;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The emulator's model path form; the gateway accepts it too (and bare ids), so the same
/// frames go to both.
pub const DEFAULT_MODEL: &str =
    "projects/livegate-bench/locations/us-central1/publishers/google/models/gemini-live-2.5-flash";

/// livegate's load generator: concurrent Live API sessions against the gateway or the
/// emulator, with latency, throughput, error and process RSS/CPU reports.
#[derive(Debug, Parser)]
#[command(name = "livegate-loadgen", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// N sessions × T text turns; latency from sending a turn to its `turnComplete`.
    Text {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        sessions: SessionArgs,
        #[command(flatten)]
        turns: TurnArgs,
        /// The text of every turn.
        #[arg(long, default_value = "What is the weather like today?")]
        text: String,
    },
    /// N sessions × T turns of streamed 16 kHz PCM (100 ms chunks), then `audioStreamEnd`;
    /// latency from `audioStreamEnd` to `turnComplete`.
    Audio {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        sessions: SessionArgs,
        #[command(flatten)]
        turns: TurnArgs,
        /// Seconds of audio per turn.
        #[arg(long, default_value_t = 2.0)]
        audio_seconds: f64,
        /// Streaming speed: 1 = real time, 4 = four times faster, 0 = as fast as possible.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// The response modality asked for in `setup`.
        #[arg(long, value_enum, default_value_t = Modality::Audio)]
        response: Modality,
    },
    /// N sessions of back-to-back text turns for `--duration`, with `sessionResumption`,
    /// through a gateway whose upstream (the emulator with `--max-connection-age`) ends its
    /// connections: the gap the client sees at each resumption (from the last frame of the
    /// old upstream connection to the first of the new one, told apart by the emulator's
    /// handles, which name their connection) and CPU per resumption of the `--pid gateway=`.
    Resume {
        #[command(flatten)]
        common: Common,
        /// Concurrent sessions.
        #[arg(long, default_value_t = 10)]
        sessions: u64,
        /// How long the sessions run their turns.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// The gateway's CPU milliseconds per turn without resumptions (from a run against
        /// an emulator without an age limit); with it, CPU per resumption is reported.
        #[arg(long)]
        baseline_cpu_per_turn_ms: Option<f64>,
    },
    /// Opens N sessions, completes setup, holds them (to measure memory per idle session).
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        sessions: SessionArgs,
        /// How long to hold the sessions once all are open.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        hold: Duration,
    },
    /// Session setups per second: connect, setup, `setupComplete`, close, in a loop.
    Setup {
        #[command(flatten)]
        common: Common,
        /// Concurrent connect/setup/close loops.
        #[arg(long, default_value_t = 50)]
        concurrency: u64,
        /// How long to run.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Stop after this many setups (whichever comes first with --duration).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Metering throughput: publishes N `UsageReport`s to JetStream (pipelined acks) and
    /// polls ClickHouse until all N rows are in `usage_events`; reports publish rate, insert
    /// rate and publish-to-row lag.
    Events {
        #[command(flatten)]
        args: EventsArgs,
    },
    /// Side-by-side table of saved `--json` reports (runs labelled `direct` and `gateway`
    /// of the same mode are paired). Several runs of a mode and label are rounds: round n is
    /// the n-th `direct` and the n-th `gateway` file given; the columns show each figure's
    /// median over the rounds, the added latency is the median of the rounds' own
    /// gateway − direct, and a line under the table lists each round's added p50 and p99.
    Compare {
        /// Report files (for rounds: in the order they ran).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The label compared with `direct` (bench.sh's `relay` runs: `--side relay`).
        #[arg(long, default_value = "gateway")]
        side: String,
    },
    /// A bare TCP relay (accept, connect to `--to`, copy bytes both ways, no parsing): the
    /// floor any user-space proxy adds on this machine, which bench.sh measures next to the
    /// gateway. Runs until SIGTERM or Ctrl-C.
    Relay {
        /// Address to listen on (port 0: any free port; the log says which).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Address every connection is relayed to.
        #[arg(long)]
        to: SocketAddr,
        /// Runtime worker threads (0: one per core, like the gateway).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

/// Arguments of the `events` mode.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// NATS URL (JetStream enabled).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// ClickHouse HTTP URL.
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    pub clickhouse_url: String,
    /// The database metering writes to.
    #[arg(long, default_value = "livegate")]
    pub database: String,
    #[arg(long, default_value = "default")]
    pub clickhouse_user: String,
    #[arg(
        long,
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub clickhouse_password: String,
    /// Events to publish.
    #[arg(long, default_value_t = 200_000)]
    pub count: u64,
    /// Events per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Sessions the events are spread over (round-robin; seq 1, 2, … per session).
    #[arg(long, default_value_t = 1000)]
    pub sessions: u64,
    /// `context.model` of every report.
    #[arg(long, default_value = "gemini-live-2.5-flash")]
    pub model: String,
    /// Most publish acks outstanding at once.
    #[arg(long, default_value_t = 2048)]
    pub window: usize,
    /// Time between ClickHouse row counts.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Bound on the whole run (publishing and waiting for rows).
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// A process to report RSS and CPU for, as LABEL=PID (repeatable).
    #[arg(long = "pid", value_parser = Watched::parse)]
    pub pids: Vec<Watched>,
    /// Name of this run in the report.
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// The response modality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Modality {
    Text,
    Audio,
}

impl Modality {
    /// The `responseModalities` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "TEXT",
            Self::Audio => "AUDIO",
        }
    }
}

/// Target, reporting and limits, shared by every mode.
#[derive(Debug, Args)]
pub struct Common {
    /// WebSocket URL: the gateway (`ws://127.0.0.1:4000/v1/vertex-ai/live`) or the emulator
    /// (`ws://ADDR/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent`).
    #[arg(long)]
    pub url: String,
    /// Sent as `Authorization: Bearer KEY`: a gateway API key or an emulator `--token`.
    #[arg(long, env = "LOADGEN_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// `setup.model`.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// A process to report RSS and CPU for, as LABEL=PID (repeatable).
    #[arg(long = "pid", value_parser = Watched::parse)]
    pub pids: Vec<Watched>,
    /// Source addresses to spread connections over, e.g. 127.0.0.2,127.0.0.3 (each loopback
    /// address has its own ~28,000 ephemeral ports).
    #[arg(long, value_delimiter = ',')]
    pub bind_ips: Vec<IpAddr>,
    /// Name of this run in the report (bench.sh uses `direct` and `gateway`).
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Bound on the whole run; sessions still open then are aborted and counted.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Bound on one connect + handshake + `setupComplete`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Runtime worker threads. One keeps the generator's own CPU use small and predictable
    /// on a machine it shares with what it measures.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Session count and ramp-up.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Concurrent sessions.
    #[arg(long, default_value_t = 100)]
    pub sessions: u64,
    /// Most new connections per second while ramping up (0 = no limit).
    #[arg(long, default_value_t = 1000.0)]
    pub connect_rate: f64,
}

/// Turns per session.
#[derive(Debug, Args)]
pub struct TurnArgs {
    /// Turns per session.
    #[arg(long, default_value_t = 5)]
    pub turns: u64,
    /// Time from one turn's start to the next one's, per session; session starts are spread
    /// evenly over one interval. 0 = next turn as soon as the previous one completes.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub turn_interval: Duration,
    /// Bound on one turn.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub turn_timeout: Duration,
}

impl Command {
    /// The runtime threads the command wants.
    pub fn threads(&self) -> usize {
        match self {
            Self::Text { common, .. }
            | Self::Audio { common, .. }
            | Self::Idle { common, .. }
            | Self::Setup { common, .. }
            | Self::Resume { common, .. } => common.threads.max(1),
            Self::Events { args } => args.threads.max(1),
            Self::Compare { .. } => 1,
            Self::Relay { threads, .. } => match threads {
                0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
                n => *n,
            },
        }
    }

    /// Sockets the command may hold at once.
    pub fn sockets(&self) -> u64 {
        match self {
            Self::Text { sessions, .. }
            | Self::Audio { sessions, .. }
            | Self::Idle { sessions, .. } => sessions.sessions,
            Self::Setup { concurrency, .. } => *concurrency,
            Self::Resume { sessions, .. } => *sessions,
            // The relay holds what its clients open; the limit is raised all the same.
            Self::Events { .. } | Self::Compare { .. } | Self::Relay { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse() {
        let cli = Cli::try_parse_from([
            "livegate-loadgen",
            "text",
            "--url",
            "ws://127.0.0.1:1/v1/vertex-ai/live",
            "--sessions",
            "1000",
            "--pid",
            "gateway=12",
            "--pid",
            "emulator=13",
            "--bind-ips",
            "127.0.0.2,127.0.0.3",
            "--turn-interval",
            "500ms",
        ])
        .unwrap();
        let Command::Text {
            common,
            sessions,
            turns,
            ..
        } = cli.command
        else {
            panic!("expected text")
        };
        assert_eq!(sessions.sessions, 1000);
        assert_eq!(common.pids.len(), 2);
        assert_eq!(common.bind_ips.len(), 2);
        assert_eq!(turns.turn_interval, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["livegate-loadgen", "idle"]).is_err());
    }

    #[test]
    fn events_arguments_parse() {
        let cli = Cli::try_parse_from([
            "livegate-loadgen",
            "events",
            "--nats",
            "nats://127.0.0.1:1",
            "--clickhouse-url",
            "http://127.0.0.1:2",
            "--count",
            "5000",
            "--rate",
            "20000",
            "--sessions",
            "50",
            "--pid",
            "metering=9",
        ])
        .unwrap();
        let Command::Events { args } = cli.command else {
            panic!("expected events")
        };
        assert_eq!(args.count, 5000);
        assert_eq!(args.rate, 20000.0);
        assert_eq!(args.sessions, 50);
        assert_eq!(args.database, "livegate");
        assert_eq!(args.poll_interval, Duration::from_millis(50));
        assert_eq!(args.pids.len(), 1);
    }
}
