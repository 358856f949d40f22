//! `livegate-metering`: parses configuration, sets up logging, binds, and calls [`livegate_metering::run`].

use clap::Parser;
use livegate_common::{config::FileConfig, service};
use std::{io::Write as _, path::PathBuf, process::ExitCode};

/// livegate's metering service.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// YAML config file (LiteLLM keys accepted); also `LIVEGATE_CONFIG`.
    #[arg(long)]
    config: Option<PathBuf>,

    /// Print the ClickHouse schema (every migration statement, in order, each followed by `;`
    /// and a blank line) and exit, without reading the configuration or connecting anywhere.
    #[arg(long)]
    print_schema: bool,

    /// The database `--print-schema` renders the statements for.
    #[arg(
        long,
        value_name = "NAME",
        requires = "print_schema",
        default_value = livegate_metering::config::DEFAULT_CLICKHOUSE_DATABASE
    )]
    database: String,

    /// With `--print-schema`: render the statements for this ClickHouse cluster, as metering
    /// runs them with `CLICKHOUSE_CLUSTER` set.
    #[arg(long, value_name = "NAME", requires = "print_schema")]
    cluster: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_schema {
        return print_schema(&args.database, args.cluster.as_deref());
    }
    // With the whole workspace built, rustls has two providers compiled in and cannot pick
    // one itself (a `tls://` NATS URL would panic): pick ring explicitly, as every binary does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Boxed: the whole service's future is large, and main's stack should not hold it.
    Box::pin(service::main(
        "livegate-metering",
        |env| {
            FileConfig::discover(args.config.as_deref(), env)
                .map_err(livegate_metering::config::Error::from)
                .and_then(|file| livegate_metering::Config::load(&file, env))
        },
        |config| config.listen,
        livegate_metering::run,
    ))
    .await
}

/// `--print-schema`: the schema script on stdout; `EX_USAGE` for an invalid database name.
fn print_schema(database: &str, cluster: Option<&str>) -> ExitCode {
    let script = match livegate_metering::schema_script_for(database, cluster) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("livegate-metering: {e}");
            return ExitCode::from(service::EX_USAGE);
        }
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(script.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livegate-metering: writing the schema: {e}");
            ExitCode::FAILURE
        }
    }
}
