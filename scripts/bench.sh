#!/usr/bin/env bash
# Benchmarks the gateway against the Live API emulator: the same load goes straight to the
# emulator ("direct") and through the gateway ("gateway"), and a side-by-side table shows
# what the gateway adds (latency per turn, setups/s, memory per idle session, CPU).
#
# Turn latency drifts by about ±0.1 ms between runs of the same binaries on a small machine,
# more than the +0.05 ms target, so `text` and `audio` run BENCH_ROUNDS rounds, alternating
# direct r1, relay r1, gateway r1, direct r2, … (reports/SCENARIO-LABEL-rN.json; the relay
# runs, a bare TCP relay in front of the emulator, only for the scenarios in BENCH_RELAY). The
# table then shows the median of each figure over the rounds, and what the gateway adds is
# the median of the rounds' own gateway − direct (round n's gateway run minus round n's
# direct run), with each round's added p50/p99 listed under the table. `idle` and `setup`
# run once each (reports/SCENARIO-LABEL.json): they are long (thousands of sessions ramped
# up and held; a timed setup loop), and what they measure (memory per session, setups per
# CPU-second) is not a small latency difference between paired runs.
#
# Starts its own stack in a temp dir, each process on a free loopback port: nats-server
# (JetStream), livegate-auth (with a throw-away service account), livegate-emulator (which
# verifies that account's JWTs and also accepts the bearer "bench-direct"), livegate-gateway
# (VERTEX_LIVE_URL -> emulator). Everything is stopped on exit. Release builds.
#
# Sizes (environment):
#   BENCH_SCENARIOS        scenarios, in order                        "idle text audio setup resume"
#   BENCH_RESUME_SESSIONS  resume: concurrent sessions                 10
#   BENCH_RESUME_DURATION  resume: how long they run back-to-back turns 20s
#   BENCH_RESUME_AGE       resume: the emulator's connection-age limit (Google: ~10 min)  2
#   BENCH_ROUNDS           direct/gateway rounds of text and audio     3
#   BENCH_RELAY            scenarios also run through a bare TCP relay  "text audio"
#                          (`livegate-loadgen relay`: the floor of any user-space proxy
#                          here; each round runs direct, relay, gateway; "" for none)
#   BENCH_IDLE             idle sessions held (full target: 20000)     5000
#   BENCH_IDLE_HOLD        how long they are held                      10s
#   BENCH_TEXT_SESSIONS    concurrent text sessions                    1000
#   BENCH_TEXT_TURNS       text turns per session                      10
#   BENCH_TEXT_INTERVAL    time between a session's turns              1s
#   BENCH_AUDIO_SESSIONS   concurrent audio sessions                   100
#   BENCH_AUDIO_TURNS      audio turns per session                     2
#   BENCH_AUDIO_SECONDS    seconds of 16 kHz PCM per turn              2
#   BENCH_AUDIO_SPEED      streaming speed (1 = real time, 0 = max)    1
#   BENCH_SETUP_CONCURRENCY concurrent connect/setup/close loops       50
#   BENCH_SETUP_DURATION   how long the setup loop runs                10s
#   BENCH_CONNECT_RATE     new connections per second while ramping   1000
#   BENCH_BIND_IPS         extra source addresses, e.g. 127.0.0.2,127.0.0.3 (more ports)
#   BENCH_OUT              keep reports and logs in this directory (default: a temp dir, removed)
#   BENCH_GATEWAY_LOG      LIVEGATE_LOG for the gateway                info
#   BENCH_GATEWAY_BIN      gateway binary to measure (e.g. an experimental build)  the release build
#   BENCH_SKIP_BUILD=1     use the release binaries already built
#   BENCH_GATEWAY_THREADS  the gateway's tokio worker threads (TOKIO_WORKER_THREADS)  one per core
#   BENCH_RELAY_THREADS    the gateway's relay threads (GATEWAY_RELAY_THREADS; 0: sessions on
#                          the tokio worker threads)                   the gateway's default, 0
#
# The comparison table goes to stdout; per-run tables and progress go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

