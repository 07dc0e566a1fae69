#!/usr/bin/env bash
# Reproduces results/bench_PRESET_PRECISION.csv (bench_mnist_fp32.csv, bench_mnist_bf16.csv,
# bench_cifar10_fp32.csv, bench_cifar10_bf16.csv): the implementation matrix (4 attention x 3 patchify)
# with timm peers, at one preset and precision, batch 256 and 1024. GPU: one H100.
#   bash scripts/reproduce/bench_matrix.sh PRESET PRECISION     # -> $OUT/bench_PRESET_PRECISION.csv
set -uo pipefail
preset=$1; prec=$2
{
  python3 -m vitbench bench --variants sdpa --attention sdpa,torch-mha,vectorized,naive --patchify conv,unfold,loop \
    --preset "$preset" --peers timm --batch-sizes 256,1024 --precision "$prec" --warmup 3 --repeats 20 \
    --max-seconds 4 --out "$OUT/bench_${preset}_${prec}.csv" --tracking-uri "sqlite:///$OUT/mlflow.db" 2>&1 \
    | grep -vE "^\s+(sdpa|timm)"
}
