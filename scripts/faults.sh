#!/usr/bin/env bash
# Faults under load (benches/faults): starts a private PostgreSQL and Redis on loopback (ports
# 55432 and 6391, see scripts/private-backends.sh), then runs each scenario once: the binary
# loads keygate over loopback and, 10 s into a 40 s run, stops the backend and starts it again
# 5 s later (`postgres`, `redis`) or makes the store answer late for 10 s (`slow`). Each
# scenario's logs go to target/faults/<scenario>.log, checked for key secrets.
# Usage: scripts/faults.sh [postgres|redis|slow]... (all three by default); the timing and the
# load are set by FAULTS_SECONDS, FAULTS_AT, FAULTS_DOWN, FAULTS_RATE, FAULTS_CLIENTS,
# FAULTS_RECOVERY (benches/faults/main.rs). Exits non-zero when a scenario fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/private-backends.sh

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(postgres redis slow)
for s in "${scenarios[@]}"; do
  case "$s" in
    postgres | slow) need_pg=1 ;;
    redis) need_redis=1 ;;
    *) missing "unknown scenario '$s' (postgres, redis, slow)" ;;
  esac
done

cargo bench --bench faults --features postgres,redis --no-run
[ -n "${need_pg:-}" ] && start_postgres
[ -n "${need_redis:-}" ] && start_redis
mkdir -p target/faults

failed=()
for s in "${scenarios[@]}"; do
  echo
  echo "### $s ($(date -u +%FT%TZ))"
  machine_load
  case "$s" in
    postgres) export FAULT_STOP_CMD="$PG_STOP_CMD" FAULT_START_CMD="$PG_START_CMD" ;;
    redis) export FAULT_STOP_CMD="$REDIS_STOP_CMD" FAULT_START_CMD="$REDIS_START_CMD" ;;
    slow) unset FAULT_STOP_CMD FAULT_START_CMD ;;
  esac
  log="target/faults/$s.log"
  if ! cargo bench --bench faults --features postgres,redis -- "$s" 2>"$log"; then
    failed+=("$s")
    tail -n 20 "$log" >&2
  fi
  no_secret_in "$log" || failed+=("$s (log)")
  machine_load
done
echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all scenarios passed: ${scenarios[*]}"
