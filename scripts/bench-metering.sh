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
#   METERING_BATCH_SIZE, METERING_FLUSH_INTERVAL, METERING_MAX_ACK_PENDING,
#   METERING_VERIFY_FIRST_DELIVERIES, LIVEGATE_LOG:
#                          passed to livegate-metering when set
#   BENCH_OUT              keep the report and logs in this directory (default: temp, removed)
#   BENCH_SKIP_BUILD=1     use the release binaries already built
#   BENCH_METERING_BIN     metering binary to measure (e.g. an experimental build)  the release build
#   BENCH_HISTORY_EVENTS   spend_daily rows of synthetic history seeded before metering   0
#                          starts (e.g. 50000000: a year of 10,000 keys' usage); metering's
#                          migrations then backfill spend_totals from it
#   BENCH_HISTORY_KEYS     keys the history is spread over (the run's 16 keys among them)  10000
#   BENCH_HISTORY_DAYS     days back the history covers (all before today)                365
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
BENCH_HISTORY_EVENTS=${BENCH_HISTORY_EVENTS:-0}
BENCH_HISTORY_KEYS=${BENCH_HISTORY_KEYS:-10000}
BENCH_HISTORY_DAYS=${BENCH_HISTORY_DAYS:-365}
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

ch_post() { curl -fsS --max-time 3600 "$ch_url/" --data-binary @-; }
# Seconds ClickHouse took for a query, from its own statistics (not the client's clock).
ch_elapsed() {
  printf '%s FORMAT JSON' "$1" | ch_post | sed -n 's/.*"elapsed": *\([0-9.e-]*\).*/\1/p'
}

# --- synthetic history (BENCH_HISTORY_EVENTS) ---
history_line="history: none"
if [ "$BENCH_HISTORY_EVENTS" -gt 0 ]; then
  say "seeding $BENCH_HISTORY_EVENTS spend_daily rows over $BENCH_HISTORY_KEYS keys and $BENCH_HISTORY_DAYS days…"
  # The schema as metering prints it (statements are separated by blank lines), so the rows
  # land in the real tables; metering's own start then runs the migrations (the spend_totals
  # backfill among them) over the history.
  "${BENCH_METERING_BIN:-$bin/livegate-metering}" --print-schema --database livegate |
    awk 'BEGIN { RS = ""; ORS = "\0" } { sub(/;[[:space:]]*$/, ""); print }' |
    while IFS= read -r -d '' stmt; do printf '%s' "$stmt" | ch_post >/dev/null; done
  # Key k belongs to team k % 4, as in the run (key s % 16, team s % 4).
  seed_started=$(date +%s.%N)
  ch_post >/dev/null <<SQL
INSERT INTO livegate.spend_daily (day, key_id, team_id, model, event_id, sessions, prompt_tokens,
  response_tokens, input_cost_usd, output_cost_usd, cost_usd)
SELECT toDate('$(date -u +%F)') - 1 - (number % $BENCH_HISTORY_DAYS) AS day,
  concat('bench-key-', toString(intDiv(number, $BENCH_HISTORY_DAYS) % $BENCH_HISTORY_KEYS)) AS key_id,
  concat('bench-team-', toString(intDiv(number, $BENCH_HISTORY_DAYS) % $BENCH_HISTORY_KEYS % 4)) AS team_id,
  'gemini-live-2.5-flash' AS model, concat('history:', toString(number)) AS event_id,
  toUInt64(0) AS sessions, toUInt64(100) AS prompt_tokens, toUInt64(50) AS response_tokens,
  toDecimal128(0.00005, 12) AS input_cost_usd, toDecimal128(0.0001, 12) AS output_cost_usd,
  toDecimal128(0.00015, 12) AS cost_usd
FROM system.numbers LIMIT $BENCH_HISTORY_EVENTS
SQL
  seed_s=$(awk -v a="$(date +%s.%N)" -v b="$seed_started" 'BEGIN { printf "%.1f", a - b }')
  # What every refresh cost before spend_totals: all-time totals of the run's 16 keys and 4
  # teams straight from spend_daily FINAL (all history).
  keys=$(for k in $(seq 0 15); do printf "'bench-key-%d'," "$k"; done); keys=${keys%,}
  teams="'bench-team-0','bench-team-1','bench-team-2','bench-team-3'"
  old_keys_s=$(ch_elapsed "SELECT key_id, toString(sum(cost_usd)) FROM livegate.spend_daily FINAL WHERE key_id IN ($keys) GROUP BY key_id")
  old_teams_s=$(ch_elapsed "SELECT team_id, toString(sum(cost_usd)) FROM livegate.spend_daily FINAL WHERE team_id IN ($teams) GROUP BY team_id")
  history_line="history: $BENCH_HISTORY_EVENTS spend_daily rows, $BENCH_HISTORY_KEYS keys, $BENCH_HISTORY_DAYS days (seeded in $seed_s s)
