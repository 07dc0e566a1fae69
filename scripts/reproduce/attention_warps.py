"""Our fused Triton attention's tiles, by sequence length: the keys padded to a power of two or split into a
block and a short tail block (``key_blocks``), queries per step (BLOCK_M), warps per program and software-
pipelining stages. The forward and the backward kernel timed alone (CUDA events around CUDA-graph replays,
median) at the presets' shapes and the mnist-10s recipe's, batch 1024, bf16. Reproduces the table behind
``fused_attention.TILES`` and ``SPLIT_KEYS`` (results/speed.md). GPU only.

    python3 scripts/reproduce/attention_warps.py
"""

from __future__ import annotations

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


def main(batch: int = 1024) -> None:
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, batch {batch}, bf16; kernel time in us")
    print(f"{'shape':>15} {'keys':>8} {'BLOCK_M':>7} {'warps':>5} {'stages':>6} {'forward':>8} {'backward':>9}")
    for name, (n, heads, d) in SHAPES.items():
        g = torch.Generator(device="cuda").manual_seed(0)
        qkv = torch.randn(batch, n, 3 * heads * d, device="cuda", dtype=torch.bfloat16, generator=g)
        out = qkv.new_empty(batch, n, heads * d)
        lse = torch.empty(batch * heads, n, device="cuda")
        grad_out, grad_qkv = torch.randn_like(out), torch.empty_like(qkv)
        for split in (False, True):
            fa.SPLIT_KEYS = split
            keys, tail = fa.key_blocks(n)
            if split and tail == 0:  # the same layout as unsplit
                continue
            # a whole 128-key tile spilled registers (1-3 ms); 8 warps were the slowest everywhere
            for block_m in (m for m in (16, 32, 64) if m <= keys + tail):
                for warps, stages in itertools.product((1, 2, 4), (1, 3)):
                    fa.TILES[keys + tail] = (block_m, warps, stages)
                    fwd = time_us(partial(fa._run, "forward", qkv, heads, qkv, out, lse))
                    bwd = time_us(partial(fa._run, "backward", qkv, heads, qkv, out, grad_out, lse, grad_qkv))
                    layout = f"{keys}+{tail}" if tail else str(keys)
                    print(f"{name:>15} {layout:>8} {block_m:>7} {warps:>5} {stages:>6} {fwd:8.1f} {bwd:9.1f}")


if __name__ == "__main__":
    main()
