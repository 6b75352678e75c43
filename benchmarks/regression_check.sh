#!/usr/bin/env bash
# The suite's own regression check: gd on the offline digits stream at the tiny budget, in float32 so the
# numbers do not depend on a CPU's bfloat16 support, compared with the committed reference.
# Refresh the reference (after an intended change of results) with:  bash benchmarks/regression_check.sh --update
set -euo pipefail
cd "$(dirname "$0")/.."
reference=benchmarks/reference/digits-5-tiny-gd-seed0.json
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cldiff-bench run --strategy gd --stream digits-5 --profile tiny --precision fp32 --seed 0 --no-progress --out "$out" >/dev/null
result="$out/digits-5/tiny/gd/seed0/result.json"
if [ "${1:-}" = "--update" ]; then
  cp "$result" "$reference"
  echo "reference updated: $reference"
  exit 0
fi
cldiff-bench check "$result" --against "$reference" --all-tasks
