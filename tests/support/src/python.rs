//! Python virtualenvs for the tests that run Python: one shared venv (the client SDK
//! examples, chdb) and named ones for packages pinned at another version (the google-genai
//! SDK matrix: the newest release and the oldest supported).
//!
//! [`venv`] returns the shared venv's interpreter, creating the venv at
//! `$HOME/.cache/livegate-py` with `python3 -m venv` when it is missing, and running
//! `pip install -q` only when one of the packages asked for does not import or is installed at
//! a version outside its requirement. A warm call costs a few imports, not a pip run.
//! [`named_venv`] does the same for `$HOME/.cache/livegate-py-{name}`.
//!
//! Callers are serialised: within a process by a mutex, across processes (two test binaries,
//! two `cargo test` runs) by a lock file beside the venvs, `livegate-py.lock`, created with
//! `create_new` and holding its owner's pid. A lock whose owner is gone (a test binary killed
//! mid-install) is taken over; waiting for a live one is bounded by [`LOCK_TIMEOUT`]. Every
//! subprocess is bounded too ([`PIP_TIMEOUT`]), and killed when it overruns.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::process::run_bounded;
use anyhow::{Context, bail};

/// Longest wait for another process's install to finish.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Longest `python3 -m venv` or `pip install` may take.
pub const PIP_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Longest the import check may take (chdb, pandas and google-genai import in about a second).
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Serialises the callers of this process (the lock file only keeps other processes out).
static IN_PROCESS: Mutex<()> = Mutex::new(());

/// Imports each module and checks each requirement against the installed distribution (with
/// pip's own `packaging`); prints what is missing and exits 1 when anything is.
/// Arguments: requirement, module, requirement, module, …
const CHECK: &str = r#"
import importlib, importlib.metadata, sys
args = sys.argv[1:]
missing = []
for req, mod in zip(args[0::2], args[1::2]):
    try:
        importlib.import_module(mod)
    except Exception as e:
        missing.append(f"{req}: import {mod} failed: {e!r}")
        continue
    try:
        from pip._vendor.packaging.requirements import Requirement
        r = Requirement(req)
        have = importlib.metadata.version(r.name)
        if not r.specifier.contains(have, prereleases=True):
            missing.append(f"{req}: {r.name} {have} installed")
    except Exception as e:
        missing.append(f"{req}: cannot check the version: {e!r}")
for m in missing:
    print(m)
sys.exit(1 if missing else 0)
"#;

/// The venv's directory: `$HOME/.cache/livegate-py` (`/tmp/.cache/livegate-py` without `HOME`).
pub fn venv_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/livegate-py")
}

/// The interpreter of the shared venv (see the module docs), with every package of
/// `packages` installed. Each package is `(pip requirement, module to import)`, e.g.
/// `("google-genai>=1.30,<4", "google.genai")`. Blocking: call it from
/// `tokio::task::spawn_blocking` in async tests.
///
/// # Errors
/// When `python3 -m venv` or `pip install` fails or overruns [`PIP_TIMEOUT`] (the message
/// carries pip's output), when a package still does not import after the install, or when
/// another process holds the lock longer than [`LOCK_TIMEOUT`].
pub fn venv(packages: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    venv_at(&venv_dir(), packages)
}

/// Like [`venv`], for the venv `$HOME/.cache/livegate-py-{name}` (`name`: letters, digits,
/// `.`, `-`, `_`), so that a package can be tested at two versions side by side.
///
/// # Errors
/// As [`venv`]; also when `name` is not a plain file name.
pub fn named_venv(name: &str, packages: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        bail!("venv name {name:?} is not a plain file name");
    }
    venv_at(
        &venv_dir().with_file_name(format!("livegate-py-{name}")),
        packages,
    )
}

