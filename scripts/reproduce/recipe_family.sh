#!/usr/bin/env bash
# Reproduces the choice in results/frontier.md of which model the recipe mnist-budget trains at which budget: the
# tutorial's model (mnist-fast's options) against mnist-10s's larger one, each with its schedule fitted to
# --time-budget T and scored on 10 % of the training set held out (never the test set), each in a fresh process.
# GPU: any CUDA GPU.
#   bash scripts/reproduce/recipe_family.sh   # BUDGETS (1 3 10 30), SEEDS (0 1) -> $OUT/recipe_family.db, the table
# CANDIDATES, one a line (a recipe and its options), puts others in the comparison, e.g. for budgets past 30 s:
#   BUDGETS="30 100 300" CANDIDATES=$'mnist-10s --warmup-epochs 2326\nmnist-10s --warmup-epochs 2326 --patch-drop 0.5' \
#   bash scripts/reproduce/recipe_family.sh
NAME=recipe_family source "$(dirname "$0")/mnist_fast_env.sh"  # $OUT, $W, $U, $REPO; the compile cache warmed
# --epochs only bounds a fitted schedule; --warmup-epochs keeps each recipe's share of warm-up (0.5 of 5, 1 of 43)
for budget in ${BUDGETS:-1 3 10 30}; do
  for seed in ${SEEDS:-0 1}; do
    while read -r candidate; do
      python3 -m vitbench run --recipe $candidate --epochs 100000 --val-split 0.1 --time-budget "$budget" \
        --seed "$seed" --experiment recipe_family --tracking-uri "$U" --quiet 2>&1 </dev/null | grep -iE "^(done|error)"
    done <<<"${CANDIDATES:-$'mnist-fast --warmup-epochs 10000\nmnist-10s --warmup-epochs 2326'}"
  done
done
python3 "$REPO/scripts/reproduce/frontier_table.py" recipe_family "$OUT/recipe_family.png" "$U"
