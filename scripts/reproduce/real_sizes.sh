#!/usr/bin/env bash
# Reproduces results/real_sizes.md's tables: training throughput and model FLOP utilisation (MFU) at timm's
# ViT-S/16 and ViT-B/16 (224 px, batch 256, bf16), vitbench's sdpa (torch's attention and ours, nn's MLP and ours,
# unfold patchify)
# compiled inside its CUDA-graph step against timm eager, compiled, and compiled in the same step, in one process; and the
# README's first command on a GPU. GPU: one H200 or H100. One preset per call:
#   bash scripts/reproduce/real_sizes.sh vit-s16       # -> $OUT/real_sizes_vit-s16.csv (+ first command's time)
#   bash scripts/reproduce/real_sizes.sh vit-b16       # -> $OUT/real_sizes_vit-b16.csv
#   bash scripts/reproduce/real_sizes.sh patchify      # -> $OUT/real_sizes_patchify.csv: unfold vs conv, both sizes
#   bash scripts/reproduce/real_sizes.sh kernels       # where each size's step goes, kernel by kernel
#   bash scripts/reproduce/real_sizes.sh mlp-kernels   # the same with unfold patchify, nn's MLP against ours, and
#                                                      # the micro-benchmarks: our MLP kernels' launch shapes against
#                                                      # inductor's, torch's attention backends at these shapes
#   bash scripts/reproduce/real_sizes.sh attention     # our attention against cuDNN's, and its launch shapes
#   bash scripts/reproduce/real_sizes.sh attention-step  # ViT-B/16's step kernel by kernel with our attention and MLP
#   bash scripts/reproduce/real_sizes.sh tuning        # inductor's own-kernel tuning (coordinate descent, pointwise
#                                                      # autotune) against its defaults, unfold patchify, both sizes
#                                                      # -> $OUT/real_sizes_tuning_<preset>_<setting>.csv
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
mlp-kernels)
  for P in vit-b16 vit-s16; do
    for M in torch triton; do
      python3 scripts/reproduce/step_kernels.py --recipe none --dataset synthetic --preset $P --batch-size 256 \
        --precision bf16 --compile --attention sdpa --patchify unfold --mlp $M --replays 50 --top 22 2>&1 | grep -v Warning
    done
  done
  python3 scripts/reproduce/real_sizes_kernels.py mlp-tiles
  python3 scripts/reproduce/real_sizes_kernels.py attention
  exit ;;
attention)
  python3 scripts/reproduce/real_sizes_kernels.py attention-tiles
  exit ;;
attention-step)
  python3 scripts/reproduce/step_kernels.py --recipe none --dataset synthetic --preset vit-b16 --batch-size 256 \
    --precision bf16 --compile --attention triton --patchify unfold --mlp triton --replays 50 --top 22 2>&1 | grep -v Warning
  exit ;;
tuning)
  # each setting in a process of its own (inductor reads them when it is imported), the cache cold for each, so the
  # prompt-to-prompt time includes what the tuning costs at compile time
  for PT in vit-b16:default vit-b16:cdt vit-b16:cdt-pointwise vit-s16:default vit-s16:cdt; do
    P=${PT%%:*} S=${PT#*:}
    [[ $S == cdt* ]] && export TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1 || unset TORCHINDUCTOR_COORDINATE_DESCENT_TUNING
    [[ $S == *pointwise ]] && export TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE=1 || unset TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE
    export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-$P-$S
    start=$(date +%s.%N)
    timeout 170 python3 -m vitbench bench --variants sdpa --attention sdpa --patchify unfold --preset "$P" \
      --batch-sizes 256 --precision bf16 --compile --mode train --warmup 5 --repeats 30 --max-seconds 20 \
      --out "$OUT/real_sizes_tuning_${P}_$S.csv" --tracking-uri "$U" --quiet 2>&1 | grep -vE "^\s+(sdpa|timm)"
    echo "$P $S: $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s prompt to prompt"
  done
  exit ;;
esac
python3 -m vitbench bench --variants sdpa --attention sdpa,triton --patchify unfold --mlp torch,triton --preset "$PRESET" --peers timm \
  --batch-sizes 256 --precision bf16 --compile --mode train --warmup 5 --repeats 30 --max-seconds 20 \
  --out "$OUT/real_sizes_$PRESET.csv" --tracking-uri "$U" --quiet 2>&1 | grep -vE "^\s+(sdpa|timm)"
if [ "$PRESET" = vit-s16 ]; then  # the README's first command, prompt to prompt, on this GPU
  start=$(date +%s.%N)
  python3 -m vitbench run --variant naive-msa --dataset mnist --time-budget 60 --tracking-uri "$U" 2>&1 | tail -6
  echo "first command: $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s prompt to prompt"
fi