old refresh (all-time sums from spend_daily FINAL, before migration 4): 16 keys ${old_keys_s:-?} s, 4 teams ${old_teams_s:-?} s (ClickHouse's elapsed)"
fi

# --- metering ---
m_env=(NATS_URL="nats://$nats_addr" CLICKHOUSE_URL="$ch_url" CLICKHOUSE_DATABASE=livegate
  METERING_LISTEN=127.0.0.1:0 LIVEGATE_LOG="${LIVEGATE_LOG:-info}")
[ "$BENCH_CLUSTER" = 1 ] && m_env+=(CLICKHOUSE_CLUSTER=livegate)
for v in METERING_BATCH_SIZE METERING_FLUSH_INTERVAL METERING_MAX_ACK_PENDING METERING_ACK_WAIT \
  METERING_VERIFY_FIRST_DELIVERIES; do
  [ -z "${!v:-}" ] || m_env+=("$v=${!v}")
done
migrate_started=$(date +%s.%N)
start metering env "${m_env[@]}" "${BENCH_METERING_BIN:-$bin/livegate-metering}"
m_pid=$last_pid
wait_log metering "$m_pid" 3600 'consuming usage events' >/dev/null
migrate_s=$(awk -v a="$(date +%s.%N)" -v b="$migrate_started" 'BEGIN { printf "%.1f", a - b }')
m_addr=$(grep -aoE 'listening on 127\.0\.0\.1:[0-9]+' "$work/logs/metering.log" | head -n 1 | grep -oE '127\.0\.0\.1:[0-9]+' || true)
say "stack up: nats $nats_addr (pid $nats_pid), clickhouse $ch_url (pid $ch_pid), metering ${m_addr:-?} (pid $m_pid)$(
  for v in METERING_BATCH_SIZE METERING_FLUSH_INTERVAL METERING_MAX_ACK_PENDING METERING_VERIFY_FIRST_DELIVERIES; do [ -z "${!v:-}" ] || printf ', %s=%s' "$v" "${!v}"; done)"

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
metering env: batch ${METERING_BATCH_SIZE:-default(5000)}, flush ${METERING_FLUSH_INTERVAL:-default(500ms)}, max ack pending ${METERING_MAX_ACK_PENDING:-default(20000)}, verify first deliveries ${METERING_VERIFY_FIRST_DELIVERIES:-default(false)}
load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)
target (issue 5): >= 20000 events/s sustained, p99 publish-to-row lag < 2 s

HEADER
printf '%s\n' "$report"

# Spend refreshes during the run (metering's histogram), and the refresh reads now.
if [ -n "${m_addr:-}" ]; then
  metrics=$(curl -fsS --max-time 5 "http://$m_addr/metrics" || true)
  r_sum=$(printf '%s\n' "$metrics" | sed -n 's/^livegate_metering_spend_refresh_seconds_sum \(.*\)/\1/p')
  r_count=$(printf '%s\n' "$metrics" | sed -n 's/^livegate_metering_spend_refresh_seconds_count \(.*\)/\1/p')
  if [ -n "$r_count" ] && [ "$r_count" != 0 ]; then
    printf '\nspend refreshes: %s, mean %.4f s each (recompute touched key-days + all-time sums + KV writes)\n' \
      "$r_count" "$(awk -v s="$r_sum" -v n="$r_count" 'BEGIN { print s / n }')"
  fi
fi
keys=$(for k in $(seq 0 15); do printf "'bench-key-%d'," "$k"; done); keys=${keys%,}
printf 'all-time sums now: 16 keys %s s (spend_totals FINAL), 4 teams %s s (spend_team_days FINAL) (ClickHouse elapsed)\n' \
  "$(ch_elapsed "SELECT key_id, toString(sum(cost_usd)) FROM livegate.spend_totals FINAL WHERE key_id IN ($keys) GROUP BY key_id")" \
  "$(ch_elapsed "SELECT team_id, toString(sum(cost_usd)) FROM livegate.spend_team_days FINAL WHERE team_id IN ('bench-team-0','bench-team-1','bench-team-2','bench-team-3') GROUP BY team_id")"
printf '%s\nmetering start (migrations) took %s s\n' "$history_line" "$migrate_s"
