#!/usr/bin/env bash
# Device sessions 2-3: the implementation matrix of issue 4 (4 attention x 3 patchify) with timm peers,
# at one preset and precision, batch 256 and 1024.  usage: run2_bench_matrix.sh PRESET PRECISION
set -uo pipefail
preset=$1; prec=$2
{
  python3 -m vitbench bench --variants sdpa --attention sdpa,torch-mha,vectorized,naive --patchify conv,unfold,loop \
    --preset "$preset" --peers timm --batch-sizes 256,1024 --precision "$prec" --warmup 3 --repeats 20 \
    --max-seconds 4 --out "$OUT/bench_${preset}_${prec}.csv" --tracking-uri "sqlite:///$OUT/mlflow.db" 2>&1 \
    | grep -vE "^\s+(sdpa|timm)"
}
