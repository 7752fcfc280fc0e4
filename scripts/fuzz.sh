#!/usr/bin/env bash
# Runs keygate's fuzz targets (fuzz/, cargo-fuzz on the nightly toolchain), each for a given
# time, and prints executions and coverage per target.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default: 60 s, every target)
#
# Environment:
#   FUZZ_RUNS=N        stop a target after N executions (or the time, whichever comes first)
#   FUZZ_MERGE=1       merge what the run found into fuzz/corpus/<target> and minimize it
#                      (cargo fuzz cmin); otherwise the committed corpus is read, never written
#   FUZZ_SANITIZER=s   address (default) or none
#
# Exits non-zero when a target crashes or breaks one of its invariants (the input is kept in
# fuzz/artifacts/<target>/); a slow machine only means fewer executions.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
sanitizer="${FUZZ_SANITIZER:-address}"

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

echo "==> building ${targets[*]} (sanitizer: $sanitizer)"
for target in "${targets[@]}"; do
  (cd fuzz && cargo +nightly fuzz build --sanitizer "$sanitizer" "$target")
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
summary="$work/summary"
printf '%-16s %14s %10s %8s %8s %8s\n' target executions exec/s cov ft corpus >"$summary"
failed=0

for target in "${targets[@]}"; do
  echo
  echo "==> $target for ${seconds}s${FUZZ_RUNS:+ or $FUZZ_RUNS runs}"
  committed="fuzz/corpus/$target"
  found="$work/$target"
  mkdir -p "$committed" "$found" "fuzz/artifacts/$target"
  args=(-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$PWD/fuzz/artifacts/$target/")
  [ -n "${FUZZ_RUNS:-}" ] && args+=(-runs="$FUZZ_RUNS")
  [ -f "fuzz/dicts/$target.dict" ] && args+=(-dict="$PWD/fuzz/dicts/$target.dict")
  log="$work/$target.log"
  # New inputs go to the first directory (a scratch one); the committed corpus is only read.
  if (cd fuzz && cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "$found" "$PWD/corpus/$target" -- "${args[@]}") >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed=1
    tail -n 60 "$log"
  fi
  executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)"
  last="$(grep -E '^#[0-9]+' "$log" | tail -n1 || true)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
  corp="$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")"
  echo "$target: $status, ${executions:-?} executions, ${rate:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}"
  echo "last: $last"
  printf '%-16s %14s %10s %8s %8s %8s %s\n' "$target" "${executions:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$status" >>"$summary"

  if [ "$status" = ok ] && [ "${FUZZ_MERGE:-0}" = 1 ]; then
    cp -n "$found"/* "$committed"/ 2>/dev/null || true
    (cd fuzz && cargo +nightly fuzz cmin --sanitizer "$sanitizer" "$target" "corpus/$target") >"$work/$target.cmin.log" 2>&1
    echo "$target: corpus minimized to $(find "$committed" -type f | wc -l) inputs"
  fi
done

echo
cat "$summary"
exit "$failed"
