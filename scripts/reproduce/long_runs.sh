#!/usr/bin/env bash
# Reproduces results/long_runs.md: what `vitbench run` shows while a long run trains and what a stopped
# run keeps. GPU: one H100. Run from the repository root, on the
# device after `source .device/gpu/prelude.sh`:
#   bash scripts/reproduce/long_runs.sh headline   # the headline command, SIGINT after 60 s; --time-budget 60
#   bash scripts/reproduce/long_runs.sh naive      # naive attention's train images/s before / after
#   bash scripts/reproduce/long_runs.sh live       # the fast path with live metrics off / every 10 s / every 100 steps
# BEFORE_ATTENTION: the attention.py before the naive fix (else read with git from commit 25c22fe).
set -uo pipefail
W=${W:-/tmp/long_runs}
mkdir -p "$W"
U="sqlite:///$W/mlflow.db"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

metrics() {  # status, metrics and tags of the runs of experiment $1
  python3 scripts/reproduce/long_runs_tables.py runs "$U" "$1"
}

case "${1:-}" in
headline)
  echo "== vitbench run --variant naive-msa --dataset mnist   (stdout+stderr to a file, SIGINT after 60 s)"
  timeout --preserve-status -s INT 60 python3 -m vitbench run --variant naive-msa --dataset mnist --tracking-uri "$U" \
    --experiment headline >"$W/headline.txt" 2>&1
  echo "exit code $?"
  head -30 "$W/headline.txt"
  metrics headline
  echo "== vitbench run --variant naive-msa --dataset mnist --time-budget 60"
  python3 -m vitbench run --variant naive-msa --dataset mnist --time-budget 60 --tracking-uri "$U" \
    --experiment headline-bounded 2>&1
  metrics headline-bounded
  ;;
naive)
  before=/tmp/before
  rm -rf "$before" && mkdir -p "$before" && cp -r vitbench "$before/"
  if [ -n "${BEFORE_ATTENTION:-}" ]; then cp "$BEFORE_ATTENTION" "$before/vitbench/models/attention.py"
  else git show 25c22fe:vitbench/models/attention.py >"$before/vitbench/models/attention.py"; fi
  args=(bench --variants naive-msa --preset mnist --batch-sizes 64 --mode train --warmup 2 --repeats 10
        --max-seconds 40 --tracking-uri "$U")
  for repeat in 1 2; do
    echo "== repeat $repeat: before (loops re-slice the qkv weights for every sample)"
    (cd "$before" && PYTHONPATH="$before:$PYTHONPATH" python3 -m vitbench "${args[@]}" --quiet | grep "train:")
    echo "== repeat $repeat: after (slices cut once per call, F.linear)"
    python3 -m vitbench "${args[@]}" --quiet | grep "train:"
  done
  ;;
live)
  for every in off 10s 100; do
    for seed in 0 1 2; do
      python3 -m vitbench run --variant sdpa --dataset mnist --seed "$seed" --live-every "$every" --quiet \
        --tracking-uri "$U" --experiment "live-sdpa-$every" --run-name "sdpa live=$every seed=$seed" | grep "^done"
    done
  done
  for every in off 50; do
    for seed in 0 1 2; do
      python3 -m vitbench run --recipe mnist-fast --seed "$seed" --live-every "$every" --quiet \
        --tracking-uri "$U" --experiment "live-fast-$every" --run-name "mnist-fast live=$every seed=$seed" | grep "^done"
    done
  done
  python3 scripts/reproduce/long_runs_tables.py live "$U"
  ;;
*) echo "usage: $0 headline|naive|live" >&2; exit 2 ;;
esac
