#!/usr/bin/env bash
# Reproduces results/scaling.md: vitbench on every GPU of a host. GPU: two GPUs of one host; the code takes any
# number (--gpus N|all, --workers N).
#   bash scripts/reproduce/scaling.sh ddp     # run --gpus 2 vs 1: ViT-S/16 on synthetic images (throughput)
#                                             # -> $OUT/scaling_ddp.db
#   bash scripts/reproduce/scaling.sh mnist   # run --gpus 2 vs 1 on MNIST at global batch 256 (accuracy; SEEDS,
#                                             # GPUS pick a part: SEEDS="1 2") -> $OUT/scaling_mnist.db
#   bash scripts/reproduce/scaling.sh sweep   # sweep --workers 2 on Optuna's journal file -> $OUT/scaling_sweep.db,
#                                             # $OUT/scaling_sweep.journal
#   bash scripts/reproduce/scaling.sh suite   # suite experiments/attention.yaml --gpus 2, then --gpus 1 (REPEATS: 3)
#                                             # -> $OUT/scaling_suite_gpus{1,2}.db; wall times on stdout, and
#                                             # where they went (the coordinator's, each worker's)
#   bash scripts/reproduce/scaling.sh hosts   # the suite as two "hosts" (other host names), one GPU each, sharing one
#                                             # queue (an Optuna journal) -> $OUT/scaling_hosts.db
#   bash scripts/reproduce/scaling.sh imports # what a process's imports cost here: as the machine has it, and with
#                                             # bytecode cached; each module a worker loads, alone and two at once
#   bash scripts/reproduce/scaling.sh nodes   # two hosts played on one: two launchers, one GPU each, meeting at a
#                                             # c10d rendezvous (--nodes 2), against --gpus 2 on one host, MNIST
#                                             # -> $OUT/scaling_nodes.db
# then, on any machine with the stores: mlflow ui --backend-store-uri sqlite:///scaling_suite_gpus2.db (runs, their
# start and end times, the GPU each used) or vitbench report --experiment attention --tracking-uri ...
set -uo pipefail
W=${W:-/tmp/scaling}
OUT=${OUT:-.}
mkdir -p "$W"
AS_GIVEN=${PYTHONDONTWRITEBYTECODE:-}  # the machine's own setting, for the imports part
# Every process imports torch and MLflow: with its bytecode cached, as pip leaves an install. An image that ships
# torch without it and sets PYTHONDONTWRITEBYTECODE (the lent H200's) compiles their sources in every process:
# 15.1 s against 6.3 s there for `import mlflow, torch._dynamo, torch._inductor.compile_fx,
# mlflow.store.tracking.sqlalchemy_store` (results/scaling.md).
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-$W/pycache}
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'nccl', torch.cuda.nccl.version())"
wall() { python3 -c "import time; print(f'{time.time():.3f}')"; }
# `suite experiments/attention.yaml` on two GPUs, then on one, timed prompt to prompt: $1 names the stores
# ($W/$1_gpus{2,1}.db, copied to $OUT/scaling_$1_gpus{2,1}.db), $2 is said after the wall time
suites() {
  for g in 2 1; do
    rm -f "$W/$1_gpus$g.db"  # a fresh store: a run FINISHED there would be skipped
    t0=$(wall)
    python3 -m vitbench suite experiments/attention.yaml --gpus "$g" --tracking-uri "sqlite:///$W/$1_gpus$g.db" \
      --repeats "${REPEATS:-3}" --progress-interval 600 2>&1 | grep -E "val_acc|FAILED|worker|made|rror|wall"
    echo "suite attention --gpus $g$2: wall $(python3 -c "print(f'{$(wall) - $t0:.1f}')") s"
    cp "$W/$1_gpus$g.db" "$OUT/scaling_$1_gpus$g.db"
  done
}
part=${1:?ddp, mnist, sweep, suite, hosts, imports or nodes}

if [ "$part" = nodes ]; then
  U="sqlite:///$W/nodes.db"
  M=(--dataset mnist --batch-size 256 --epochs 2 --seed 0 --experiment scaling-nodes --quiet --tracking-uri "$U")
  t0=$(wall)
  python3 -m vitbench run "${M[@]}" --gpus 2 --run-name "one host, --gpus 2" 2>&1 | grep -E "^(done|data-par|error)"
  t1=$(wall)
  for node in 0 1; do  # each "host" sees one GPU of its own
    CUDA_VISIBLE_DEVICES=$node python3 -m vitbench run "${M[@]}" --gpus 1 --nodes 2 --rdzv-endpoint 127.0.0.1:29531 \
      --rdzv-id nodes --run-name "two hosts, --gpus 1 --nodes 2" > "$W/node$node.txt" 2>&1 &
  done
  wait
  t2=$(wall)
  grep -hE "^(done|data-par|error)" "$W"/node0.txt "$W"/node1.txt
  python3 -c "print(f'one host {$t1 - $t0:.1f} s, two hosts {$t2 - $t1:.1f} s prompt to prompt')"
  cp "$W/nodes.db" "$OUT/scaling_nodes.db"
