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
