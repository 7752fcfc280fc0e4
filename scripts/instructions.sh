#!/usr/bin/env bash
# Instructions per request through an axum router in process (no network), with no auth, with
# the hand-written floor (benches/support/floor.rs), with the same floor doing keygate's key
# checks, with keygate's authentication, with the hand-written floor of the full pipeline
# (benches/support/floor_limits.rs), and with keygate's full pipeline, counted by callgrind: repeatable where timings on a shared machine are not.
# Installs valgrind if needed. Usage: scripts/instructions.sh (SIDES="auth floor" for some sides)
#
# valgrind does not run SHA-NI, so sha2 falls back to its portable code under it: the SHA-256 of
# the key counts ~7,000 instructions here for ~80 ns on hardware with SHA-NI; compare the other
# functions (callgrind_annotate on the files left in target/instructions/).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind
fi
bin=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*instructions[^"]*"' | cut -d'"' -f4 | tail -1)
out=target/instructions
mkdir -p "$out"
count() { # side requests -> total instructions
  valgrind --tool=callgrind --callgrind-out-file="$out/$1.$2.out" "$bin" "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for side in ${SIDES:-no_auth floor floor_checked auth floor_limits pipeline}; do
  small=$(count "$side" 1000)
  large=$(count "$side" 3000)
  echo "$side: $(((large - small) / 2000)) instructions per request"
done
