#!/usr/bin/env bash
# Reproduces results/frontier.md: test accuracy against training seconds on MNIST, `run --recipe R --time-budget T`
# with the schedule fitted to T (the default --budget-mode fit), each budget and seed in a fresh process.
# GPU: any CUDA GPU.
#   bash scripts/reproduce/frontier.sh   # RECIPE (mnist-budget), BUDGETS (1 3 10 30 100 300), SEEDS (0 1 2)
#                                        # -> $OUT/frontier.db, frontier.png and the table
# RECIPE=mnist-fast needs "--epochs 100000 --warmup-epochs 10000" in ARGS: --epochs only bounds a fitted schedule,
# and the warm-up, fitted in proportion, keeps the recipe's share (0.5 of 5); mnist-budget's tiers say so themselves.
# RECIPE= (empty) runs ARGS alone, e.g. timm's ViT-Ti at the same budgets, in mnist-10s's 4-px patches and with its
# training options (timm's model brings its own sizes, CLS pooling and learned positions):
#   RECIPE= ARGS="--variant timm:vit_tiny_patch16_224 --patch-size 4 --precision bf16 --compile --batch-size 512
#   --lr 2e-3 --weight-decay 0.05 --label-smoothing 0.1 --augment crop --epochs 100000 --warmup-epochs 2326"
#   bash scripts/reproduce/frontier.sh
NAME=frontier source "$(dirname "$0")/mnist_fast_env.sh"  # $OUT, $W, $U, $REPO; the compile cache warmed
RECIPE=${RECIPE-mnist-budget}
for budget in ${BUDGETS:-1 3 10 30 100 300}; do
  for seed in ${SEEDS:-0 1 2}; do
    python3 -m vitbench run ${RECIPE:+--recipe "$RECIPE"} ${ARGS:-} --time-budget "$budget" --seed "$seed" \
      --experiment frontier --tracking-uri "$U" --quiet 2>&1 | grep -iE "^(done|error)"
  done
done
python3 "$REPO/scripts/reproduce/frontier_table.py" frontier "$OUT/frontier.png" "$U"
