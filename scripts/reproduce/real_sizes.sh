#!/usr/bin/env bash
# Reproduces results/real_sizes.md's tables: training throughput and model FLOP utilisation (MFU) at timm's
# ViT-S/16 and ViT-B/16 (224 px, batch 256, bf16), vitbench's fastest implementations compiled inside its
# CUDA-graph step against timm eager, compiled, and compiled in the same step; and the README's first command
# on a GPU. GPU: one H200 or H100 (device kind nvidia-h200). One preset per call keeps each inside 10 minutes:
#   bash scripts/reproduce/real_sizes.sh vit-s16       # -> $OUT/real_sizes_vit-s16.csv (+ first command's time)
#   bash scripts/reproduce/real_sizes.sh vit-b16       # -> $OUT/real_sizes_vit-b16.csv
#   bash scripts/reproduce/real_sizes.sh patchify      # -> $OUT/real_sizes_patchify.csv: unfold vs conv, both sizes
#   bash scripts/reproduce/real_sizes.sh kernels       # where each size's step goes, kernel by kernel
set -uo pipefail
OUT=${OUT:-.}
PRESET=${1:-vit-s16}
U="sqlite:///$OUT/mlflow.db"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
git rev-parse --short HEAD 2>/dev/null || echo "commit: ${VITBENCH_GIT_COMMIT:-unknown}"
case "$PRESET" in
patchify)
  python3 -m vitbench bench --variants sdpa --attention sdpa --patchify unfold,conv --preset vit-s16,vit-b16 \
    --batch-sizes 256 --precision bf16 --compile --mode train --warmup 5 --repeats 30 --max-seconds 20 \
    --out "$OUT/real_sizes_patchify.csv" --tracking-uri "$U" --quiet 2>&1 | grep -vE "^\s+(sdpa|timm)"
  exit ;;
kernels)
  for P in vit-b16 vit-s16; do
    python3 scripts/reproduce/step_kernels.py --recipe none --dataset synthetic --preset $P --batch-size 256 \
      --precision bf16 --compile --attention sdpa --replays 50 --top 14 2>&1 | grep -v Warning
  done
  exit ;;
esac
python3 -m vitbench bench --variants sdpa --attention sdpa,flex --patchify conv --preset "$PRESET" --peers timm \
  --batch-sizes 256 --precision bf16 --compile --mode train --warmup 5 --repeats 30 --max-seconds 20 \
  --out "$OUT/real_sizes_$PRESET.csv" --tracking-uri "$U" --quiet 2>&1 | grep -vE "^\s+(sdpa|timm)"
if [ "$PRESET" = vit-s16 ]; then  # the README's first command, prompt to prompt, on this GPU
  start=$(date +%s.%N)
  python3 -m vitbench run --variant naive-msa --dataset mnist --time-budget 60 --tracking-uri "$U" 2>&1 | tail -6
  echo "first command: $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s prompt to prompt"
fi
