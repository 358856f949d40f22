//! Supervised server processes, and [`run_bounded`] for commands that must finish.
//!
//! Each server runs under a tiny `sh` wrapper whose stdin is a pipe held only by this
//! process. The wrapper blocks reading that pipe; when it sees end-of-file it kills the server
//! with SIGKILL, reaps it and exits. The pipe closes when we call [`Supervised::stop`], when
//! the handle is dropped, and also when the test binary itself dies for any reason (panic,
//! abort, SIGKILL from a CI timeout), so no server ever outlives the tests that started it.
//! This needs no `unsafe` (no `prctl`, no `kill(2)`) and no tokio runtime: a shared server can
//! live in a `static` that outlives every test's runtime.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a killed server may take to be reaped before we give up waiting.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The wrapper. `$@` is the server command line. Its output goes to `$LIVEGATE_LOG`, never to
/// the wrapper's stdout: that pipe only carries the pid and is closed early, so a server that
/// inherited it would die of SIGPIPE on its first write.
const WRAPPER: &str = r#"
"$@" </dev/null >>"$LIVEGATE_LOG" 2>&1 &
pid=$!
echo "$pid"
while read -r line; do :; done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
if [ -n "$LIVEGATE_CLEANUP" ]; then rm -rf "$LIVEGATE_CLEANUP"; fi
exit 0
"#;

/// A server process that dies with its handle (see the module docs).
#[derive(Debug)]
pub(crate) struct Supervised {
    name: String,
    /// The `sh` wrapper; the server is its only child.
    wrapper: Child,
    /// Our end of the wrapper's stdin: closing it kills the server.
    stdin: Option<ChildStdin>,
    pid: u32,
    log: PathBuf,
}

impl Supervised {
    /// Starts `program args…` in `cwd`, appending its stdout and stderr to `log`. When
    /// `cleanup` is given, the wrapper deletes that directory after the server is dead (for
    /// servers whose handle is never dropped, e.g. one kept in a `static`).
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: &[OsString],
        cwd: &Path,
        log: &Path,
        cleanup: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let wrapper_log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("sh")
            .arg(program)
            .args(args)
            .current_dir(cwd)
            .env("LIVEGATE_LOG", log)
            .env(
                "LIVEGATE_CLEANUP",
                cleanup.map(Path::as_os_str).unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(wrapper_log));
        let mut wrapper = cmd
            .spawn()
            .with_context(|| format!("spawning sh to run {}", program.display()))?;
        let stdin = wrapper.stdin.take();
        let pid = match read_pid(&mut wrapper) {
            Ok(pid) => pid,
            Err(e) => {
                drop(stdin);
                let _ = wrapper.kill();
                let _ = wrapper.wait();
                return Err(e.context(format!("starting {name} ({})", program.display())));
            }
        };
        Ok(Self {
            name: name.to_owned(),
            wrapper,
            stdin,
            pid,
            log: log.to_owned(),
        })
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the server is still alive (a zombie counts as dead).
    pub(crate) fn is_running(&mut self) -> bool {
        if !matches!(self.wrapper.try_wait(), Ok(None)) {
            return false;
        }
        if !Path::new("/proc/self").exists() {
            // No procfs: we cannot tell, so report alive and let the caller's timeout decide.
            return true;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // Format: `pid (comm) S …`; comm may contain anything, so split at the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| state != 'Z' && state != 'X'),
            Err(_) => false,
        }
    }

    /// Kills the server and waits (bounded) until it has been reaped, so its ports and files
    /// are free when this returns.
    ///
    /// # Errors
    /// If the wrapper does not exit within 20 s.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        loop {
            match self.wrapper.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(None) => bail!(
                    "{} (pid {}) did not stop within {STOP_TIMEOUT:?}",
                    self.name,
                    self.pid
                ),
                Err(e) => return Err(e).context("waiting for the server wrapper"),
            }
        }
    }

    /// The last lines of the server's output, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        tail(&self.log, 40)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // The wrapper kills and reaps the server at once, so this blocks for milliseconds.
        let _ = self.wrapper.wait();
    }
}

fn read_pid(wrapper: &mut Child) -> anyhow::Result<u32> {
    let stdout = wrapper.stdout.take().context("wrapper stdout not piped")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the server pid from the wrapper")?;
    line.trim()
        .parse()
        .with_context(|| format!("wrapper printed {line:?} instead of a pid"))
}

/// The last `lines` lines of a text file (empty if it cannot be read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(file) = File::open(path) else {
        return String::new();
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// TCP ports the process `pid` is listening on, from procfs (Linux only; empty elsewhere).
pub(crate) fn listening_ports(pid: u32) -> Vec<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: Vec<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            if *state != "0A" || !inodes.iter().any(|i| i == inode) {
                continue;
            }
            let port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let Some(port) = port.filter(|p| !ports.contains(p)) {
                ports.push(port);
            }
        }
    }
    ports
}

/// Runs `cmd` with stdin closed and stdout + stderr captured (through a file, so a chatty
/// child never blocks on a full pipe), killing it after `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> anyhow::Result<(ExitStatus, String)> {
    let mut log = tempfile::tempfile().context("temp file for the output")?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?);
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = String::new();
    log.rewind()?;
    log.read_to_string(&mut output)?;
    Ok((status, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_output_and_enforces_the_timeout() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let (status, output) = run_bounded(cmd, Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(output.contains("out") && output.contains("err"), "{output}");
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let started = Instant::now();
        let e = run_bounded(cmd, Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
