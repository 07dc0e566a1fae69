#!/usr/bin/env bash
# Device session 6: loaders suite (3 variants x 2 loaders x 3 repeats), the MNIST tutorial cell, then the
# positions suite for the time that is left (SIGTERM ends the running run KILLED; a re-run resumes).
# Continues the tracking store of session 5 (.device/mlflow.db).
set -uo pipefail
start=$(date +%s)
cp .device/mlflow.db "$OUT/mlflow.db"
U="sqlite:///$OUT/mlflow.db"
python3 -m vitbench suite experiments/loaders.yaml --tracking-uri "$U" 2>&1 | grep -vE "^skip"
python3 -m vitbench suite experiments/tutorials.yaml --cells mnist-torch-mha-notebook --tracking-uri "$U" 2>&1
left=$(( 565 - ($(date +%s) - start) ))
echo "positions: $left s left"
[ "$left" -gt 30 ] && timeout "$left" python3 -m vitbench suite experiments/positions.yaml --tracking-uri "$U" 2>&1
echo "exit $?"
