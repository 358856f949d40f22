//! A livegate binary (as `cargo build --workspace --bins` builds it) run as its own process,
//! for tests that need a real process: to read everything it logs, or to kill or freeze it.

use livegate_test_support::workspace::workspace_bin;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A service binary whose stdout and stderr both go to one file; killed when dropped.
pub struct Binary {
    name: &'static str,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Binary {
    /// Starts `name` with `args`, a clean environment (PATH, HOME = `dir`, text logs, no
    /// gcloud config) plus `env`, its output in `dir/<name>.log`.
    pub fn spawn(name: &'static str, dir: &Path, args: &[&str], env: &[(&str, String)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = tokio::process::Command::new(workspace_bin(name).unwrap());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("LIVEGATE_LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .env("CLOUDSDK_CONFIG", dir.join("no-gcloud"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            name,
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    /// The binary's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The address after "listening on " in the output (bounded wait).
    pub async fn addr(&mut self) -> String {
        for _ in 0..300 {
            if let Some(rest) = self.output().split("listening on ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.output());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{} did not listen within 30 s:\n{}",
            self.name,
            self.output()
        );
    }

    /// Sends `sig` (as `kill` spells it: `-KILL`, `-STOP`, …).
    pub async fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = tokio::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill {sig} {}", self.name);
    }

    /// Waits for the process to exit (after a signal that ends it).
    pub async fn wait(&mut self) {
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then wait (bounded) for the exit, so the shutdown lines are in the log too.
    pub async fn stop(&mut self) {
        self.signal("-TERM").await;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop on SIGTERM", self.name))
            .unwrap();
    }
}
