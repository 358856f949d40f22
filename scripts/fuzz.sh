#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ (the setup rewrite, the usage-frame inspector, the
# request/credential parsers) for a bounded time and prints, per target, how many inputs it
# executed and any crash file. Exits non-zero if a target crashed.
#
#   scripts/fuzz.sh [seconds-per-target]        default 60
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On stable Rust it sets
# RUSTC_BOOTSTRAP=1 for the -Z flags cargo-fuzz passes. Environment:
#   FUZZ_TARGETS     targets to run, in order      "setup_rewrite inspect_frames request_credential"
#   FUZZ_SANITIZER   cargo-fuzz sanitizer          none (the code is safe Rust; address also works)
#   CARGO_TARGET_DIR builds go to $CARGO_TARGET_DIR/fuzz (default fuzz/target)
#
# libFuzzer starts from the committed seeds (fuzz/corpus/<target>, never written to) and a
# working corpus kept between runs in the build dir. A crash input is written to
# fuzz/artifacts/<target>/; turn it into a regression by copying it to
# fuzz/regressions/<target>/ (replayed by `cargo test`, services/gateway/tests/it/fuzz_corpus.rs)
# before fixing its cause.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
case $seconds in '' | *[!0-9]*) echo "usage: $0 [seconds-per-target]" >&2; exit 2 ;; esac
read -r -a targets <<<"${FUZZ_TARGETS:-setup_rewrite inspect_frames request_credential}"
sanitizer=${FUZZ_SANITIZER:-none}
build_dir=${CARGO_TARGET_DIR:-$root/fuzz/target}
build_dir=${build_dir%/}
[[ $build_dir == */fuzz ]] || build_dir=$build_dir/fuzz
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

cd "$root/fuzz"
cargo fuzz build -s "$sanitizer" --target-dir "$build_dir"

failed=0
for t in "${targets[@]}"; do
  work="$build_dir/corpus/$t"
  artifacts="$root/fuzz/artifacts/$t/"
  log="$build_dir/$t.log"
  mkdir -p "$work" "$artifacts"
  set +e
  cargo fuzz run -s "$sanitizer" --target-dir "$build_dir" "$t" "$work" "$root/fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
  crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  printf '%-20s %10s executions in %ss, corpus %s inputs' "$t" "${runs:-?}" "$seconds" "$(ls -A "$work" | wc -l)"
  if [ "$rc" -ne 0 ] || [ -n "$crash" ]; then
    failed=1
    printf ', CRASH (exit %s): %s\n' "$rc" "${crash:-see $log}"
    grep -m 5 -E "panicked at|^thread '|: (setup_rewrite|inspect_frames|request_credential): " "$log" | sed 's/^/    /' || true
  else
    printf ', no crash\n'
  fi
done
exit "$failed"
