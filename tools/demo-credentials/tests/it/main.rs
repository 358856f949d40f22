//! The `livegate-demo-credentials` binary as `scripts/start.sh` runs it: `--out DIR` makes the
//! directory, writes one key file there and prints its path; anything else is a usage error.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_livegate-demo-credentials");

#[test]
fn out_writes_a_key_file_and_prints_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("made/by/it");
    let run = Command::new(BIN).arg("--out").arg(&out).output().unwrap();
    assert!(run.status.success(), "{run:?}");

    let printed = String::from_utf8(run.stdout).unwrap();
    let path = std::path::PathBuf::from(printed.trim_end());
    assert_eq!(path.parent(), Some(out.as_path()));
    let key: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(key["type"], "service_account");
    assert_eq!(key["project_id"], livegate_demo_credentials::PROJECT_ID);
}

#[test]
fn without_out_it_prints_usage_and_exits_64() {
    let run = Command::new(BIN).output().unwrap();
    assert_eq!(run.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&run.stderr).contains("usage: livegate-demo-credentials"));
}
