//! `livegate-demo-credentials --out DIR`: writes a throw-away Google service-account key file
//! for demo mode and prints its path. `scripts/start.sh` hands the file to auth (as
//! `GOOGLE_APPLICATION_CREDENTIALS`) and to the emulator (`--service-account-key`), so demo
//! sessions mint real self-signed JWTs through google-cloud-auth that the emulator verifies.
//! It never grants access to anything real. The key is made by [`ServiceAccount::generate`].

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use livegate_demo_credentials::ServiceAccount;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let out = match (args.next().as_deref(), args.next()) {
        (Some("--out"), Some(dir)) => PathBuf::from(dir),
        _ => {
            eprintln!("usage: livegate-demo-credentials --out DIR");
            return ExitCode::from(64);
        }
    };
    let result = std::fs::create_dir_all(&out)
        .map_err(anyhow::Error::from)
        .and_then(|()| ServiceAccount::generate(&out).map_err(anyhow::Error::from));
    match result {
        Ok(sa) => {
            let mut stdout = std::io::stdout();
            let _ = writeln!(stdout, "{}", sa.path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write demo credentials: {e:#}");
            ExitCode::FAILURE
        }
    }
}
