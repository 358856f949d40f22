#!/usr/bin/env bash
# Starts the whole livegate system locally: NATS (JetStream), ClickHouse, the auth, metering
# and gateway services, and, when no Google credentials are configured, the Live API emulator
# as the upstream (DEMO MODE). Installs NATS and ClickHouse first if they are missing.
# Ctrl-C (or SIGTERM) stops everything cleanly. State lives in .livegate/ in the checkout.
#
# Ports (override with the variables): gateway 4000 (GATEWAY_PORT), auth 50051 (AUTH_PORT),
# metering 9464 (METERING_PORT), NATS 4222 (NATS_PORT), ClickHouse HTTP 8123 / native 9000
# (CLICKHOUSE_HTTP_PORT / CLICKHOUSE_TCP_PORT), emulator 4100 (EMULATOR_PORT).
# LIVEGATE_PROFILE=release builds optimised binaries (slower first build); LIVEGATE_BIN_DIR
# uses prebuilt binaries instead; LIVEGATE_STATE_DIR moves the state (default .livegate/).
#
# NATS runs as deployed: TLS (a throwaway CA made once with openssl) and the users and
# permissions of deploy/nats/permissions.conf, with passwords generated into
# $state/nats-secrets/ (mode 700). Each service connects as its own user; `livegate doctor`
# can use the `cli` user (the banner prints how).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib.sh

GATEWAY_PORT=${GATEWAY_PORT:-4000}
AUTH_PORT=${AUTH_PORT:-50051}
METERING_PORT=${METERING_PORT:-9464}
NATS_PORT=${NATS_PORT:-4222}
CLICKHOUSE_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-8123}
CLICKHOUSE_TCP_PORT=${CLICKHOUSE_TCP_PORT:-9000}
EMULATOR_PORT=${EMULATOR_PORT:-4100}
profile=${LIVEGATE_PROFILE:-dev}

say() { printf '[livegate] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port name seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if ! port_free "$1"; then return 0; fi
    sleep 0.1
  done
  die "$2 did not start listening on 127.0.0.1:$1 within $3 s (logs: $state/logs/)"
}

scripts/install-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/livegate-target}"
if [ -n "${LIVEGATE_BIN_DIR:-}" ]; then
  bin=$LIVEGATE_BIN_DIR # prebuilt binaries (the test suite uses its own build)
else
  say "building ($profile profile)…"
  cargo build --workspace --bins --profile "$profile" --locked
  case $profile in dev) bin="$CARGO_TARGET_DIR/debug" ;; *) bin="$CARGO_TARGET_DIR/$profile" ;; esac
fi

for p in "$GATEWAY_PORT" "$AUTH_PORT" "$METERING_PORT" "$NATS_PORT" "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT"; do
  port_free "$p" || die "port $p is already in use (another livegate running? set the *_PORT variables)"
done

