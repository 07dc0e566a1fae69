#!/usr/bin/env bash
# One preset, fp32 then bf16 (issue 4's matrix).  usage: run3_bench_both.sh PRESET
set -uo pipefail
for prec in fp32 bf16; do bash "$(dirname "$0")/run2_bench_matrix.sh" "$1" "$prec"; done