BENCH_SCENARIOS=${BENCH_SCENARIOS:-idle text audio setup resume}
BENCH_RESUME_SESSIONS=${BENCH_RESUME_SESSIONS:-10}
BENCH_RESUME_DURATION=${BENCH_RESUME_DURATION:-20s}
BENCH_RESUME_AGE=${BENCH_RESUME_AGE:-2}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_RELAY=${BENCH_RELAY-text audio}
BENCH_IDLE=${BENCH_IDLE:-5000}
BENCH_IDLE_HOLD=${BENCH_IDLE_HOLD:-10s}
BENCH_TEXT_SESSIONS=${BENCH_TEXT_SESSIONS:-1000}
BENCH_TEXT_TURNS=${BENCH_TEXT_TURNS:-10}
BENCH_TEXT_INTERVAL=${BENCH_TEXT_INTERVAL:-1s}
BENCH_AUDIO_SESSIONS=${BENCH_AUDIO_SESSIONS:-100}
BENCH_AUDIO_TURNS=${BENCH_AUDIO_TURNS:-2}
BENCH_AUDIO_SECONDS=${BENCH_AUDIO_SECONDS:-2}
BENCH_AUDIO_SPEED=${BENCH_AUDIO_SPEED:-1}
BENCH_SETUP_CONCURRENCY=${BENCH_SETUP_CONCURRENCY:-50}
BENCH_SETUP_DURATION=${BENCH_SETUP_DURATION:-10s}
BENCH_CONNECT_RATE=${BENCH_CONNECT_RATE:-1000}
BENCH_BIND_IPS=${BENCH_BIND_IPS:-}
BENCH_GATEWAY_LOG=${BENCH_GATEWAY_LOG:-info}
BENCH_GATEWAY_BIN=${BENCH_GATEWAY_BIN:-}

say() { printf '[bench] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $BENCH_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive whole number, not '$BENCH_ROUNDS'"
for name in $BENCH_RELAY; do
  case $name in
    text | audio) ;;
    *) die "BENCH_RELAY lists scenarios separated by spaces, each text or audio, not '$name'" ;;
  esac
done

scripts/install-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/livegate-target}"
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
  say "using the release binaries in $CARGO_TARGET_DIR/release (BENCH_SKIP_BUILD=1)"
else
  say "building release binaries…"
  cargo build --release --locked --bins \
    -p livegate-gateway -p livegate-auth -p livegate-emulator -p livegate-demo-credentials \
    -p livegate -p livegate-loadgen
fi
bin="$CARGO_TARGET_DIR/release"
gateway_bin=${BENCH_GATEWAY_BIN:-$bin/livegate-gateway}
[ -x "$gateway_bin" ] || die "no gateway binary at $gateway_bin"

bench_workdir livegate-bench
rm -rf "$work/nats" "$work/reports"
mkdir -p "$work/logs" "$work/reports" "$work/nats"

trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Sessions cost one socket in the load generator and the emulator, and two in the gateway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
if [ "$nofile" != unlimited ] && [ $((BENCH_IDLE * 2 + 100)) -gt "$nofile" ]; then
  say "warning: RLIMIT_NOFILE is $nofile; the gateway needs 2 descriptors per session, so it can hold about $(((nofile - 100) / 2)) of the $BENCH_IDLE idle sessions (raise the hard limit: ulimit -Hn as root with CAP_SYS_RESOURCE)"
fi



export NO_COLOR=1

# --- NATS (JetStream) ---
nats_bin=$(find_nats_server) || die "nats-server not found (scripts/install-deps.sh installs it)"
start nats "$nats_bin" -js -sd "$work/nats" -a 127.0.0.1 -p -1 -n livegate-bench
nats_pid=$last_pid
nats_addr=$(wait_listen nats "$nats_pid" 20)

# --- service account, emulator, auth, gateway ---
sa=$("$bin/livegate-demo-credentials" --out "$work/service-account")
start emulator "$bin/livegate-emulator" --listen 127.0.0.1:0 --service-account-key "$sa" --token bench-direct
emu_pid=$last_pid
emu_addr=$(wait_listen emulator "$emu_pid" 20)
emu_url="ws://$emu_addr/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"

relay_url=""
if [ -n "$BENCH_RELAY" ]; then
  start relay "$bin/livegate-loadgen" relay --listen 127.0.0.1:0 --to "$emu_addr"
  relay_pid=$last_pid
  relay_addr=$(wait_listen relay "$relay_pid" 20)
  relay_url="ws://$relay_addr/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
fi

master=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
internal=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
start auth env NATS_URL="nats://$nats_addr" AUTH_LISTEN=127.0.0.1:0 \
  LIVEGATE_MASTER_KEY="$master" LIVEGATE_INTERNAL_TOKEN="$internal" \
  GOOGLE_APPLICATION_CREDENTIALS="$sa" "$bin/livegate-auth"
auth_pid=$last_pid
auth_addr=$(wait_listen auth "$auth_pid" 30)

gw_env=()
[ -z "${BENCH_GATEWAY_THREADS:-}" ] || gw_env+=(TOKIO_WORKER_THREADS="$BENCH_GATEWAY_THREADS")
[ -z "${BENCH_RELAY_THREADS:-}" ] || gw_env+=(GATEWAY_RELAY_THREADS="$BENCH_RELAY_THREADS")
start gateway env "${gw_env[@]}" NATS_URL="nats://$nats_addr" AUTH_URL="http://$auth_addr" \
  LIVEGATE_INTERNAL_TOKEN="$internal" GATEWAY_LISTEN=127.0.0.1:0 GATEWAY_ID=bench \
  VERTEX_LIVE_URL="$emu_url" DEFAULT_VERTEXAI_PROJECT=livegate-bench \
  LIVEGATE_LOG="$BENCH_GATEWAY_LOG" "$gateway_bin"
