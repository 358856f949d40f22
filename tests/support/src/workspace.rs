//! The workspace's own binaries, as built into this build's target directory.
//!
//! A test can use `env!("CARGO_BIN_EXE_…")` only for binaries of its own package; tests of
//! other packages (the whole-system and deployment tests) run the binaries that
//! `scripts/test.sh` builds first (`cargo build --workspace --bins`) into the same target
//! directory as the test executable: `target/<profile>/`, the parent of the test's `deps/`.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// The directory holding this build's binaries (`$CARGO_TARGET_DIR/debug` for a debug test).
///
/// # Errors
/// When the test executable's path cannot be read.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("the test executable's path")?;
    // target/<profile>/deps/<test>-<hash>
    let deps = exe.parent().context("the test executable's directory")?;
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

/// The path of the workspace binary `name` (e.g. `livegate-metering`) in [`bin_dir`].
///
/// # Errors
/// When it has not been built; the message says how to build it.
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let dir = bin_dir()?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{name} is not built in {}: run scripts/test.sh (it builds every binary before the \
             tests) or `cargo build --workspace --bins` with the same CARGO_TARGET_DIR",
            dir.display()
        );
    }
    Ok(path)
}
