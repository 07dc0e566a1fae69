#!/usr/bin/env bash
# Reproduces results/mnist/ (REPORT.md, summary.csv, plots): the attention, patchify, positions and loaders
# suites on MNIST, 3 repeats each, and the nn.MultiheadAttention tutorial cell. GPU: one H100. In two halves; the
# second continues the first's store:
#   bash scripts/reproduce/mnist.sh a            # attention + patchify              -> $OUT/mnist.db
#   STORE_IN=mnist.db bash scripts/reproduce/mnist.sh b   # positions + loaders + tutorial cell -> $OUT/mnist.db
# then, on any machine with the store:
#   vitbench report --experiment attention,patchify,positions,loaders,tutorials \
#     --tracking-uri sqlite:///mnist.db --out results/mnist
set -uo pipefail
W=${W:-/tmp/mnist}
OUT=${OUT:-.}
mkdir -p "$W"
[ -n "${STORE_IN:-}" ] && cp "$STORE_IN" "$W/mnist.db"
U="sqlite:///$W/mnist.db"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
suite() { python3 -m vitbench suite "$@" --tracking-uri "$U" 2>&1 | grep -vE "^skip"; }
case "${1:-}" in
a) suite experiments/attention.yaml; suite experiments/patchify.yaml ;;
b) suite experiments/positions.yaml; suite experiments/loaders.yaml
   suite experiments/tutorials.yaml --cells mnist-torch-mha-notebook ;;
*) echo "usage: $0 a|b" >&2; exit 2 ;;
esac
cp "$W/mnist.db" "$OUT/mnist.db"
