#!/usr/bin/env bash
# The published leaderboard: all built-in strategies x 3 seeds on real Fashion-MNIST at the `small` profile,
# then the leaderboard built from the result files. Resumable: run it again after an interruption and finished
# cells are skipped, unfinished ones continue from their checkpoints.
#   bash benchmarks/fmnist_small_sweep.sh DATA_ROOT [PARALLEL]
# PARALLEL runs that many cells at once with one thread each (default 2, one per core of a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
data_root=${1:?usage: bash benchmarks/fmnist_small_sweep.sh DATA_ROOT [PARALLEL]}
parallel=${2:-2}
out=leaderboard/results
mkdir -p "$out"
cells=()
for seed in 0 1 2; do
  for strategy in naive joint gr gd lwf gaussian; do
    cells+=("$strategy $seed")
  done
done
printf '%s\n' "${cells[@]}" | OMP_NUM_THREADS=1 xargs -P "$parallel" -L 1 bash -c '
  cldiff-bench run --strategy "$0" --seed "$1" --stream fmnist-5 --profile small --data-root "'"$data_root"'" \
    --out "'"$out"'" --resume --checkpoint-every 100 --no-progress \
    > "'"$out"'/log-$0-seed$1.txt" 2>&1 && echo "done: $0 seed $1" || echo "FAILED: $0 seed $1 (see its log)"'
echo "cells finished in $((SECONDS / 60)) min (this invocation)"
cldiff-bench leaderboard "$out" -o leaderboard --produced-by "bash benchmarks/fmnist_small_sweep.sh DATA_ROOT"
