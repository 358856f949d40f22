//! The `livegate` admin CLI. Subcommands arrive with the services they drive: `keys` and
//! `token` with auth, `spend` with metering, `doctor` with deployment.

use clap::{Parser, Subcommand};

/// livegate's admin command line.
#[derive(Debug, Parser)]
#[command(name = "livegate", version, about)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version of every livegate component this CLI was built with.
    Version,
}

/// Runs one CLI command.
///
/// # Errors
/// Any failure, as one line for the user.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Version => {
            #[allow(clippy::print_stdout)]
            {
                println!("livegate {}", env!("CARGO_PKG_VERSION"));
            }
            Ok(())
        }
    }
}
