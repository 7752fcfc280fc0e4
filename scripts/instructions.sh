#!/usr/bin/env bash
# Instructions per request through an axum router in process (no network), with no auth, with
# the hand-written floor (benches/support/floor.rs), with the same floor doing keygate's key
# checks, with keygate's authentication, with the hand-written floor of the full pipeline
# (benches/support/floor_limits.rs), with the same floor keeping keygate's contract for limits
# (checked: the plan read per request, state for any tenant, all-or-nothing, the calendar month),
# and with keygate's full pipeline, counted by callgrind:
# repeatable where timings on a shared machine are not.
# Installs valgrind if needed. Usage: scripts/instructions.sh (SIDES="auth floor" for some sides)
#
# valgrind does not run SHA-NI, so sha2 falls back to its portable code under it: the SHA-256 of
# the key counts ~7,000 instructions here for ~80 ns on hardware with SHA-NI; compare the other
# functions (callgrind_annotate on the files left in target/instructions/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/instructions-binary.sh
out=target/instructions
mkdir -p "$out"
# CACHE_SIM=1 also simulates the caches (32 KB L1 for instructions and for data, as valgrind
# models this machine) and prints, per request, the L1 misses and callgrind's cycle estimate
# (instructions + 10 per L1 miss + 100 per last-level miss): code that is larger but runs fewer
# instructions can cost more, and only this shows it. KEYGATE_BENCH_KEYS sets the store's size.
sim=()
if [ "${CACHE_SIM:-0}" = 1 ]; then sim=(--cache-sim=yes); fi
count() { # side requests -> the totals callgrind collected (Ir, then the cache events)
  valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$out/$1.$2.out" "$bin" "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : \([0-9 ]*\).*/\1/p'
}
for side in ${SIDES:-no_auth floor floor_checked auth floor_limits floor_limits_checked pipeline}; do
  read -r -a small <<<"$(count "$side" 1000)"
  read -r -a large <<<"$(count "$side" 3000)"
  per() { echo $(((large[$1] - small[$1]) / 2000)); }
  if [ ${#sim[@]} -eq 0 ]; then
    echo "$side: $(per 0) instructions per request"
  else
    # Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
    i1=$(per 3) d1=$(($(per 4) + $(per 5))) ll=$(($(per 6) + $(per 7) + $(per 8)))
    echo "$side: $(per 0) instructions, $i1 L1i misses, $d1 L1d misses, $ll LL misses," \
      "$(($(per 0) + 10 * (i1 + d1) + 100 * ll)) estimated cycles per request"
  fi
done
