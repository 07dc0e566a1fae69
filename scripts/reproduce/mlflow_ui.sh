#!/usr/bin/env bash
# Reproduces docs/mlflow_runs.png and docs/mlflow_compare.png: the MLflow UI's runs table and its compare view
# of two attention implementations, from a small CPU suite on real MNIST (no GPU needed; ~2-4 min on 2 cores).
# Needs Debian's chromium and MNIST in ./data/MNIST/raw (or DATA=folder holding MNIST/raw).
#   bash scripts/reproduce/mlflow_ui.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d)
DATA=$(cd "${DATA:-$ROOT/data}" && pwd)
PORT=${PORT:-5079}
cd "$W"
cat > attention-ui.yaml <<'YAML'
name: attention-ui
description: "sdpa vs vectorized attention on MNIST, 600 steps each on a CPU: what the MLflow UI shows."
dataset: mnist
repeats: 1
train: {epochs: 1, batch_size: 64, max_steps: 600, device: cpu, loader: gpu}
grid: {attention: [sdpa, vectorized]}
YAML
python -m vitbench suite attention-ui.yaml --data-dir "$DATA" --quiet
python -m vitbench report --experiment attention-ui
python -m mlflow server --backend-store-uri "sqlite:///$W/mlflow.db" --host 127.0.0.1 --port "$PORT" --workers 1 \
  >server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER' EXIT
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 1; done
read -r EXP IDS < <(python "$ROOT/scripts/reproduce/mlflow_ui_runs.py")
shot() { chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="$3" \
  --virtual-time-budget=20000 --screenshot="$1" "$2" 2>/dev/null; }
shot "$ROOT/docs/mlflow_runs.png" "http://127.0.0.1:$PORT/#/experiments/$EXP/runs?viewStateShareKey=vitbench" 1900,700
# tall: below the plot, the parameters and metrics of the two runs side by side
shot "$ROOT/docs/mlflow_compare.png" "http://127.0.0.1:$PORT/#/compare-runs?runs=$IDS&experiments=[\"$EXP\"]" 1500,2600
echo "wrote $ROOT/docs/mlflow_runs.png and $ROOT/docs/mlflow_compare.png from $W/mlflow.db"
