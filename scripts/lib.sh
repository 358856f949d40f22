# Shared helpers for scripts/start.sh and the benchmarks. Source it; it defines functions only.

# find_nats_server: the nats-server binary (NATS_SERVER_BIN wins), resolving a pyenv shim so
# that the pid we start is the server's own.
find_nats_server() {
  local bin=${NATS_SERVER_BIN:-$(command -v nats-server || true)}
  if [ -z "${NATS_SERVER_BIN:-}" ] && command -v pyenv >/dev/null 2>&1; then
    bin=$(pyenv which nats-server 2>/dev/null || printf '%s' "$bin")
  fi
  [ -n "$bin" ] || return 1
  printf '%s\n' "$bin"
}

# find_clickhouse_server: the clickhouse-server binary (CLICKHOUSE_SERVER_BIN wins).
find_clickhouse_server() {
  local bin=${CLICKHOUSE_SERVER_BIN:-$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)}
  [ -x "$bin" ] || return 1
  printf '%s\n' "$bin"
}

# write_clickhouse_config DIR HTTP_PORT TCP_PORT: a config.xml and users.xml in DIR for a
# loopback-only server keeping everything under DIR. Valid for ClickHouse 18.16 (Debian's) and
# current releases (the <yandex> root is still accepted).
write_clickhouse_config() {
  local ch=$1
  mkdir -p "$ch"/{data,tmp,user_files,format_schemas,log}
  cat >"$ch/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>information</level><log>$ch/log/server.log</log><errorlog>$ch/log/server.err.log</errorlog><size>50M</size><count>2</count></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$2</http_port>
    <tcp_port>$3</tcp_port>
    <path>$ch/data/</path>
    <tmp_path>$ch/tmp/</tmp_path>
    <user_files_path>$ch/user_files/</user_files_path>
    <format_schema_path>$ch/format_schemas/</format_schema_path>
    <users_config>$ch/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <mlock_executable>false</mlock_executable>
</yandex>
XML
  cat >"$ch/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
    <quotas><default></default></quotas>
</yandex>
XML
}

# --- NATS as deployed: TLS and per-service users -------------------------------------------
# The users of deploy/nats/permissions.conf; each gets a generated password.
nats_users=(gateway auth metering cli admin)

# write_nats_secrets DIR SAN PERMISSIONS_DIR: a CA and server certificate for SAN
# (deploy/nats/gen-tls.sh), a password per user (kept across runs), the permission file and a
# nats.conf (TLS + include) in DIR, mode 700.
write_nats_secrets() {
  local dir=$1 u
  mkdir -p "$dir"
  chmod 700 "$dir"
  sh "$3/gen-tls.sh" "$dir" "$2"
  for u in "${nats_users[@]}"; do
    [ -s "$dir/$u.password" ] || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$dir/$u.password")
  done
  cp "$3/permissions.conf" "$dir/permissions.conf"
  cat >"$dir/nats.conf" <<CONF
# Written by scripts/lib.sh (write_nats_secrets); passwords come from the environment.
tls {
  cert_file: "$dir/tls.crt"
  key_file: "$dir/tls.key"
  timeout: 5
}
include ./permissions.conf
CONF
}

# with_nats_passwords DIR COMMAND...: runs COMMAND with LIVEGATE_NATS_<USER>_PASSWORD set for
# every user (what permissions.conf reads), in its environment only, never on a command line.
with_nats_passwords() {
  local dir=$1 u var vars=()
  shift
  # Exported for the duration of COMMAND only (no subshell: `start` records its pid here).
  for u in "${nats_users[@]}"; do
    var="LIVEGATE_NATS_$(printf '%s' "$u" | tr '[:lower:]' '[:upper:]')_PASSWORD"
    export "$var=$(cat "$dir/$u.password")"
    vars+=("$var")
  done
  "$@"
  unset "${vars[@]}"
}

# as_nats_user DIR USER COMMAND...: runs COMMAND (e.g. `start auth …`) with NATS_USER and
# NATS_PASSWORD of USER in the environment of what it starts.
as_nats_user() {
  local dir=$1 user=$2
  shift 2
  NATS_USER=$user NATS_PASSWORD=$(cat "$dir/$user.password") "$@"
}

# --- background processes (benchmarks) ---------------------------------------------------
# Callers set $work (a directory with logs/) and define `die`; pids accumulate in $pids.
pids=()

# bench_workdir PREFIX: sets $work to $BENCH_OUT (kept afterwards, $keep=1) or a new temp dir
# (removed by stop_all).
bench_workdir() {
  if [ -n "${BENCH_OUT:-}" ]; then
    work=$BENCH_OUT
    keep=1
  else
    work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    keep=0
  fi
  mkdir -p "$work/logs"
}

# start NAME COMMAND...: runs in the background, output to logs/NAME.log, pid in $last_pid.
start() {
  local name=$1; shift
  "$@" >"$work/logs/$name.log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
}

# stop_one PID SECONDS: SIGTERM, up to SECONDS to exit, then SIGKILL.
stop_one() {
  local pid=$1 j
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((j = 0; j < $2 * 10; j++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    printf 'pid %s still running %s s after SIGTERM; killing it\n' "$pid" "$2" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# stop_all: stops what `start` started, newest first and one at a time (a service finishes
# its work while NATS and ClickHouse are still up), then removes or keeps $work.
stop_all() {
  trap - INT TERM EXIT
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_one "${pids[i]}" 30; done
  if [ "$keep" = 1 ]; then printf 'logs kept in %s\n' "$work/logs" >&2; else rm -rf "$work"; fi
}

# wait_log NAME PID SECONDS REGEX: prints the first match of REGEX in logs/NAME.log; dies if
# the process exits first or nothing matches in time.
wait_log() {
  local i m
  for ((i = 0; i < $3 * 10; i++)); do
    m=$(grep -aoE "$4" "$work/logs/$1.log" 2>/dev/null | head -n 1 || true)
    if [ -n "$m" ]; then printf '%s\n' "$m"; return 0; fi
    kill -0 "$2" 2>/dev/null || { tail -n 20 "$work/logs/$1.log" >&2; die "$1 exited during start-up"; }
    sleep 0.1
  done
  tail -n 20 "$work/logs/$1.log" >&2
  die "$1 not ready within $3 s"
}

# wait_listen NAME PID SECONDS: the loopback address from the process's "listening on" line.
wait_listen() {
  wait_log "$1" "$2" "$3" '[Ll]istening (for client connections )?on 127\.0\.0\.1:[0-9]+' |
    grep -oE '127\.0\.0\.1:[0-9]+'
}

# free_port: a loopback port nobody listens on right now (bind to 0, read, release).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
