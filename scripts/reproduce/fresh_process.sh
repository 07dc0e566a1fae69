#!/usr/bin/env bash
# Reproduces results/fresh_process.md: what a command costs from the prompt back to the prompt in a fresh process
# of its own (the default: no warm process), and what a run records of the conditions it was measured under.
# Needs a CUDA GPU for the first part; the CPU part runs anywhere.
#   bash scripts/reproduce/fresh_process.sh gpu   # run --recipe mnist-fast three times (the first fills the compile
#                                                 # cache), the naive loop for 20 s, one bench cell per attention
#   bash scripts/reproduce/fresh_process.sh cpu   # the headline run, --time-budget 20 --device cpu, three times
# Stores and logs go to $OUT (default .).
set -uo pipefail
OUT=${OUT:-.}
W=${W:-/tmp/fresh_process}
mkdir -p "$W" "$OUT"
cd "$W" || exit 1
unset VITBENCH_WARM  # the default: a warm process only where one was started (none is)
# Python's bytecode caches, as every pip install has them. Some container images set PYTHONDONTWRITEBYTECODE, and
# then every import compiles its source again (12 of 21 s of `run --recipe mnist-fast` on an H100); the first
# command below writes them, as the first import after an install would.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-$W/pycache}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$W/inductor}  # torch.compile's cache, empty at first
store="--tracking-uri sqlite:///$OUT/fresh_process_$1.db"
timed() {  # prompt-to-prompt seconds of one command, then the run's last lines
  local t0 t1
  t0=$(date +%s.%N)
  python3 -m vitbench "$@" $store >"$W/last.log" 2>&1
  t1=$(date +%s.%N)
  echo "prompt to prompt: $(python3 -c "print(f'{$t1 - $t0:.1f}')") s: vitbench $*"
  grep -E "^(done|wall|note|error)" "$W/last.log" | cut -c1-400
}
case "${1:-}" in
  gpu)
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    python3 -c "import torch; print('torch', torch.__version__)"
    for i in 1 2 3 4; do timed run --recipe mnist-fast; done  # the first: compile and bytecode caches empty
    timed run --variant naive-msa --dataset mnist --time-budget 20
    timed bench --variants sdpa --attention sdpa,triton --preset vit-s16 --batch-sizes 256 --precision bf16 \
      --compile --mode train --quiet
    cat "$W/last.log" | tail -20
    ;;
  cpu)
    lscpu | grep -E "Model name|^CPU\(s\)"
    for i in 1 2 3; do timed run --variant naive-msa --dataset mnist --time-budget 20 --device cpu; done
    ;;
  *) echo "usage: $0 gpu|cpu" >&2; exit 2 ;;
esac
