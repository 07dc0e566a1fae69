#!/usr/bin/env bash
# Device session 4: a real MNIST sweep (issue 5; tunes the run defaults on a held-out 10% of the
# training set, never the test set), then the cifar10 fp32 implementation matrix (issue 4).
set -uo pipefail
start=$(date +%s)
python3 -m vitbench sweep --variant sdpa --dataset mnist --n-trials 24 --space experiments/spaces/train-only.yaml \
  --val-split 0.1 --epochs 5 --pruner median --storage "sqlite:///$OUT/optuna.db" \
  --tracking-uri "sqlite:///$OUT/mlflow.db" 2>&1 | grep -vE "Warning|warn"
echo "sweep wall seconds: $(( $(date +%s) - start ))"
bash "$(dirname "$0")/run2_bench_matrix.sh" cifar10 fp32
