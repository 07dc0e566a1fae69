#!/usr/bin/env bash
# Device session 6: issue 7 on the official test set, with the recipes chosen by run9_tune_recipes.sh,
# 3 seeds each; then targets 2 and 3 in one bench invocation (both presets, timm peers, bf16, compiled).
set -uo pipefail
U="sqlite:///$OUT/mlflow.db"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for recipe in mnist-fast mnist-strong; do
  for seed in 0 1 2; do
    python3 -m vitbench run --recipe $recipe --seed $seed --experiment speed --run-name "$recipe-s$seed" \
      --tracking-uri "$U" 2>&1 | grep -E "^done|rror" | sed "s/^/$recipe seed $seed: /"
  done
done
python3 -m vitbench bench --variants sdpa --attention vectorized,sdpa --patchify unfold --preset mnist,cifar10 \
  --peers timm --batch-sizes 1024 --precision bf16 --compile --mode train --warmup 5 --repeats 50 --max-seconds 10 \
  --out "$OUT/bench_speed_bf16_compile.csv" --tracking-uri "$U" 2>&1 | grep -vE "^\s+(sdpa|timm)"
