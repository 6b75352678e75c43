#!/usr/bin/env bash
# The suite's own regression check: gd on the offline digits stream at the tiny budget (float32, as every profile),
# compared with the committed reference.
# Refresh the reference (after an intended change of results) with:  bash benchmarks/regression_check.sh --update
set -euo pipefail
cd "$(dirname "$0")/.."
reference=benchmarks/reference/digits-5-tiny-gd-seed0.json
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# A cache of its own: an evaluation classifier cached by an earlier run (at another thread count, say) differs from
# a fresh one by rounding, which would move the numbers this check compares.
export CLDIFF_BENCH_CACHE="$out/cache"
cldiff-bench run --strategy gd --stream digits-5 --profile tiny --seed 0 --no-progress --out "$out" >/dev/null
result="$out/digits-5/tiny/gd/seed0/result.json"
if [ "${1:-}" = "--update" ]; then
  cp "$result" "$reference"
  echo "reference updated: $reference"
  exit 0
fi
cldiff-bench check "$result" --against "$reference" --all-tasks
