"""Our fused Triton attention's tiles, by sequence length: the keys padded to a power of two or split into a
block and a short tail block (``key_blocks``), queries per step (BLOCK_M), warps per program and software-
pipelining stages. The forward and the backward kernel timed alone (CUDA events around CUDA-graph replays,
median) at the presets' shapes and the mnist-10s recipe's, batch 1024, bf16. Reproduces the table behind
``fused_attention.TILES`` and ``SPLIT_KEYS`` (results/speed.md). GPU only.

    python3 scripts/reproduce/attention_warps.py
    git show d9525b3:vitbench/models/fused_attention.py > /tmp/fa.py
    python3 scripts/reproduce/attention_warps.py --against /tmp/fa.py  # this kernel's tiles against d9525b3's
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import statistics
from functools import partial

import torch

from vitbench.models import fused_attention as fa

SHAPES = {"mnist preset": (17, 4, 16), "cifar10 preset": (65, 4, 12), "mnist-10s model": (50, 4, 32)}  # N, H, d


def time_us(fn, launches: int = 20, repeats: int = 50) -> float:
    """GPU time of one ``fn()``: ``launches`` calls captured in one CUDA graph, the graph replayed ``repeats``
    times between CUDA events; the median replay over ``launches``. Timing single launches measured Python's
    launch overhead (~30-40 us) rather than these 10-100 us kernels."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(launches):
            fn()
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / launches)
    return statistics.median(times)


def inputs(n: int, heads: int, d: int, batch: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(batch, n, 3 * heads * d, device="cuda", dtype=torch.bfloat16, generator=g)
    out = qkv.new_empty(batch, n, heads * d)
    return qkv, out, torch.empty(batch * heads, n, device="cuda"), torch.randn_like(out), torch.empty_like(qkv)


def kernel_times(module, n: int, heads: int, d: int, batch: int) -> tuple[float, float]:
    """Forward and backward kernel time (us) of ``module``'s ``_run`` at its own tiles."""
    qkv, out, lse, grad_out, grad_qkv = inputs(n, heads, d, batch)
    fwd = time_us(partial(module._run, "forward", qkv, heads, qkv, out, lse))
    return fwd, time_us(partial(module._run, "backward", qkv, heads, qkv, out, grad_out, lse, grad_qkv))


def sweep(batch: int) -> None:
    print(f"{'shape':>15} {'keys':>8} {'BLOCK_M':>7} {'warps':>5} {'stages':>6} {'forward':>8} {'backward':>9}")
    for name, (n, heads, d) in SHAPES.items():
        for split in (False, True):
            fa.SPLIT_KEYS = split
            keys, tail = fa.key_blocks(n)
            if split and tail == 0:  # the same layout as unsplit
                continue
            # a whole 128-key tile spilled registers (1-3 ms); 8 warps were the slowest everywhere
            for block_m in (m for m in (16, 32, 64) if m <= keys + tail):
                for warps, stages in itertools.product((1, 2, 4), (1, 3)):
                    fa.TILES[keys + tail] = (block_m, warps, stages)
                    fwd, bwd = kernel_times(fa, n, heads, d, batch)
                    layout = f"{keys}+{tail}" if tail else str(keys)
                    print(f"{name:>15} {layout:>8} {block_m:>7} {warps:>5} {stages:>6} {fwd:8.1f} {bwd:9.1f}")


def against(path: str, batch: int) -> None:
    """This kernel at its chosen tiles against another version of vitbench/models/fused_attention.py (e.g.
    ``git show COMMIT:vitbench/models/fused_attention.py > old.py``) at that version's tiles."""
    spec = importlib.util.spec_from_file_location("baseline_fused_attention", path)
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    print(f"{'shape':>15} {'kernel':>9} {'forward':>8} {'backward':>9}")
    for name, (n, heads, d) in SHAPES.items():
        for label, module in (("baseline", baseline), ("this", fa)):
            fwd, bwd = kernel_times(module, n, heads, d, batch)
            print(f"{name:>15} {label:>9} {fwd:8.1f} {bwd:9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--against", metavar="FILE", help="time this kernel against another fused_attention.py")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, batch {args.batch_size}, bf16; kernel time "
          "in us")
    if args.against:
        against(args.against, args.batch_size)
    else:
        sweep(args.batch_size)


if __name__ == "__main__":
    main()
