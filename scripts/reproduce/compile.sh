#!/usr/bin/env bash
# Reproduces the compile figures in README.md (`--compile` inside the CUDA graph: training time of the
# mnist-fast configuration on a held-out split, first and cached compile times) and
# results/logs/compile_{mnist,cifar10}_bf16.csv. GPU: one H100.
# mnist-fast with and without --compile (held-out split, never the test set), then a bf16 bench at
# batch 1024 of the two fastest implementations compiled, with timm peers.
#   bash scripts/reproduce/compile.sh     # -> $OUT/compile_PRESET_bf16.csv; log: results/logs/compile.txt
set -uo pipefail
U="sqlite:///$OUT/mlflow.db"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
for args in "--no-compile" "--compile" "--compile --batch-size 1024" "--compile --batch-size 1024 --lr 1.2e-2"; do
  echo "== mnist-fast $args"
  python3 -m vitbench run --recipe mnist-fast $args --val-split 0.1 --experiment probe --tracking-uri "$U" 2>&1 \
    | grep -E "^(done|note|warm|Error)|rror" | head -5
done
for preset in mnist cifar10; do
  python3 -m vitbench bench --variants sdpa --attention vectorized,sdpa --patchify unfold --preset $preset \
    --peers timm --batch-sizes 1024 --precision bf16 --compile --mode train --warmup 3 --repeats 20 --max-seconds 4 \
    --out "$OUT/compile_${preset}_bf16.csv" --tracking-uri "$U" 2>&1 | tail -12
done
