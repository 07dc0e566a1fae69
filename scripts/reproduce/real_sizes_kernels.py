"""Kernel micro-benchmarks behind results/real_sizes.md, at ViT-S/16 and ViT-B/16 shapes (batch 256, 197 tokens,
bf16; CUDA events, median of 30 after 5 untimed). GPU only.

    python3 scripts/reproduce/real_sizes_kernels.py attention   # torch's attention backends, forward + backward
    python3 scripts/reproduce/real_sizes_kernels.py mlp-tiles   # our MLP kernels' launch shapes against inductor's
    python3 scripts/reproduce/real_sizes_kernels.py attention-tiles  # our attention against cuDNN's from qkv to its
                                                                     # gradient, and its kernels' launch shapes
"""

from __future__ import annotations

import statistics
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.nn.attention import SDPBackend, sdpa_kernel

from vitbench.models import fused_attention, fused_mlp

SIZES = {"ViT-S/16": (6, 1536), "ViT-B/16": (12, 3072)}  # heads, MLP width
TOKENS, BATCH = 197, 256


def median_ms(fn, *args, repeats: int = 30, warmup: int = 5, **kwargs) -> float:
    """``fn(*args, **kwargs)`` timed with CUDA events: the median of ``repeats`` after ``warmup`` untimed."""
    for _ in range(warmup):
        fn(*args, **kwargs)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args, **kwargs)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def attention_step(backend, q, k, v, grad) -> None:
    with sdpa_kernel(backend):
        F.scaled_dot_product_attention(q, k, v).backward(grad)


def attention() -> None:
    for size, (heads, _) in SIZES.items():
        q, k, v = (torch.randn(BATCH, heads, TOKENS, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        grad = torch.randn_like(q)
        for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            ms = median_ms(attention_step, backend, q, k, v, grad)
            print(f"{size} {backend.name:20s} forward + backward of one layer: {ms:.3f} ms")


def inductor_backward(grad, pre):
    return torch.ops.aten.gelu_backward(grad, pre), torch.ops.aten.gelu_backward(grad, pre).float().sum(0)


def ours_forward(pre, out, block: int, warps: int) -> None:
    n = pre.numel()
    fused_mlp._gelu_forward[(triton.cdiv(n, block),)](pre, out, n, BLOCK=block, ACC=tl.float32, num_warps=warps)


def ours_backward(grad, pre, grad_pre, tile: tuple[int, int], warps: int):
    (rows, width), (bm, bn) = pre.shape, tile
    partial = torch.empty(triton.cdiv(rows, bm), width, device="cuda")
    fused_mlp._gelu_backward[(triton.cdiv(rows, bm), triton.cdiv(width, bn))](
        grad, pre, grad_pre, partial, rows, width, BLOCK_M=bm, BLOCK_N=bn, ACC=tl.float32, num_warps=warps)
    return partial.sum(0)


def mlp_tiles() -> None:
    forward, backward = torch.compile(F.gelu), torch.compile(inductor_backward)
    for size, (_, width) in SIZES.items():
        pre = torch.randn(BATCH * TOKENS, width, device="cuda", dtype=torch.bfloat16)
        grad, out, grad_pre = torch.randn_like(pre), torch.empty_like(pre), torch.empty_like(pre)
        print(f"{size} {BATCH * TOKENS} x {width}: inductor's GELU forward {median_ms(forward, pre):.3f} ms, "
              f"backward and bias sum {median_ms(backward, grad, pre):.3f} ms")
        for block, warps in ((1024, 4), (2048, 8), (4096, 8), (8192, 16)):
            ms = median_ms(ours_forward, pre, out, block, warps)
            print(f"{size} ours, forward, {block} elements, {warps} warps: {ms:.3f} ms")
        for tile, warps in (((32, 256), 8), ((16, 512), 4), ((32, 128), 4), ((32, 64), 2), ((64, 64), 4),
                            ((64, 128), 4), ((128, 128), 8), ((256, 128), 8)):
            ms = median_ms(ours_backward, grad, pre, grad_pre, tile, warps)
            print(f"{size} ours, backward and bias sum, {tile[0]} x {tile[1]} tiles, {warps} warps: {ms:.3f} ms")


def sdpa_from_qkv(qkv, grad, heads: int):
    """What the sdpa attention does between the qkv projection and proj, and its backward to qkv's gradient (the
    q, k, v gradients stacked back into qkv's layout)."""
    B, N, _ = qkv.shape
    q, k, v = qkv.view(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, -1)
    return torch.autograd.grad(out, qkv, grad)


def ours_from_qkv(qkv, grad, heads: int):
    return torch.autograd.grad(fused_attention.fused_attention(qkv, heads), qkv, grad)


def attention_tiles() -> None:
    chosen = fused_attention.FORWARD_BLOCKS, fused_attention.BACKWARD_BLOCKS
    for size, (heads, _) in SIZES.items():
        fused_attention.FORWARD_BLOCKS, fused_attention.BACKWARD_BLOCKS = chosen
        qkv = torch.randn(BATCH, TOKENS, 3 * heads * 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        grad = torch.randn(BATCH, TOKENS, heads * 64, device="cuda", dtype=torch.bfloat16)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            ms = median_ms(sdpa_from_qkv, qkv, grad, heads)
        print(f"{size} cuDNN, from qkv to its gradient: {ms:.3f} ms")
        print(f"{size} ours ({fused_attention.FORWARD_BLOCKS}, {fused_attention.BACKWARD_BLOCKS}), from qkv to its "
              f"gradient: {median_ms(ours_from_qkv, qkv, grad, heads):.3f} ms")
        out, lse = fused_attention._forward(qkv.detach(), heads)
        for tiles in ((64, 64, 4, 3), (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 128, 4, 3),
                      (128, 32, 4, 3), (64, 32, 4, 2), (256, 64, 8, 3), (128, 64, 8, 2), (128, 64, 8, 4),
                      (64, 64, 4, 4)):
            fused_attention.FORWARD_BLOCKS = tiles
            ms = median_ms(fused_attention._forward, qkv.detach(), heads)
            print(f"{size} ours, forward, (queries, keys per step, warps, stages) {tiles}: {ms:.3f} ms")
        for tiles in ((64, 32, 4, 2), (64, 16, 4, 2), (128, 32, 8, 2), (128, 16, 4, 2), (64, 64, 4, 2),
                      (128, 64, 8, 2), (32, 32, 4, 2), (128, 32, 4, 3), (64, 32, 4, 3), (32, 16, 2, 2),
                      (64, 32, 4, 4), (64, 16, 4, 3), (64, 64, 4, 3), (64, 32, 8, 3)):
            fused_attention.BACKWARD_BLOCKS = tiles
            ms = median_ms(fused_attention._backward, qkv.detach(), out, grad, lse, heads)
            print(f"{size} ours, backward, (tokens, tokens per step, warps, stages) {tiles}: {ms:.3f} ms")


if __name__ == "__main__":
    print(torch.__version__, torch.cuda.get_device_name())
    {"attention": attention, "mlp-tiles": mlp_tiles, "attention-tiles": attention_tiles}[sys.argv[1]]()
