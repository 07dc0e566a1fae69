#!/usr/bin/env bash
# Reproduces results/time_to_target.md: `run --recipe mnist-fast --target-acc 0.98`, the time to 98 % MNIST test
# accuracy measured by the run itself (the test set scored ten times an epoch, those checks not counted as training),
# seeds 0-2 (SEEDS), each in a fresh process, with the GPU's conditions over the timed training. GPU: any CUDA GPU.
#   bash scripts/reproduce/time_to_target.sh      # -> $OUT/time_to_target.db and the table on stdout
NAME=time_to_target source "$(dirname "$0")/mnist_fast_env.sh"  # $OUT, $W, $U, $REPO; the compile cache warmed
for seed in ${SEEDS:-0 1 2}; do
  python3 -m vitbench run --recipe mnist-fast --target-acc 0.98 --seed "$seed" --tracking-uri "$U" --quiet 2>&1 \
    | grep -E "^(done|note)"
done
python3 "$REPO/scripts/reproduce/time_to_target_table.py" "$U"
