#!/usr/bin/env bash
# Reproduces results/speed.md's time-to-accuracy sections (issue 15). GPU: one H100.
#   bash scripts/reproduce/time_to_accuracy.sh kernels  # the attention implementations (flex and our Triton kernel
#                                                       # included) against timm, both presets, batch 1024, bf16,
#                                                       # compiled in the same CUDA-graph step -> $OUT/kernels.csv
#   bash scripts/reproduce/time_to_accuracy.sh wall     # `vitbench run --recipe mnist-fast` from the prompt back to
#                                                       # the prompt in a fresh folder, with its breakdown: 3 times
#                                                       # in a process of its own (VITBENCH_WARM=off; the first
#                                                       # with a cold compile cache and a new store), then 5 times
#                                                       # as a user gets it (the first starts the warm process),
#                                                       # then 2 in a second warm process
#   bash scripts/reproduce/time_to_accuracy.sh step     # where the mnist-fast step spends its GPU time (CUDA-graph
#                                                       # replay time, then its kernels), batch 512 and 384
#   bash scripts/reproduce/time_to_accuracy.sh search   # experiments/mnist_fast_search.yaml and mnist_10s_search.yaml:
#                                                       # candidates scored on a held-out 10% of the training set
#                                                       # -> $OUT/search.db, $OUT/search10.db
#                                                       # (SEARCHES: mnist_fast mnist_10s; CELLS: all, or a
#                                                       # comma-separated list of cell names; REPEATS: the
#                                                       # suite's, or this many seeds)
#   bash scripts/reproduce/time_to_accuracy.sh seeds    # the chosen recipes on the test set, seeds 0-4
#                                                       # (RECIPES: mnist-fast mnist-10s; SEEDS: 0 1 2 3 4) -> $OUT/seeds.db
set -uo pipefail
W=${W:-/tmp/tta}
OUT=${OUT:-.}
REPO=$PWD
mkdir -p "$W"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
part=${1:?kernels, wall, step, search or seeds}

if [ "$part" = kernels ]; then
  python3 -m vitbench bench --variants sdpa --attention vectorized,sdpa,flex,triton --patchify unfold \
    --preset mnist,cifar10 --peers timm --batch-sizes 1024 --precision bf16 --compile --mode train --warmup 5 \
    --repeats 30 --max-seconds 5 --out "$OUT/kernels.csv" --tracking-uri "sqlite:///$W/kernels.db" 2>&1 \
    | grep -vE "^\s+(sdpa|timm)"
elif [ "$part" = wall ]; then
  mkdir -p "$W/wall" && cd "$W/wall" || exit 1
  TIMEFORMAT="prompt to prompt: %R s"
  python3 -m vitbench warm --stop >/dev/null
  for seed in 0 1 2; do
    echo "-- VITBENCH_WARM=off, seed $seed"
    time VITBENCH_WARM=off python3 -m vitbench run --recipe mnist-fast --seed "$seed" ${WALL_ARGS:-} 2>&1 \
      | grep -E "^done|^wall|rror"
  done
  for seed in 0 1 2 3 4; do
    echo "-- default (VITBENCH_WARM=auto), seed $seed"
    time python3 -m vitbench run --recipe mnist-fast --seed "$seed" ${WALL_ARGS:-} 2>&1 \
      | grep -E "^done|^wall|rror|warm process"
  done
  python3 -m vitbench warm --stop
  echo "-- a new warm process (vitbench warm --start), its first two commands"
  sleep 2 && python3 -m vitbench warm --start
  for seed in 5 6; do
    time python3 -m vitbench run --recipe mnist-fast --seed "$seed" ${WALL_ARGS:-} 2>&1 | grep -E "^done|^wall|rror"
  done
  python3 -m vitbench warm --stop
  cd "$REPO" || exit 1
elif [ "$part" = step ]; then
  python3 scripts/reproduce/step_kernels.py --recipe mnist-fast --batch-size 512
  python3 scripts/reproduce/step_kernels.py --recipe mnist-fast --batch-size 384 --top 0
elif [ "$part" = search ]; then
  for search in ${SEARCHES:-mnist_fast mnist_10s}; do
    db=$([ "$search" = mnist_fast ] && echo search.db || echo search10.db)
    python3 -m vitbench suite "experiments/${search}_search.yaml" ${CELLS:+--cells "$CELLS"} ${REPEATS:+--repeats "$REPEATS"} \
      --tracking-uri "sqlite:///$OUT/$db" --quiet 2>&1 | grep -vE "^skip"
  done
elif [ "$part" = seeds ]; then
  for recipe in ${RECIPES:-mnist-fast mnist-10s}; do
    for seed in ${SEEDS:-0 1 2 3 4}; do
      python3 -m vitbench run --recipe "$recipe" --seed "$seed" --experiment time-to-accuracy \
        --progress-interval 600 --tracking-uri "sqlite:///$W/seeds.db" 2>&1 | grep -E "^done|^wall|rror" \
        | sed "s/^/$recipe seed $seed: /"
      cp "$W/seeds.db" "$OUT/seeds.db"
    done
  done
fi
