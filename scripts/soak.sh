#!/usr/bin/env bash
# The soak (benches/faults, scenario `soak`): keygate over a private PostgreSQL on loopback
# (port 55432, see scripts/private-backends.sh) with the key cache, loaded for [minutes] (10 by
# default) while keys are issued, rotated and revoked all along; memory and open file
# descriptors sampled every 10 s must end within 10 % of the sample after the first minute, and
# every key revoked during the run must be refused. Logs go to target/faults/soak.log, checked
# for key secrets. Load: FAULTS_RATE, FAULTS_CLIENTS (benches/faults/main.rs).
# Usage: scripts/soak.sh [minutes]. Exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/private-backends.sh

export SOAK_MINUTES="${1:-10}"
cargo bench --bench faults --features postgres,redis --no-run
start_postgres
mkdir -p target/faults
log=target/faults/soak.log
machine_load
status=0
cargo bench --bench faults --features postgres,redis -- soak 2>"$log" || { status=$?; tail -n 20 "$log" >&2; }
no_secret_in "$log" || status=1
machine_load
exit "$status"
