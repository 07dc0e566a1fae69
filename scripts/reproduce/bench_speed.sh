#!/usr/bin/env bash
# Reproduces results/bench_speed_bf16_compile.csv: both presets in one invocation, the two fastest
# implementations compiled inside the CUDA-graph step, timm eager / compiled / compiled in the same step,
# bf16, batch 1024. GPU: one H100. Its log, results/logs/bench_speed_bf16_compile.txt,
# also holds a first test-set pass of the recipes (3 seeds each), made again by speed.sh.
#   bash scripts/reproduce/bench_speed.sh     # -> $OUT/bench_speed_bf16_compile.csv
set -uo pipefail
U="sqlite:///$OUT/mlflow.db"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -m vitbench bench --variants sdpa --attention vectorized,sdpa --patchify unfold --preset mnist,cifar10 \
  --peers timm --batch-sizes 1024 --precision bf16 --compile --mode train --warmup 5 --repeats 50 --max-seconds 10 \
  --out "$OUT/bench_speed_bf16_compile.csv" --tracking-uri "$U" 2>&1 | grep -vE "^\s+(sdpa|timm)"
