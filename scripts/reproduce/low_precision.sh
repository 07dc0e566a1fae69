#!/usr/bin/env bash
# Reproduces results/low_precision.md: fp8 (torchao's float8 training of the Linear layers) and fp16 beside bf16 --
# training throughput and MFU at ViT-S/16 and ViT-B/16 against timm converted the same way, the train step's
# forward / backward / optimizer split (bench --detail), and fp8's accuracy cost on the mnist-fast options.
# GPU: one H200 or H100; in parts:
#   bash scripts/reproduce/low_precision.sh accuracy        # suite experiments/fp8.yaml (bf16 vs fp8, 5 seeds) + report
#   bash scripts/reproduce/low_precision.sh accuracy fp8_10s   # the same on the mnist-10s recipe's options
#   bash scripts/reproduce/low_precision.sh accuracy fp8_strong   # mnist-strong's (REPEATS=N: fewer seeds; a store
#                                             # already in $OUT/mlflow.db keeps its FINISHED runs)
#   bash scripts/reproduce/low_precision.sh speed vit-s16   # -> $OUT/low_precision_vit-s16_{bf16,fp8}.csv
#   PEERS=1 bash scripts/reproduce/low_precision.sh speed vit-b16   # the same with timm's rows (converted alike)
#   bash scripts/reproduce/low_precision.sh detail          # -> $OUT/low_precision_detail_{bf16,fp16,fp8}.csv (ViT-B/16)
set -uo pipefail
OUT=${OUT:-.}
U="sqlite:///$OUT/mlflow.db"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton, torchao; print('torch', torch.__version__, 'triton', triton.__version__, 'torchao', torchao.__version__)"
echo "commit: ${VITBENCH_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"
BENCH=(python3 -m vitbench bench --variants sdpa --attention sdpa --patchify unfold --batch-sizes 256 --compile
       --mode train --warmup 5 --repeats 30 --max-seconds 20 --tracking-uri "$U" --quiet)
case "${1:-accuracy}" in
accuracy)
  SUITE=${2:-fp8} NAME=${2:-fp8}; NAME=${NAME//_/-}  # the suite's experiment is its name: fp8_10s.yaml -> fp8-10s
  python3 -m vitbench suite "experiments/$SUITE.yaml" ${REPEATS:+--repeats "$REPEATS"} --tracking-uri "$U" --quiet 2>&1 \
    | grep -vE "^(W|I)[0-9]{4}"
  python3 -m vitbench report --experiment "$NAME" --out "$OUT/${SUITE}_report" --tracking-uri "$U" 2>&1 | tail -2
  sed -n 1,40p "$OUT/${SUITE}_report/REPORT.md" ;;
speed)
  for P in bf16 fp8; do
    "${BENCH[@]}" --preset "${2:-vit-b16}" ${PEERS:+--peers timm} --precision $P --out "$OUT/low_precision_${2:-vit-b16}_$P.csv" \
      2>&1 | grep -vE "^\s+(sdpa|timm)|^(W|I)[0-9]{4}"
  done ;;
detail)
  for P in bf16 fp16 fp8; do
    "${BENCH[@]}" --preset vit-b16 --precision $P --detail --out "$OUT/low_precision_detail_$P.csv" \
      2>&1 | grep -vE "^\s+(sdpa|timm)|^(W|I)[0-9]{4}"
  done ;;
esac
