#!/usr/bin/env bash
# Reproduces results/time_to_target.md: `run --recipe mnist-fast --target-acc 0.98`, the time to 98 % MNIST test
# accuracy measured by the run itself (the test set scored ten times an epoch, those checks not counted as training),
# seeds 0-2 (SEEDS), each in a fresh process, with the GPU's conditions over the timed training. GPU: any CUDA GPU.
#   bash scripts/reproduce/time_to_target.sh      # -> $OUT/time_to_target.db and the table on stdout
set -uo pipefail
OUT=${OUT:-.}
W=${W:-/tmp/time_to_target}
mkdir -p "$W" "$OUT"
unset PYTHONDONTWRITEBYTECODE  # bytecode caches, as every pip install has them (results/fresh_process.md)
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-$W/pycache}
REPO=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
U="sqlite:///$(cd "$OUT" && pwd)/time_to_target.db"
cd "$W" || exit 1
python3 -m vitbench run --recipe mnist-fast --max-steps 20 --tracking-uri "sqlite:///$W/warm.db" --quiet >/dev/null  # compile cache
for seed in ${SEEDS:-0 1 2}; do
  python3 -m vitbench run --recipe mnist-fast --target-acc 0.98 --seed "$seed" --tracking-uri "$U" --quiet 2>&1 \
    | grep -E "^(done|note)"
done
python3 "$REPO/scripts/reproduce/time_to_target_table.py" "$U"