gw_pid=$last_pid
gw_addr=$(wait_listen gateway "$gw_pid" 30)
gw_url="ws://$gw_addr/v1/vertex-ai/live"

# One key for every session, so the gateway's auth cache stays warm.
key=$(AUTH_URL="http://$auth_addr" LIVEGATE_MASTER_KEY="$master" \
  "$bin/livegate" keys create --alias "bench-$$" --team bench | tail -n 1)
[ -n "$key" ] || die "could not create an API key"
say "stack up: nats $nats_addr (pid $nats_pid), emulator $emu_addr (pid $emu_pid), relay ${relay_addr:-off} (pid ${relay_pid:-none}), auth $auth_addr (pid $auth_pid), gateway $gw_addr (pid $gw_pid)"

loadgen() { # MODE LABEL REPORT ARGS...: one run; its table to stderr, its JSON to REPORT
  local mode=$1 label=$2 report=$3; shift 3
  local url key_arg pid_args
  if [ "$label" = direct ]; then
    url=$emu_url; key_arg=bench-direct
    pid_args=(--pid "emulator=$emu_pid")
  elif [ "$label" = relay ]; then
    url=$relay_url; key_arg=bench-direct
    pid_args=(--pid "relay=$relay_pid" --pid "emulator=$emu_pid")
  else
    url=$gw_url; key_arg=$key
    pid_args=(--pid "gateway=$gw_pid" --pid "emulator=$emu_pid" --pid "auth=$auth_pid" --pid "nats=$nats_pid")
  fi
  local bind=()
  [ -z "$BENCH_BIND_IPS" ] || bind=(--bind-ips "$BENCH_BIND_IPS")
  say "run: $mode via $label -> ${report#"$work/"}"
  LOADGEN_KEY=$key_arg "$bin/livegate-loadgen" "$mode" --url "$url" --label "$label" \
    "${pid_args[@]}" "${bind[@]}" --json-out "$report" "$@" >&2
}

scenario() { # SCENARIO LABEL REPORT: one run of a scenario at its BENCH_* sizes
  local label=$2 report=$3
  case $1 in
    idle) loadgen idle "$label" "$report" --sessions "$BENCH_IDLE" --hold "$BENCH_IDLE_HOLD" \
      --connect-rate "$BENCH_CONNECT_RATE" --timeout 600s ;;
    text) loadgen text "$label" "$report" --sessions "$BENCH_TEXT_SESSIONS" --turns "$BENCH_TEXT_TURNS" \
      --turn-interval "$BENCH_TEXT_INTERVAL" --connect-rate "$BENCH_CONNECT_RATE" --timeout 600s ;;
    audio) loadgen audio "$label" "$report" --sessions "$BENCH_AUDIO_SESSIONS" --turns "$BENCH_AUDIO_TURNS" \
      --audio-seconds "$BENCH_AUDIO_SECONDS" --speed "$BENCH_AUDIO_SPEED" \
      --connect-rate "$BENCH_CONNECT_RATE" --timeout 600s ;;
    setup) loadgen setup "$label" "$report" --concurrency "$BENCH_SETUP_CONCURRENCY" \
      --duration "$BENCH_SETUP_DURATION" --timeout 600s ;;
    *) die "unknown scenario $1 (idle, text, audio, setup)" ;;
  esac
}

# `resume`: a second emulator that ends every upstream connection after BENCH_RESUME_AGE
# seconds (goAway 0.5 s before, then 1011 Deadline expired, as Google does after ~10 min) and
# a second gateway in front of it, sharing auth and NATS. The same load runs first through
# the first gateway (no resumptions: the CPU per turn baseline), then through this one; the
# gap and the CPU per resumption come from `livegate-loadgen resume`.
resume_stack() {
  [ -z "${gw2_url:-}" ] || return 0
  start emulator-aging "$bin/livegate-emulator" --listen 127.0.0.1:0 --service-account-key "$sa" \
    --max-connection-age "$BENCH_RESUME_AGE" --go-away-lead 0.5
  emu2_pid=$last_pid
  local emu2_addr
  emu2_addr=$(wait_listen emulator-aging "$emu2_pid" 20)
  start gateway-resume env "${gw_env[@]}" NATS_URL="nats://$nats_addr" AUTH_URL="http://$auth_addr" \
    LIVEGATE_INTERNAL_TOKEN="$internal" GATEWAY_LISTEN=127.0.0.1:0 GATEWAY_ID=bench-resume \
    VERTEX_LIVE_URL="ws://$emu2_addr/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent" \
    DEFAULT_VERTEXAI_PROJECT=livegate-bench LIVEGATE_LOG="$BENCH_GATEWAY_LOG" "$gateway_bin"
  gw2_pid=$last_pid
  gw2_url="ws://$(wait_listen gateway-resume "$gw2_pid" 30)/v1/vertex-ai/live"
}

