#!/usr/bin/env bash
# End-to-end load benchmark of keygate: installs wrk if needed, then runs benches/load.rs with the
# server pinned to one core and wrk to the other. Usage: scripts/load.sh (env: LOAD_ROUNDS,
# LOAD_SECONDS, LOAD_CONNECTIONS, LOAD_PAIRED=1, LOAD_CONCURRENT=1 for the sides at once (on a machine
# whose speed drifts), LOAD_BREAKDOWN=1 for two more sides, LOAD_ONLY=<side>,
# LOAD_QUICKSTART=1 for the quickstart-like app on SQLite (and on PostgreSQL with
# LOAD_FEATURES=postgres KEYGATE_BENCH_POSTGRES_URL=postgres://...); see benches/load.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
# LOAD_FEATURES (e.g. postgres,redis) turns on the sides that need a server (benches/README.md).
features=()
if [ -n "${LOAD_FEATURES:-}" ]; then features=(--features "$LOAD_FEATURES"); fi
cargo bench --bench load "${features[@]}" --no-run
export LOAD_CLIENT_CORE=1 LOAD_BENCH=1
exec taskset -c 0 cargo bench --bench load "${features[@]}"
