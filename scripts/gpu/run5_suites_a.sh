#!/usr/bin/env bash
# Device session 5: attention and patchify suites on MNIST (3 repeats), then candidates for a fast
# MNIST recipe (issue 7), chosen on a held-out 10% of the training set and only then run on the test set.
set -uo pipefail
U="sqlite:///$OUT/mlflow.db"
python3 -m vitbench suite experiments/attention.yaml --tracking-uri "$U" 2>&1 | grep -vE "^skip"
python3 -m vitbench suite experiments/patchify.yaml --tracking-uri "$U" 2>&1 | grep -vE "^skip"
fast="--variant sdpa --attention vectorized --patchify unfold --batch-size 512 --precision bf16 --warmup-epochs 0.5"
best=""; best_acc=0
for lr in 3e-3 5e-3 8e-3; do
  line=$(python3 -m vitbench run $fast --lr $lr --val-split 0.1 --experiment speed-candidates --tracking-uri "$U" 2>&1 | grep "^done")
  echo "lr $lr: $line"
  acc=$(echo "$line" | sed -E 's/.*val_acc ([0-9.]+).*/\1/')
  if python3 -c "import sys; sys.exit(0 if $acc > $best_acc else 1)"; then best=$lr; best_acc=$acc; fi
done
echo "chosen on the held-out split: lr $best (val_acc $best_acc)"
for seed in 0 1 2; do
  python3 -m vitbench run $fast --lr $best --seed $seed --experiment speed --run-name "mnist-fast-s$seed" \
    --tracking-uri "$U" 2>&1 | grep "^done"
done