resume_results=""
resume_scenario() {
  resume_stack
  say "run: resume baseline (no resumptions) via gateway"
  local base
  base=$(LOADGEN_KEY=$key "$bin/livegate-loadgen" resume --url "$gw_url" --label baseline \
    --pid "gateway=$gw_pid" --sessions "$BENCH_RESUME_SESSIONS" --duration "$BENCH_RESUME_DURATION" \
    --json-out "$work/reports/resume-baseline.json")
  printf '%s\n' "$base" >&2
  local per_turn
  per_turn=$(sed -n 's/.* \([0-9.]*\) ms per turn.*/\1/p' <<<"$base")
  say "run: resume via a gateway whose upstream ends connections every ${BENCH_RESUME_AGE}s"
  resume_results+=$(LOADGEN_KEY=$key "$bin/livegate-loadgen" resume --url "$gw2_url" --label resume \
    --pid "gateway=$gw2_pid" --sessions "$BENCH_RESUME_SESSIONS" --duration "$BENCH_RESUME_DURATION" \
    --baseline-cpu-per-turn-ms "${per_turn:-0}" --json-out "$work/reports/resume.json")
  resume_results+=$'\n'"baseline (same load, no resumptions): $(sed -n 's/^ *turn latency: /turn latency /p' <<<"$base")"
}

# Warm-up (not reported): first connections, the auth cache, the Google token, the stream.
say "warm-up"
for target in "direct $emu_url" "relay $relay_url" "gateway $gw_url"; do
  read -r label url <<<"$target"
  [ -n "${url:-}" ] || continue
  LOADGEN_KEY=$([ "$label" = gateway ] && echo "$key" || echo bench-direct) \
    "$bin/livegate-loadgen" text --url "$url" \
    --sessions 50 --turns 2 --turn-interval 10ms --timeout 60s >/dev/null 2>&1 ||
    die "warm-up via $label failed (logs: $work/logs/)"
done

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
files=() # in run order: `compare` pairs round n's direct and gateway reports by it
relay_files=() # the same for the direct and relay reports
for name in $BENCH_SCENARIOS; do
  case $name in
    resume) resume_scenario ;;
    text | audio)
      labels="direct gateway"
      [[ " $BENCH_RELAY " != *" $name "* ]] || labels="direct relay gateway"
      for round in $(seq 1 "$BENCH_ROUNDS"); do
        say "$name: round $round of $BENCH_ROUNDS"
        for label in $labels; do
          files+=("$work/reports/$name-$label-r$round.json")
          scenario "$name" "$label" "${files[-1]}"
          [ "$label" = gateway ] || [ "$labels" = "direct gateway" ] || relay_files+=("${files[-1]}")
        done
      done ;;
    *)
      for label in direct gateway; do
        files+=("$work/reports/$name-$label.json")
        scenario "$name" "$label" "${files[-1]}"
      done ;;
  esac
done

cat <<HEADER

livegate bench — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores, $(uname -r), RLIMIT_NOFILE $nofile
direct = load generator -> emulator; gateway = load generator -> gateway -> emulator (auth, NATS live)
relay = load generator -> bare TCP relay (livegate-loadgen relay: copies bytes, parses nothing) -> emulator: the floor of any proxy here
text and audio: $BENCH_ROUNDS round(s) of direct (then relay, for ${BENCH_RELAY:-no scenario}) then gateway; columns are medians over the rounds, gateway−direct is the median of the rounds' own
gateway binary: $gateway_bin; gateway settings: ${gw_env[*]:-defaults}
load average before the runs: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)

HEADER
[ ${#files[@]} -eq 0 ] || "$bin/livegate-loadgen" compare "${files[@]}"
if [ ${#relay_files[@]} -gt 0 ]; then
  printf '%s\n\n' "-- the same rounds through the bare TCP relay instead of the gateway (the floor any proxy adds here; targets shown for scale) --"
  "$bin/livegate-loadgen" compare --side relay "${relay_files[@]}"
fi
if [ -n "$resume_results" ]; then
  printf '%s\n%s\n\n' "-- transparent resumption: upstream connections end every ${BENCH_RESUME_AGE}s; gap = last frame of the old upstream connection to the first of the new one, as the client sees it --" "$resume_results"
fi
