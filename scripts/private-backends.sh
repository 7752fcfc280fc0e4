# Private PostgreSQL and Redis instances on loopback ports of their own, for scripts/faults.sh
# and scripts/soak.sh (sourced, not run): the faults stop and start these, never a shared
# server. Everything lives in one temporary directory, removed on exit with both servers.
#
# Ports: FAULTS_PG_PORT (55432) and FAULTS_REDIS_PORT (6391). PostgreSQL's binaries are found
# in PG_BIN, else the newest /usr/lib/postgresql/*/bin, else on PATH. Run as root, PostgreSQL
# runs as the user `postgres` (it refuses root).

PG_PORT="${FAULTS_PG_PORT:-55432}"
REDIS_PORT="${FAULTS_REDIS_PORT:-6391}"
BACKENDS_DIR=""

missing() {
  echo "error: $1" >&2
  exit 2
}

port_in_use() {
  (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Runs a PostgreSQL command as the user that owns the cluster.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

backends_dir() {
  if [ -z "$BACKENDS_DIR" ]; then
    BACKENDS_DIR="$(mktemp -d /tmp/keygate-faults.XXXXXX)"
    trap stop_backends EXIT
    trap 'exit 130' INT TERM
  fi
}

stop_backends() {
  local status=$?
  if [ -n "${REDIS_STARTED:-}" ]; then
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    [ -f "$BACKENDS_DIR/redis.pid" ] && kill "$(cat "$BACKENDS_DIR/redis.pid")" 2>/dev/null || true
  fi
  if [ -n "${PG_STARTED:-}" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$BACKENDS_DIR/pg" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$BACKENDS_DIR"
  exit "$status"
}

# Starts PostgreSQL on 127.0.0.1:$PG_PORT; sets FAULTS_POSTGRES_URL and the commands that stop
# and start it (PG_STOP_CMD, PG_START_CMD).
start_postgres() {
  if [ -z "${PG_BIN:-}" ]; then
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$PG_BIN" ] || PG_BIN="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"
  fi
  [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] ||
    missing "PostgreSQL's server binaries (initdb, pg_ctl) not found: install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql) or set PG_BIN"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || missing "running as root needs the user 'postgres' to run PostgreSQL (the postgresql package creates it)"
    command -v runuser >/dev/null || missing "running as root needs runuser (util-linux)"
  fi
  port_in_use "$PG_PORT" && missing "port $PG_PORT is in use: another run, or set FAULTS_PG_PORT"
  backends_dir
  if [ "$(id -u)" = 0 ]; then chown postgres "$BACKENDS_DIR"; fi
  as_pg "$PG_BIN/initdb" -D "$BACKENDS_DIR/pg" -U postgres -A trust -E UTF8 --no-sync >/dev/null
  local options="-p $PG_PORT -k $BACKENDS_DIR -c listen_addresses=127.0.0.1 -c fsync=off"
  local pg_ctl
  pg_ctl="$(printf '%q ' "$PG_BIN/pg_ctl" -D "$BACKENDS_DIR/pg")"
  if [ "$(id -u)" = 0 ]; then pg_ctl="runuser -u postgres -- $pg_ctl"; fi
  PG_STOP_CMD="$pg_ctl -m fast -w stop >/dev/null"
  PG_START_CMD="$pg_ctl -o $(printf '%q' "$options") -l $(printf '%q' "$BACKENDS_DIR/pg.log") -w start >/dev/null"
  PG_STARTED=1
  sh -c "$PG_START_CMD"
  export FAULTS_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "private PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
}

# Starts Redis on 127.0.0.1:$REDIS_PORT; sets FAULTS_REDIS_URL and the commands that stop and
# start it (REDIS_STOP_CMD, REDIS_START_CMD).
start_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
    missing "redis-server and redis-cli not found: install Redis (Debian/Ubuntu: apt-get install redis-server)"
  port_in_use "$REDIS_PORT" && missing "port $REDIS_PORT is in use: another run, or set FAULTS_REDIS_PORT"
  backends_dir
  REDIS_STOP_CMD="redis-cli -p $REDIS_PORT shutdown nosave >/dev/null"
  REDIS_START_CMD="redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no \
--daemonize yes --dir $BACKENDS_DIR --pidfile $BACKENDS_DIR/redis.pid \
--logfile $BACKENDS_DIR/redis.log && until redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; do sleep 0.05; done"
  REDIS_STARTED=1
  sh -c "$REDIS_START_CMD"
  export FAULTS_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  echo "private Redis $(redis-server --version | awk '{sub("v=", "", $3); print $3}') on 127.0.0.1:$REDIS_PORT"
}

# The machine's load, as the figures should state it.
machine_load() {
  echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)$(
    command -v vmstat >/dev/null && vmstat 1 2 | awk '
      NR == 2 { for (i = 1; i <= NF; i++) col[$i] = i }
      END { print ", CPU idle " $col["id"] "%, stolen " $col["st"] "% (vmstat over 1 s)" }')"
}

# Fails when a key's secret appears in `log`.
no_secret_in() {
  if grep -qE '[a-z0-9]{1,16}_(live|test)_[0-9a-f]{32,}' "$1"; then
    echo "FAIL: a key's secret appears in $1" >&2
    return 1
  fi
  echo "log $1: $(wc -l <"$1") lines, no key secret in it"
}
