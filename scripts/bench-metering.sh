#!/usr/bin/env bash
# Metering throughput benchmark (issue 5): events/s sustained from NATS JetStream into
# ClickHouse and publish-to-row lag. Target on the 2-core dev machine: >= 20,000 events/s and
# p99 lag < 2 s.
#
# Starts its own stack in a temp dir, each process on a free loopback port: nats-server
# (JetStream, temp store), clickhouse-server (generated config, temp data dir) and
# livegate-metering; then `livegate-loadgen events` publishes UsageReports (as the gateway
# does: subject livegate.usage.v1.report, Nats-Msg-Id = event id, pipelined acks) and polls
# `SELECT count() FROM livegate.usage_events` until every row is there. Everything is stopped
# on exit. Release builds.
#
# Sizes (environment):
#   BENCH_EVENTS           events published                            200000
#   BENCH_RATE             events/s (0 = as fast as possible)          0
#   BENCH_SESSIONS         sessions the events are spread over         1000
#   BENCH_WINDOW           publish acks outstanding                    2048
#   BENCH_POLL             ClickHouse count poll interval              50ms
#   BENCH_TIMEOUT          bound on the run                            300s
#   METERING_BATCH_SIZE, METERING_FLUSH_INTERVAL, METERING_MAX_ACK_PENDING, LIVEGATE_LOG:
#                          passed to livegate-metering when set
#   BENCH_OUT              keep the report and logs in this directory (default: temp, removed)
#   BENCH_SKIP_BUILD=1     use the release binaries already built
#   BENCH_METERING_BIN     metering binary to measure (e.g. an experimental build)  the release build
#
# The table goes to stdout; progress to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

BENCH_EVENTS=${BENCH_EVENTS:-200000}
BENCH_RATE=${BENCH_RATE:-0}
BENCH_SESSIONS=${BENCH_SESSIONS:-1000}
BENCH_WINDOW=${BENCH_WINDOW:-2048}
BENCH_POLL=${BENCH_POLL:-50ms}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300s}

say() { printf '[bench-metering] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

scripts/install-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/livegate-target}"
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
  say "using the release binaries in $CARGO_TARGET_DIR/release (BENCH_SKIP_BUILD=1)"
else
  say "building release binaries…"
  cargo build --release --locked -p livegate-metering -p livegate-loadgen
fi
bin="$CARGO_TARGET_DIR/release"
for b in livegate-metering livegate-loadgen; do [ -x "$bin/$b" ] || die "no $b in $bin"; done

bench_workdir livegate-bench-metering
rm -rf "$work/nats" "$work/clickhouse"
mkdir -p "$work/logs" "$work/nats" "$work/clickhouse"/{data,tmp,user_files,format_schemas,log}

trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export NO_COLOR=1

# --- NATS (JetStream) ---
nats_bin=$(find_nats_server) || die "nats-server not found (scripts/install-deps.sh installs it)"
start nats "$nats_bin" -js -sd "$work/nats" -a 127.0.0.1 -p -1 -n livegate-bench-metering
nats_pid=$last_pid
nats_addr=$(wait_listen nats "$nats_pid" 20)

# --- ClickHouse ---
ch_bin=$(find_clickhouse_server) || die "clickhouse-server not found (scripts/install-deps.sh installs it)"
ch="$work/clickhouse"
ch_http=$(free_port)
ch_tcp=$(free_port)
while [ "$ch_tcp" = "$ch_http" ]; do ch_tcp=$(free_port); done
write_clickhouse_config "$ch" "$ch_http" "$ch_tcp"
start clickhouse "$ch_bin" --config-file="$ch/config.xml"
ch_pid=$last_pid
ch_url="http://127.0.0.1:$ch_http"
for ((i = 0; ; i++)); do
  [ "$(curl -fsS --max-time 2 "$ch_url/ping" 2>/dev/null || true)" = Ok. ] && break
  kill -0 "$ch_pid" 2>/dev/null || { tail -n 20 "$work/logs/clickhouse.log" "$ch/log/server.err.log" >&2 || true; die "clickhouse-server exited during start-up"; }
  [ "$i" -lt 600 ] || die "clickhouse-server not answering /ping within 60 s"
  sleep 0.1
done

# --- metering ---
m_env=(NATS_URL="nats://$nats_addr" CLICKHOUSE_URL="$ch_url" CLICKHOUSE_DATABASE=livegate
  METERING_LISTEN=127.0.0.1:0 LIVEGATE_LOG="${LIVEGATE_LOG:-info}")
for v in METERING_BATCH_SIZE METERING_FLUSH_INTERVAL METERING_MAX_ACK_PENDING METERING_ACK_WAIT; do
  [ -z "${!v:-}" ] || m_env+=("$v=${!v}")
done
start metering env "${m_env[@]}" "${BENCH_METERING_BIN:-$bin/livegate-metering}"
m_pid=$last_pid
wait_log metering "$m_pid" 60 'consuming usage events' >/dev/null
m_addr=$(grep -aoE 'listening on 127\.0\.0\.1:[0-9]+' "$work/logs/metering.log" | head -n 1 | grep -oE '127\.0\.0\.1:[0-9]+' || true)
say "stack up: nats $nats_addr (pid $nats_pid), clickhouse $ch_url (pid $ch_pid), metering ${m_addr:-?} (pid $m_pid)$(
  for v in METERING_BATCH_SIZE METERING_FLUSH_INTERVAL METERING_MAX_ACK_PENDING; do [ -z "${!v:-}" ] || printf ', %s=%s' "$v" "${!v}"; done)"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
say "run: $BENCH_EVENTS events, rate $BENCH_RATE, $BENCH_SESSIONS sessions"
report=$("$bin/livegate-loadgen" events --nats "nats://$nats_addr" --clickhouse-url "$ch_url" \
  --database livegate --count "$BENCH_EVENTS" --rate "$BENCH_RATE" --sessions "$BENCH_SESSIONS" \
  --window "$BENCH_WINDOW" --poll-interval "$BENCH_POLL" --timeout "$BENCH_TIMEOUT" \
  --pid "metering=$m_pid" --pid "nats=$nats_pid" --pid "clickhouse=$ch_pid" \
  --label metering --json-out "$work/events.json") || {
  tail -n 20 "$work/logs/metering.log" >&2
  die "the events run failed"
}

cat <<HEADER

livegate metering bench — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores, $(uname -r), clickhouse $(curl -fsS --max-time 2 "$ch_url/?query=SELECT%20version()" 2>/dev/null || echo '?')
metering env: batch ${METERING_BATCH_SIZE:-default(5000)}, flush ${METERING_FLUSH_INTERVAL:-default(500ms)}, max ack pending ${METERING_MAX_ACK_PENDING:-default(20000)}
load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)
target (issue 5): >= 20000 events/s sustained, p99 publish-to-row lag < 2 s

HEADER
printf '%s\n' "$report"
