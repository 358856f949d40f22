#!/usr/bin/env bash
# Runs every livegate test: installs NATS and ClickHouse if missing, builds all binaries (the
# whole-system tests start them as processes), then runs the workspace's tests. The tests
# start their own nats-server and clickhouse-server on ephemeral loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# Keep the build cache outside the clone so repeated runs (and CI on the same machine) do not
# rebuild from scratch; a cold build of this stack takes about 8 minutes on 2 cores.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/livegate-target}"
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
