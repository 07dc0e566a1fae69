#!/usr/bin/env bash
# Device session 7: re-run the loaders suite (its FINISHED cells are skipped) after the capture fix.
set -uo pipefail
cp .device/mlflow.db "$OUT/mlflow.db"
python3 -m vitbench suite experiments/loaders.yaml --tracking-uri "sqlite:///$OUT/mlflow.db" 2>&1 | grep -vE "^skip"
