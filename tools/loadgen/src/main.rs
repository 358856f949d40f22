//! `livegate-loadgen`: parses arguments, raises the open-files limit, builds a runtime with
//! the requested number of threads and runs [`livegate_loadgen::main_with`].

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = livegate_loadgen::Cli::parse();
    livegate_common::telemetry::init(&livegate_common::env::ProcessEnv);
    livegate_loadgen::raise_nofile_limit(cli.command.sockets());
    let threads = cli.command.threads();
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(livegate_loadgen::main_with(cli, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
