#!/usr/bin/env bash
# Reproduces results/speed/ (the recipes on the test set, 3 seeds each) and results/precision/ (fp32 vs bf16,
# eager step vs torch.compile, on the mnist-fast configuration). GPU: one H100.
#   bash scripts/reproduce/speed.sh            # -> $OUT/speed.db
# then, on any machine with the store:
#   vitbench report --experiment speed --tracking-uri sqlite:///speed.db --out results/speed
#   vitbench report --experiment precision --tracking-uri sqlite:///speed.db --out results/precision
set -uo pipefail
W=${W:-/tmp/speed}
OUT=${OUT:-.}
mkdir -p "$W"
U="sqlite:///$W/speed.db"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for recipe in mnist-fast mnist-strong; do
  for seed in 0 1 2; do
    python3 -m vitbench run --recipe "$recipe" --seed "$seed" --experiment speed --quiet --tracking-uri "$U" 2>&1 \
      | grep -E "^done|rror" | sed "s/^/$recipe seed $seed: /"
  done
done
python3 -m vitbench suite experiments/precision.yaml --tracking-uri "$U" 2>&1 | grep -vE "^skip"
cp "$W/speed.db" "$OUT/speed.db"
