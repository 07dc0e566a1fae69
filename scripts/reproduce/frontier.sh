#!/usr/bin/env bash
# Reproduces results/frontier.md: test accuracy against training seconds on MNIST, `run --recipe mnist-fast
# --time-budget T` with the schedule fitted to T (the default --budget-mode fit), each budget and seed in a fresh
# process. GPU: any CUDA GPU.
#   bash scripts/reproduce/frontier.sh        # BUDGETS (1 3 10 30 100 300), SEEDS (0 1 2) -> $OUT/frontier.db, table
set -uo pipefail
OUT=${OUT:-.}
W=${W:-/tmp/frontier}
mkdir -p "$W" "$OUT"
unset PYTHONDONTWRITEBYTECODE  # bytecode caches, as every pip install has them (results/fresh_process.md)
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-$W/pycache}
REPO=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
U="sqlite:///$(cd "$OUT" && pwd)/frontier.db"
cd "$W" || exit 1
python3 -m vitbench run --recipe mnist-fast --max-steps 20 --tracking-uri "sqlite:///$W/warm.db" --quiet >/dev/null  # compile cache
for budget in ${BUDGETS:-1 3 10 30 100 300}; do
  for seed in ${SEEDS:-0 1 2}; do
    python3 -m vitbench run --recipe mnist-fast --epochs 100000 --time-budget "$budget" --seed "$seed" --experiment frontier \
      --tracking-uri "$U" --quiet 2>&1 | grep -E "^(done|error)"
  done
done
python3 "$REPO/scripts/reproduce/frontier_table.py" "$U"
