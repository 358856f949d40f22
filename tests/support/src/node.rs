//! The Node packages the tests drive (playwright-core, the JS Live SDK), installed from a
//! package directory's `package.json` and `package-lock.json` into a cache,
//! `$HOME/.cache/livegate-node`, with `npm ci` — only when the lockfile differs from the one
//! installed last, so a warm call reads two files.
//!
//! Node scripts find the packages through `LIVEGATE_NODE_MODULES` (the returned directory).
//! Installs are serialised like the Python venvs' (a mutex in the process, a lock file
//! beside the cache, `livegate-node.lock`, across processes), and `npm ci` is bounded by
//! [`NPM_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::process::run_bounded;
use crate::python::LockFile;
use anyhow::{Context, bail};

/// Longest `npm ci` may take.
pub const NPM_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Longest wait for another process's install to finish.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The files of a package directory that define the install.
const PACKAGE_FILES: [&str; 3] = ["package.json", "package-lock.json", ".npmrc"];

static IN_PROCESS: Mutex<()> = Mutex::new(());

/// The cache directory: `$HOME/.cache/livegate-node` (`/tmp/.cache/…` without `HOME`).
pub fn cache_dir() -> PathBuf {
    crate::python::venv_dir().with_file_name("livegate-node")
}

/// Whether `node` and `npm` run here.
pub fn available() -> bool {
    ["node", "npm"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The `node_modules` directory holding `package_dir`'s locked packages (see the module docs).
/// Blocking: call it from `tokio::task::spawn_blocking` in async tests.
///
/// # Errors
/// When a package file cannot be read or copied, `npm ci` fails or overruns
/// [`NPM_TIMEOUT`] (the message carries npm's output), or another process holds the lock
/// longer than [`LOCK_TIMEOUT`].
pub fn modules(package_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache_dir();
    let modules = dir.join("node_modules");
    let _in_process = IN_PROCESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _lock = LockFile::acquire(&dir.with_file_name("livegate-node.lock"), LOCK_TIMEOUT)?;
    let lock = std::fs::read(package_dir.join("package-lock.json"))
        .with_context(|| format!("reading {}/package-lock.json", package_dir.display()))?;
    let stamp = dir.join(".installed-lock.json");
    if modules.is_dir() && std::fs::read(&stamp).is_ok_and(|s| s == lock) {
        return Ok(modules);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(&stamp);
    for name in PACKAGE_FILES {
        let from = package_dir.join(name);
        if from.exists() {
            std::fs::copy(&from, dir.join(name))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    // Install scripts are not needed (nothing here builds native code) and stay off, so no
    // package can fetch anything at install time (playwright-core never downloads browsers).
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(&dir);
    let (status, output) = run_bounded(cmd, NPM_TIMEOUT).context("npm ci")?;
    if !status.success() {
        bail!("npm ci failed ({status}) in {}: {output}", dir.display());
    }
    std::fs::write(&stamp, &lock).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(modules)
}
