"""Reproduces results/peak_memory.md: one cell's GPU peak memory in every run of one process (two cells, three
runs each, as a suite runs them), with what each run found allocated before it and left after it. GPU: one
H200 or H100.
    python3 scripts/reproduce/peak_memory.py now "$OUT"      # LABEL STORE_FOLDER
"""
import sys

import torch

from vitbench.cells import splits_for
from vitbench.options import Options, configs
from vitbench.runner import Tracking, run_experiment

mode = sys.argv[1] if len(sys.argv) > 1 else "now"
store = f"sqlite:///{sys.argv[2] if len(sys.argv) > 2 else '.'}/peak_memory.db"
for attention in ("sdpa", "vectorized"):
    for r in range(3):
        cfg, mc = configs(Options(epochs=1, max_steps=60, batch_size=64, seed=r, device="cuda", attention=attention))
        before = torch.cuda.memory_allocated() / 2**20
        out = run_experiment(cfg, mc, Tracking(store, "peak-memory"),
                             splits=splits_for(cfg, mc), log=lambda s: None)
        print(f"{mode} {attention} run {r}: peak {out.result.peak_memory_mb:8.2f} MiB  allocated before "
              f"{before:7.2f}  after {torch.cuda.memory_allocated() / 2**20:7.2f}  reserved "
              f"{torch.cuda.memory_reserved() / 2**20:7.1f}", flush=True)
