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
#   BENCH_CLUSTER=1        ClickHouse as a 2-replica cluster `livegate` (Debian's ZooKeeper,
#                          replica r1 beside r0) and metering in cluster mode
#                          (CLICKHOUSE_CLUSTER=livegate, writes through Distributed on r0)    0
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
BENCH_CLUSTER=${BENCH_CLUSTER:-0}

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
# --- BENCH_CLUSTER=1: a ZooKeeper, and both replicas' cluster config (r1 starts below) ---
cluster_config() { # REPLICA INTERSERVER_PORT DIR
  sed -i "s#</yandex>#<interserver_http_host>127.0.0.1</interserver_http_host><interserver_http_port>$2</interserver_http_port><zookeeper><node><host>127.0.0.1</host><port>$zk_port</port></node></zookeeper><macros><shard>01</shard><replica>$1</replica></macros><remote_servers><livegate><shard><internal_replication>true</internal_replication><replica><host>127.0.0.1</host><port>$ch_tcp</port></replica><replica><host>127.0.0.1</host><port>$r1_tcp</port></replica></shard></livegate></remote_servers><distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl></yandex>#" "$3/config.xml"
}
if [ "$BENCH_CLUSTER" = 1 ]; then
  zk_port=$(free_port); r1_http=$(free_port); r1_tcp=$(free_port)
  mkdir -p "$work/zookeeper/data"
  printf 'tickTime=500\ndataDir=%s\nclientPort=%s\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n' \
    "$work/zookeeper/data" "$zk_port" >"$work/zookeeper/zoo.cfg"
  start zookeeper java -Xmx256m -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar \
    org.apache.zookeeper.server.ZooKeeperServerMain "$work/zookeeper/zoo.cfg"
  for ((i = 0; ; i++)); do # serving once `srvr` reports a mode (ClickHouse 18.16 needs that)
    (exec 3<>"/dev/tcp/127.0.0.1/$zk_port" && printf srvr >&3 && grep -q 'Mode:' <&3) 2>/dev/null && break
    [ "$i" -lt 600 ] || die "zookeeper not serving within 60 s"
    sleep 0.1
  done
  cluster_config r0 "$(free_port)" "$ch"
fi
start clickhouse "$ch_bin" --config-file="$ch/config.xml"
ch_pid=$last_pid
ch_url="http://127.0.0.1:$ch_http"
for ((i = 0; ; i++)); do
  [ "$(curl -fsS --max-time 2 "$ch_url/ping" 2>/dev/null || true)" = Ok. ] && break
  kill -0 "$ch_pid" 2>/dev/null || { tail -n 20 "$work/logs/clickhouse.log" "$ch/log/server.err.log" >&2 || true; die "clickhouse-server exited during start-up"; }
  [ "$i" -lt 600 ] || die "clickhouse-server not answering /ping within 60 s"
  sleep 0.1
done

ch_pids=(--pid "clickhouse=$ch_pid")
if [ "$BENCH_CLUSTER" = 1 ]; then
  write_clickhouse_config "$work/clickhouse-r1" "$r1_http" "$r1_tcp"
  cluster_config r1 "$(free_port)" "$work/clickhouse-r1"
  start clickhouse-r1 "$ch_bin" --config-file="$work/clickhouse-r1/config.xml"
  ch_pids+=(--pid "clickhouse-r1=$last_pid")
  for ((i = 0; ; i++)); do
    [ "$(curl -fsS --max-time 2 "http://127.0.0.1:$r1_http/ping" 2>/dev/null || true)" = Ok. ] && break
    [ "$i" -lt 600 ] || die "clickhouse replica r1 not answering /ping within 60 s"
    sleep 0.1
  done
fi

# --- metering ---
m_env=(NATS_URL="nats://$nats_addr" CLICKHOUSE_URL="$ch_url" CLICKHOUSE_DATABASE=livegate
  METERING_LISTEN=127.0.0.1:0 LIVEGATE_LOG="${LIVEGATE_LOG:-info}")
[ "$BENCH_CLUSTER" = 1 ] && m_env+=(CLICKHOUSE_CLUSTER=livegate)
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
  --pid "metering=$m_pid" --pid "nats=$nats_pid" "${ch_pids[@]}" \
  --label metering --json-out "$work/events.json") || {
  tail -n 20 "$work/logs/metering.log" >&2
  die "the events run failed"
}

cat <<HEADER

livegate metering bench — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores, $(uname -r), clickhouse $(curl -fsS --max-time 2 "$ch_url/?query=SELECT%20version()" 2>/dev/null || echo '?')
clickhouse layout: $([ "$BENCH_CLUSTER" = 1 ] && echo "cluster livegate, 2 replicas (ZooKeeper), writes through Distributed on r0" || echo "one server")
metering env: batch ${METERING_BATCH_SIZE:-default(5000)}, flush ${METERING_FLUSH_INTERVAL:-default(500ms)}, max ack pending ${METERING_MAX_ACK_PENDING:-default(20000)}
load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)
target (issue 5): >= 20000 events/s sustained, p99 publish-to-row lag < 2 s

HEADER
printf '%s\n' "$report"