elif [ "$part" = imports ]; then
  I="import mlflow, torch._dynamo, torch._inductor.compile_fx, mlflow.store.tracking.sqlalchemy_store"
  for run in 1 2; do  # as the machine has it; a second process sees what the first may have cached
    env -u PYTHONPYCACHEPREFIX PYTHONDONTWRITEBYTECODE="$AS_GIVEN" /usr/bin/time -f "as given, process $run: %e s" \
      python3 -c "$I"
  done
  for run in 1 2; do  # bytecode cached in a folder of its own (the first process fills it)
    PYTHONPYCACHEPREFIX=$W/pycache-imports /usr/bin/time -f "bytecode cached, process $run: %e s" python3 -c "$I"
  done
  export -n PYTHONPYCACHEPREFIX; export PYTHONDONTWRITEBYTECODE="$AS_GIVEN"  # each module, as the machine has it
  python3 scripts/reproduce/scaling_imports.py first
  python3 scripts/reproduce/scaling_imports.py second
  python3 scripts/reproduce/scaling_imports.py A & python3 scripts/reproduce/scaling_imports.py B & wait
elif [ "$part" = ddp ]; then
  U="sqlite:///$W/ddp.db"
  S16=(--dataset synthetic --preset vit-s16 --precision bf16 --epochs 4 --experiment scaling-vit-s16 --quiet
       --tracking-uri "$U")
  # data-parallel steps run eagerly, so the 1-GPU reference does too (--no-cuda-graph); the graph row beside it
  python3 -m vitbench run "${S16[@]}" --batch-size 256 --no-cuda-graph --run-name "1 GPU, batch 256, eager"
  python3 -m vitbench run "${S16[@]}" --batch-size 256 --run-name "1 GPU, batch 256, CUDA graph"
  python3 -m vitbench run "${S16[@]}" --batch-size 512 --gpus 2 --run-name "2 GPUs, batch 512 (256 per GPU)"
  python3 -m vitbench run "${S16[@]}" --batch-size 256 --gpus 2 --run-name "2 GPUs, batch 256 (128 per GPU)"
  cp "$W/ddp.db" "$OUT/scaling_ddp.db"
elif [ "$part" = mnist ]; then
  U="sqlite:///$W/mnist.db"
  # the default recipe at global batch 256 (eager data-parallel steps at batch 64 are host-bound: ~50 s a run),
  # the same global batch on 1 and 2 GPUs
  for seed in ${SEEDS:-0 1 2}; do
    for g in ${GPUS:-1 2}; do
      python3 -m vitbench run --dataset mnist --batch-size 256 --seed "$seed" --gpus "$g" --experiment scaling-mnist \
        --quiet --tracking-uri "$U" --run-name "$g GPU(s), batch 256, seed $seed" 2>&1 \
        | grep -E "^done|rror" | sed "s/^/$g GPU(s), seed $seed: /"
      cp "$W/mnist.db" "$OUT/scaling_mnist.db"
    done
  done
elif [ "$part" = sweep ]; then
  t0=$(wall)
  python3 -m vitbench sweep --workers 2 --storage "journal:$W/sweep.journal" --n-trials 6 --epochs 1 \
    --study-name scaling --tracking-uri "sqlite:///$W/sweep.db" --quiet --pruner none 2>&1 | grep -vE "^\[W"
  echo "sweep --workers 2: wall $(python3 -c "print(f'{$(wall) - $t0:.1f}')") s"
  cp "$W/sweep.db" "$OUT/scaling_sweep.db"
  cp "$W/sweep.journal" "$OUT/scaling_sweep.journal"
elif [ "$part" = suite ]; then
  export VITBENCH_WARM=off  # each command in a process of its own, its workers started by it
  # the compile cache warmed first (the compiled cells once, into a store of their own), so neither command
  # pays for a cold cache
  python3 -m vitbench suite experiments/attention.yaml --repeats 1 --tracking-uri "sqlite:///$W/warm.db" --quiet \
    --cells attention=vectorized,attention=torch-mha,attention=sdpa > /dev/null 2>&1
  suites suite ""
  python3 scripts/reproduce/scaling_cells.py "sqlite:///$W/suite_gpus1.db" "sqlite:///$W/suite_gpus2.db"
elif [ "$part" = hosts ]; then
  # two "hosts" on one machine: two process groups with other host names, one GPU each, one queue (a journal)
  export VITBENCH_WARM=off
  python3 -m vitbench suite experiments/attention.yaml --repeats 1 --tracking-uri "sqlite:///$W/warm.db" --quiet \
    --cells attention=vectorized,attention=torch-mha,attention=sdpa > /dev/null 2>&1
  rm -f "$W/hosts.db" "$W/hosts.journal"
  t0=$(wall)
  for h in 0 1; do
    VITBENCH_HOST=host$h CUDA_VISIBLE_DEVICES=$h python3 -m vitbench suite experiments/attention.yaml \
      --repeats "${REPEATS:-3}" --storage "journal:$W/hosts.journal" --tracking-uri "sqlite:///$W/hosts.db" \
      --progress-interval 600 > "$W/host$h.txt" 2>&1 &
  done
  wait
  echo "suite attention on two hosts of one GPU each: wall $(python3 -c "print(f'{$(wall) - $t0:.1f}')") s"
  grep -hE "made|rror" "$W"/host0.txt "$W"/host1.txt
  cp "$W/hosts.db" "$OUT/scaling_hosts.db"
  python3 scripts/reproduce/scaling_cells.py "sqlite:///$W/hosts.db"
fi
