#!/usr/bin/env bash
# Reproduces results/step_breakdown.md: where a ViT-S/16 training step goes with PyTorch's fused attention (sdpa)
# and with ours (triton), by kind of kernel: `bench --profile` (torch.profiler over 5 more steps of the timed step),
# then `report`'s "Where the step goes". GPU: any CUDA GPU.
#   bash scripts/reproduce/step_breakdown.sh   # -> $OUT/step_breakdown.db, .csv, $OUT/step_breakdown/REPORT.md
set -uo pipefail
OUT=${OUT:-.}
U="sqlite:///$(mkdir -p "$OUT" && cd "$OUT" && pwd)/step_breakdown.db"
unset PYTHONDONTWRITEBYTECODE
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -m vitbench bench --variants sdpa --attention sdpa,triton --patchify unfold --preset vit-s16 --batch-sizes 256 \
  --precision bf16 --compile --mode train --warmup 5 --repeats 20 --max-seconds 15 --profile 5 \
  --out "$OUT/step_breakdown.csv" --tracking-uri "$U" --quiet
python3 -m vitbench report --experiment vitbench-bench --tracking-uri "$U" --out "$OUT/step_breakdown"
