#!/usr/bin/env bash
# Reproduces the choice of vitbench/recipe_files/mnist-fast.yaml and mnist-strong.yaml, on a held-out 10% of
# the training set (never the test set). GPU: one H100. Log: results/logs/recipes.txt.
#   bash scripts/reproduce/recipes.sh     # -> $OUT/mlflow.db, $OUT/recipes_strong_dim{96,128}.csv
# 1) mnist-fast with torch.compile inside the CUDA graph: batch / lr candidates.
# 2) a stronger MNIST recipe: patch 4, random-crop augmentation; epochs sized from a bench of the
#    candidate shapes so that training fits in about 25 s, then scored on the held-out split.
set -uo pipefail
U="sqlite:///$OUT/mlflow.db"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
fast="--variant sdpa --attention vectorized --patchify unfold --precision bf16 --compile --warmup-epochs 0.5 --val-split 0.1"
for c in "--batch-size 512 --lr 8e-3" "--batch-size 256 --lr 4e-3" "--batch-size 256 --lr 6e-3" "--batch-size 384 --lr 6e-3"; do
  echo "== fast $c"
  python3 -m vitbench run $fast $c --experiment tune-fast --tracking-uri "$U" 2>&1 | grep -E "^done|rror"
done
strong="--variant sdpa --attention sdpa --patchify unfold --patch-size 4 --depth 6 --heads 4 --precision bf16 --compile"
for dim in 96 128; do
  python3 -m vitbench bench --variants sdpa --attention sdpa --patchify unfold --patch-size 4 --depth 6 --heads 4 \
    --dim $dim --mlp-dim $((2 * dim)) --preset mnist --batch-sizes 512 --precision bf16 --compile --mode train \
    --warmup 3 --repeats 20 --out "$OUT/recipes_strong_dim$dim.csv" --tracking-uri "$U" 2>&1 | grep -E "^  sdpa|rror"
done
epochs_for() {  # epochs of 60,000 images that fit in 25 s at the benched rate (at most 60)
  python3 -c "import csv; r=next(csv.DictReader(open('$OUT/recipes_strong_dim$1.csv'))); print(min(60, int(25 * float(r['train_samples_per_sec']) / 60000)))"
}
for c in "96 3e-3" "128 2e-3" "128 4e-3"; do
  set -- $c; e=$(epochs_for $1)
  echo "== strong dim $1 lr $2 epochs $e"
  python3 -m vitbench run $strong --dim $1 --mlp-dim $(($1 * 2)) --lr $2 --epochs $e --batch-size 512 \
    --augment crop --weight-decay 0.05 --warmup-epochs 2 --label-smoothing 0.1 --val-split 0.1 \
    --experiment tune-strong --tracking-uri "$U" 2>&1 | grep -E "^done|rror"
done
