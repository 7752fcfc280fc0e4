#!/usr/bin/env bash
# Measures keygate's constant-time claims with dudect (benches/constant_time.rs, release build).
#
#   scripts/constant_time.sh [samples-per-class] [filter]     (default: 2000000, every bench)
#
# Prints, per bench, the class sizes and dudect's max |t| (|t| < 5: the two classes are not told
# apart by timing at this sample size). The timings are wall-clock: run it on a quiet machine,
# and repeat a bench whose |t| is near 5 before reading anything into it.
set -euo pipefail
cd "$(dirname "$0")/.."

export KEYGATE_CT_SAMPLES="${1:-2000000}"
filter="${2:-}"

cargo bench --bench constant_time --no-run
# Run the bench binary directly: `cargo bench` would add its own arguments.
binary="$(cargo bench --bench constant_time --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*constant_time[^"]*\)".*/\1/p' | tail -n1)"
if [ -z "$binary" ]; then
  echo "constant_time.sh: bench binary not found" >&2
  exit 1
fi
echo "==> $KEYGATE_CT_SAMPLES samples per class (about: classes are drawn at random)"
"$binary" ${filter:+"$filter"}