state="${LIVEGATE_STATE_DIR:-$root/.livegate}"
mkdir -p "$state/logs" "$state/nats"
[ -f "$state/master-key" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$state/master-key"
[ -f "$state/internal-token" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$state/internal-token"
export LIVEGATE_MASTER_KEY=${LIVEGATE_MASTER_KEY:-$(cat "$state/master-key")}
export LIVEGATE_INTERNAL_TOKEN=${LIVEGATE_INTERNAL_TOKEN:-$(cat "$state/internal-token")}
export NATS_URL="tls://127.0.0.1:$NATS_PORT"
export CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
export AUTH_URL="http://127.0.0.1:$AUTH_PORT"
export AUTH_LISTEN="127.0.0.1:$AUTH_PORT"
export METERING_LISTEN="127.0.0.1:$METERING_PORT"
export GATEWAY_LISTEN="127.0.0.1:$GATEWAY_PORT"

# lib.sh's start/stop_all keep their processes under $work; here that is the state dir, kept.
work=$state
keep=1
stop_everything() {
  say "stopping…"
  stop_all
  say "stopped"
}
trap stop_everything EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# --- NATS (JetStream), TLS and per-service users ---
nats_bin=$(find_nats_server) || die "nats-server not found (scripts/install-deps.sh installs it)"
command -v openssl >/dev/null || die "openssl not found (needed for NATS TLS; apt-get install openssl)"
nats_secrets="$state/nats-secrets"
write_nats_secrets "$nats_secrets" "IP:127.0.0.1,DNS:localhost" "$root/deploy/nats"
export NATS_TLS_CA="$nats_secrets/ca.crt"
with_nats_passwords "$nats_secrets" start nats "$nats_bin" -c "$nats_secrets/nats.conf" \
  -js -sd "$state/nats" -a 127.0.0.1 -p "$NATS_PORT" -n livegate-local
wait_port "$NATS_PORT" nats-server 20

# --- ClickHouse ---
ch_bin=$(find_clickhouse_server) || die "clickhouse-server not found (scripts/install-deps.sh installs it)"
ch="$state/clickhouse"
write_clickhouse_config "$ch" "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT"
start clickhouse "$ch_bin" --config-file="$ch/config.xml"
wait_port "$CLICKHOUSE_HTTP_PORT" clickhouse-server 60

# --- Google credentials or DEMO MODE ---
demo=0
if [ -n "${DEFAULT_VERTEXAI_PROJECT:-}" ] && { [ -n "${DEFAULT_GOOGLE_APPLICATION_CREDENTIALS:-}" ] ||
  [ -n "${GOOGLE_APPLICATION_CREDENTIALS:-}" ] ||
  [ -f "${CLOUDSDK_CONFIG:-$HOME/.config/gcloud}/application_default_credentials.json" ]; }; then
  say "upstream: Vertex AI (project $DEFAULT_VERTEXAI_PROJECT, location ${DEFAULT_VERTEXAI_LOCATION:-us-central1})"
else
  demo=1
  sa_dir="$state/demo-service-account"
  sa=$(ls "$sa_dir"/service-account-*.json 2>/dev/null | head -n 1 || true)
  [ -n "$sa" ] || sa=$("$bin/livegate-demo-credentials" --out "$sa_dir")
  start emulator "$bin/livegate-emulator" --listen "127.0.0.1:$EMULATOR_PORT" --service-account-key "$sa"
  wait_port "$EMULATOR_PORT" livegate-emulator 20
  export GOOGLE_APPLICATION_CREDENTIALS="$sa"
  unset DEFAULT_GOOGLE_APPLICATION_CREDENTIALS
  export DEFAULT_VERTEXAI_PROJECT=${DEFAULT_VERTEXAI_PROJECT:-livegate-demo}
  export VERTEX_LIVE_URL="ws://127.0.0.1:$EMULATOR_PORT/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
fi

# --- livegate services ---
as_nats_user "$nats_secrets" auth start auth "$bin/livegate-auth"
wait_port "$AUTH_PORT" livegate-auth 30
as_nats_user "$nats_secrets" metering start metering "$bin/livegate-metering"
wait_port "$METERING_PORT" livegate-metering 30
as_nats_user "$nats_secrets" gateway start gateway "$bin/livegate-gateway"
wait_port "$GATEWAY_PORT" livegate-gateway 30

key=$("$bin/livegate" keys create --alias "demo-$(date +%s)" --team demo | tail -n 1)

if [ "$demo" = 1 ]; then
  cat >&2 <<BANNER

  ###########################################################################
  #  DEMO MODE — upstream is the local emulator; set DEFAULT_VERTEXAI_PROJECT #
  #  and credentials to use Vertex AI                                        #
  ###########################################################################
BANNER
fi
cat <<INFO

livegate is running. Logs: $state/logs/
  WebSocket URL : ws://127.0.0.1:$GATEWAY_PORT/v1/vertex-ai/live
  API key       : $key
  Master key    : (in $state/master-key; admin CLI: $bin/livegate keys list)
  ClickHouse    : $CLICKHOUSE_URL   NATS: $NATS_URL   auth: $AUTH_URL
  NATS users    : passwords and CA in $nats_secrets/ (doctor: NATS_USER=cli
                  NATS_PASSWORD=\$(cat $nats_secrets/cli.password) NATS_TLS_CA=$NATS_TLS_CA $bin/livegate doctor)
Press Ctrl-C to stop.
INFO

# Run until Ctrl-C or until any component exits.
while :; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "a component (pid $pid) exited; see $state/logs/. Shutting down."
      exit 1
    fi
  done
  sleep 1
done