fn venv_at(dir: &Path, packages: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    let dir = dir.to_path_buf();
    let python = dir.join("bin/python");
    let _in_process = IN_PROCESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lock_path = venv_dir().with_file_name("livegate-py.lock");
    let _lock = LockFile::acquire(&lock_path, LOCK_TIMEOUT)?;

    if !python.exists() {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut cmd = Command::new("python3");
        cmd.arg("-m").arg("venv").arg(&dir);
        let (status, output) = run_bounded(cmd, PIP_TIMEOUT)
            .with_context(|| format!("python3 -m venv {}", dir.display()))?;
        if !status.success() || !python.exists() {
            bail!(
                "python3 -m venv {} failed ({status}): {output}",
                dir.display()
            );
        }
    }
    if packages.is_empty() {
        return Ok(python);
    }
    let missing = match check(&python, packages)? {
        None => return Ok(python),
        Some(missing) => missing,
    };
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(packages.iter().map(|(requirement, _)| requirement));
    let (status, output) = run_bounded(cmd, PIP_TIMEOUT).context("pip install")?;
    if !status.success() {
        bail!(
            "pip install {} failed ({status}) in {}: {output}",
            requirements(packages),
            dir.display()
        );
    }
    if let Some(still) = check(&python, packages)? {
        bail!(
            "after pip install {} (needed because: {}), still missing: {still}",
            requirements(packages),
            missing.trim()
        );
    }
    Ok(python)
}

fn requirements(packages: &[(&str, &str)]) -> String {
    packages
        .iter()
        .map(|(r, _)| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `None` when every package imports at a version its requirement allows; else what is not.
fn check(python: &Path, packages: &[(&str, &str)]) -> anyhow::Result<Option<String>> {
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(CHECK);
    for (requirement, module) in packages {
        cmd.arg(requirement).arg(module);
    }
    let (status, output) =
        run_bounded(cmd, CHECK_TIMEOUT).context("checking the venv's packages")?;
    Ok((!status.success()).then_some(output))
}

/// A lock file created with `create_new`, holding the owner's pid; removed on drop. (The
/// Node package cache, `crate::node`, takes one too.)
#[derive(Debug)]
pub(crate) struct LockFile {
    path: PathBuf,
}

impl LockFile {
    /// Takes the lock at `path`, waiting at most `timeout` for a live owner to let go.
    pub(crate) fn acquire(path: &Path, timeout: Duration) -> anyhow::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let me = std::process::id();
        let deadline = Instant::now() + timeout;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    writeln!(f, "{me}").with_context(|| format!("writing {}", path.display()))?;
                    return Ok(Self {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
            if let Some(owner) = stale_owner(path) {
                // Its owner died without removing it (killed mid-install): take it over.
                let _ = std::fs::remove_file(path);
                tracing::warn!(lock = %path.display(), owner, "removed a stale venv lock");
                continue;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} is still held by another process after {timeout:?} (pid {}); if no \
                     test is running, delete it",
                    path.display(),
                    std::fs::read_to_string(path).unwrap_or_default().trim()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The pid in the lock file when that process no longer exists. A file without a pid yet
/// (just created, not written) is not stale unless it stays so for a few seconds.
fn stale_owner(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    match text.trim().parse::<u32>() {
        Ok(pid) => (!Path::new(&format!("/proc/{pid}")).exists()).then_some(pid),
        Err(_) => {
            let age = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()?
                .elapsed()
                .ok()?;
            (age > Duration::from_secs(10)).then_some(0)
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_excludes_and_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = LockFile::acquire(&path, Duration::from_secs(1)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        // We are alive, so the lock is not stale: a second taker times out.
        let e = LockFile::acquire(&path, Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("still held"), "{e}");
        drop(held);
        assert!(!path.exists());
        drop(LockFile::acquire(&path, Duration::from_secs(1)).unwrap());
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        // A pid that exited: a finished child's.
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        std::fs::write(&path, format!("{pid}\n")).unwrap();
        let held = LockFile::acquire(&path, Duration::from_secs(2)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(held);
    }
}
