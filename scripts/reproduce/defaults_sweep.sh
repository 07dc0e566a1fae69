#!/usr/bin/env bash
# Reproduces the defaults of TrainConfig (vitbench/config.py): a 24-trial MNIST sweep of the training
# options on a held-out 10% of the training set, never the test set. GPU: one H100.
# Its log, results/logs/defaults_sweep.txt, also holds the cifar10 fp32 matrix run after it
# (now `bench_matrix.sh cifar10 fp32`).
#   bash scripts/reproduce/defaults_sweep.sh     # -> $OUT/optuna.db, $OUT/mlflow.db
set -uo pipefail
start=$(date +%s)
python3 -m vitbench sweep --variant sdpa --dataset mnist --n-trials 24 --space train-only \
  --val-split 0.1 --epochs 5 --pruner median --storage "sqlite:///$OUT/optuna.db" \
  --tracking-uri "sqlite:///$OUT/mlflow.db" 2>&1 | grep -vE "Warning|warn"
echo "sweep wall seconds: $(( $(date +%s) - start ))"
