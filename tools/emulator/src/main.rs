//! `livegate-emulator`: runs the Vertex AI Live API stand-in until SIGTERM / SIGINT.
//!
//! Prints exactly one line to stdout, `listening on ADDR`, once bound; logs go to stderr.

use anyhow::Context as _;
use clap::Parser;
use livegate_emulator::{
    Behaviour, ConnectionAge, Emulator, EmulatorConfig, ServiceAccountKey, UsageNames,
};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// A local stand-in for the Vertex AI Live API (BidiGenerateContent over WebSocket).
#[derive(Debug, Parser)]
#[command(name = "livegate-emulator", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "EMULATOR_LISTEN", default_value = "127.0.0.1:0")]
    listen: String,
    /// Accepted bearer token (repeatable). With no tokens and no keys, no auth is required.
    #[arg(long = "token", value_name = "T")]
    tokens: Vec<String>,
    /// Accepted Gemini Developer API key on the Developer API paths (`x-goog-api-key` or
    /// `?key=`; repeatable). With none, those paths require no key.
    #[arg(
        long = "developer-api-key",
        value_name = "KEY",
        env = "EMULATOR_DEVELOPER_API_KEY"
    )]
    developer_api_keys: Vec<String>,
    /// Service-account key whose self-signed JWTs are accepted: `KID=PATH.pem` (public or
    /// private key PEM) or `PATH.json` (a service-account key file). Repeatable.
    #[arg(long = "service-account-key", value_name = "KID=PATH.pem|PATH.json")]
    service_account_keys: Vec<String>,
    /// Send `goAway` this many seconds after `setupComplete`.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    go_away_after: Option<Duration>,
    /// Close each session this many seconds after `setupComplete`.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    close_after: Option<Duration>,
    /// Close code for `--close-after`.
    #[arg(long, default_value_t = 1000, value_parser = parse_close_code)]
    close_code: u16,
    /// Close reason for `--close-after`.
    #[arg(long, default_value = "session time limit reached")]
    close_reason: String,
    /// Delay before each reply to a client turn.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    response_delay_ms: u64,
    /// Generation pace: pause between the frames of a reply (a new user turn meanwhile
    /// interrupts it).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    frame_interval_ms: u64,
    /// Output usage field names: `vertex` (candidates…) or `developer` (response…).
    #[arg(long, default_value = "vertex")]
    usage_names: UsageNames,
    /// Send server frames as text frames (default: binary frames of UTF-8 JSON, like Google).
    #[arg(long)]
    text_frames: bool,
    /// Connection-age limit: `goAway` `--go-away-lead` before it, then close
    /// (`--age-close-code`, `--age-close-reason`). Overrides `--go-away-after`/`--close-after`.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    max_connection_age: Option<Duration>,
    /// How long before the age limit the `goAway` comes (its `timeLeft`).
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "1")]
    go_away_lead: Duration,
    /// Close code at the age limit.
    #[arg(long, default_value_t = 1011, value_parser = parse_close_code)]
    age_close_code: u16,
    /// Close reason at the age limit.
    #[arg(long, default_value = "Deadline expired.")]
    age_close_reason: String,
    /// How long resumption handles stay valid after their session's connection ended.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    handle_ttl: Option<Duration>,
    /// Record the client messages each session consumes (for tests and benchmarks).
    #[arg(long)]
    record_consumed: bool,
    /// Answer pings this many seconds late (Google's pongs take 8–30 s).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pong_delay: Option<Duration>,
    /// Append every emitted usageMetadata as a JSON line to this file.
    #[arg(long, value_name = "PATH")]
    record_file: Option<PathBuf>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{e}"))
}

fn parse_close_code(s: &str) -> Result<u16, String> {
    let code: u16 = s.trim().parse().map_err(|e| format!("{e}"))?;
    // 1004-1006 and 1015 are reserved and must never be sent in a close frame.
    if (1000..=4999).contains(&code) && !matches!(code, 1004..=1006 | 1015) {
        Ok(code)
    } else {
        Err(format!("{code} cannot be sent in a close frame"))
    }
}

impl Args {
    fn config(&self) -> anyhow::Result<EmulatorConfig> {
        let service_account_keys = self
            .service_account_keys
            .iter()
            .map(|spec| ServiceAccountKey::from_cli_spec(spec))
            .collect::<Result<Vec<_>, _>>()?;
        let config = EmulatorConfig {
            tokens: self.tokens.clone(),
            service_account_keys,
            developer_api_keys: self.developer_api_keys.clone(),
            behaviour: Behaviour {
                go_away_after: self.go_away_after,
                close_after: self
                    .close_after
                    .map(|d| (d, self.close_code, self.close_reason.clone())),
                response_delay: Duration::from_millis(self.response_delay_ms),
                frame_interval: Duration::from_millis(self.frame_interval_ms),
                usage_names: self.usage_names,
                text_frames: self.text_frames,
                connection_age: self.max_connection_age.map(|limit| ConnectionAge {
                    code: self.age_close_code,
                    reason: self.age_close_reason.clone(),
                    ..ConnectionAge::new(limit, self.go_away_lead)
                }),
                handle_ttl: self.handle_ttl,
                record_consumed: self.record_consumed,
                pong_delay: self.pong_delay.unwrap_or_default(),
                setup_delay: Duration::ZERO,
            },
        };
        config.validate()?;
        Ok(config)
    }
}

/// `EX_USAGE` from sysexits.h: bad configuration.
const EX_USAGE: i32 = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    livegate_common::telemetry::init(&livegate_common::env::ProcessEnv);
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error.message = %e, error.cause_chain = ?e, "bad configuration");
            std::process::exit(EX_USAGE);
        }
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let emulator = Emulator::start(listener, config).await;
    if let Some(path) = &args.record_file {
        emulator
            .record_to_file(path)
            .with_context(|| format!("opening record file {}", path.display()))?;
    }
    tracing::info!(addr = %emulator.addr(), url = %emulator.url(), "emulator listening");
    {
        #[expect(
            clippy::print_stdout,
            reason = "the listening line is the contract with scripts that start the emulator"
        )]
        let () = println!("listening on {}", emulator.addr());
        std::io::stdout().flush().context("flushing stdout")?;
    }
    livegate_common::shutdown::signal().await;
    emulator.shutdown().await;
    Ok(())
}
