#!/usr/bin/env bash
# The published fmnist-5 leaderboard: all built-in strategies x seeds 0, 1, 2 on real Fashion-MNIST, then the
# leaderboard built from the result files. Resumable: run it again after an interruption and finished cells are
# skipped, unfinished ones continue from their checkpoints.
#   bash benchmarks/fmnist_sweep.sh DATA_ROOT [PROFILE] [PARALLEL]
# PROFILE defaults to cpu; PARALLEL runs that many cells at once with one thread each (default 2, one per core of
# a 2-core machine). The sweep's wall time is measured and printed on the board.
set -euo pipefail
cd "$(dirname "$0")/.."
data_root=${1:?usage: bash benchmarks/fmnist_sweep.sh DATA_ROOT [PROFILE] [PARALLEL]}
profile=${2:-cpu}
parallel=${3:-2}
out=leaderboard/results
mkdir -p "$out"
# The evaluation classifier once, before the cells, so cells side by side do not each train it.
cldiff-bench train-evaluator --stream fmnist-5 --profile "$profile" --data-root "$data_root" --no-progress >/dev/null
cells=()
for seed in 0 1 2; do
  # the costliest first, so the two cells side by side take about as long as each other
  for strategy in gd gr gaussian lwf joint naive; do
    cells+=("$strategy $seed")
  done
done
started=$SECONDS
printf '%s\n' "${cells[@]}" | OMP_NUM_THREADS=1 xargs -P "$parallel" -L 1 bash -c '
  cldiff-bench run --strategy "$0" --seed "$1" --stream fmnist-5 --profile "'"$profile"'" --threads 1 \
    --data-root "'"$data_root"'" --out "'"$out"'" --resume --checkpoint-every 100 --no-progress \
    > "'"$out"'/log-$0-seed$1.txt" 2>&1 && echo "done: $0 seed $1" || echo "FAILED: $0 seed $1 (see its log)"'
minutes=$(( (SECONDS - started + 30) / 60 ))
echo "cells finished in $minutes min (this invocation)"
cldiff-bench leaderboard "$out" -o leaderboard --produced-by "bash benchmarks/fmnist_sweep.sh DATA_ROOT $profile \
(18 cells, $parallel at a time with one thread each on a $(nproc)-core CPU: $minutes min wall for this invocation)"
