"""A fused attention kernel of our own (Triton) for the short sequences and small heads of the tutorials' ViTs.

The mnist preset has 17 tokens and 16 dims per head, the cifar10 preset 65 tokens and 12. One program per
(sample, head) does all of it -- QK^T, softmax, PV -- reading q, k and v straight out of the ``qkv``
projection's (B, N, 3, H, d) layout and writing the output straight into (B, N, H*d), so no permute or
transpose copies are made around it. Up to 64 tokens a program holds the head's whole N x N score tile in its
registers; from 65 tokens (padded to 128) that tile spilled, and the blocked kernels step through the queries
BLOCK_M rows at a time against all keys instead. The backward pass is one program per (sample, head) too: it
recomputes the probabilities from the saved log-sum-exp and writes dq, dk, dv into the (B, N, 3, H, d) gradient
of qkv (the blocked one writes each block's dq and sums dk, dv over the blocks).

Sequences up to ``MAX_TOKENS`` tokens (one block); longer ones are refused when the model is built. On CUDA
the kernels are compiled by Triton; on the CPU they run only in Triton's interpreter (``TRITON_INTERPRET=1``
set before triton is imported, as the tests do), slowly, in any dtype it has, float64 included. Matmuls
accumulate in float32 (float64 for float64 inputs); float32 inputs use IEEE float32 dots, not TF32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vitbench.errors import VitbenchError
from vitbench.models.attention import MAX_TOKENS


@triton.jit
def forward(QKV, O, LSE, N, H, HD, scale, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
            ACC: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    b, h = pid // H, pid % H
    rows, cols = tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_D)
    valid = (rows[:, None] < N) & (cols[None, :] < HD)
    stride_n = 3 * H * HD  # qkv: (B, N, 3, H, HD)
    at = QKV + b * N * stride_n + h * HD + rows[:, None] * stride_n + cols[None, :]
    q = tl.load(at, mask=valid, other=0.0)
    k = tl.load(at + H * HD, mask=valid, other=0.0)
    v = tl.load(at + 2 * H * HD, mask=valid, other=0.0)
    s = tl.dot(q, tl.trans(k), out_dtype=ACC, input_precision=PRECISION) * scale  # (BLOCK_N, BLOCK_N)
    s = tl.where(rows[None, :] < N, s, float("-inf"))
    m = tl.max(s, 1)
    p = tl.exp(s - m[:, None])
    total = tl.sum(p, 1)
    o = tl.dot((p / total[:, None]).to(v.dtype), v, out_dtype=ACC, input_precision=PRECISION)
    out = O + b * N * H * HD + h * HD + rows[:, None] * (H * HD) + cols[None, :]  # o: (B, N, H, HD)
    tl.store(out, o.to(O.dtype.element_ty), mask=valid)
    tl.store(LSE + pid * N + rows, m + tl.log(total), mask=rows < N)


@triton.jit
def backward(QKV, O, DO, LSE, DQKV, N, H, HD, scale, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
             ACC: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    b, h = pid // H, pid % H
    rows, cols = tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_D)
    valid = (rows[:, None] < N) & (cols[None, :] < HD)
    stride_n = 3 * H * HD
    offset = b * N * stride_n + h * HD + rows[:, None] * stride_n + cols[None, :]
    q = tl.load(QKV + offset, mask=valid, other=0.0)
    k = tl.load(QKV + offset + H * HD, mask=valid, other=0.0)
    v = tl.load(QKV + offset + 2 * H * HD, mask=valid, other=0.0)
    at_o = b * N * H * HD + h * HD + rows[:, None] * (H * HD) + cols[None, :]
    o = tl.load(O + at_o, mask=valid, other=0.0)
    do = tl.load(DO + at_o, mask=valid, other=0.0)
    lse = tl.load(LSE + pid * N + rows, mask=rows < N, other=0.0)
    s = tl.dot(q, tl.trans(k), out_dtype=ACC, input_precision=PRECISION) * scale
    p = tl.exp(s - lse[:, None])
    p = tl.where((rows[:, None] < N) & (rows[None, :] < N), p, 0.0)  # padding rows and columns: 0
    dv = tl.dot(tl.trans(p.to(do.dtype)), do, out_dtype=ACC, input_precision=PRECISION)
    dp = tl.dot(do, tl.trans(v), out_dtype=ACC, input_precision=PRECISION)
    delta = tl.sum(do.to(ACC) * o.to(ACC), 1)  # rowsum(dO * O) = rowsum(P * dP)
    ds = p * (dp - delta[:, None]) * scale
    dq = tl.dot(ds.to(k.dtype), k, out_dtype=ACC, input_precision=PRECISION)
    dk = tl.dot(tl.trans(ds.to(q.dtype)), q, out_dtype=ACC, input_precision=PRECISION)
    ty = DQKV.dtype.element_ty
    tl.store(DQKV + offset, dq.to(ty), mask=valid)
    tl.store(DQKV + offset + H * HD, dk.to(ty), mask=valid)
    tl.store(DQKV + offset + 2 * H * HD, dv.to(ty), mask=valid)


@triton.jit
def forward_blocked(QKV, O, LSE, N, H, HD, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
            ACC: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    b, h = pid // H, pid % H
    keys, cols = tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_D)
    stride_n = 3 * H * HD  # qkv: (B, N, 3, H, HD)
    head = QKV + b * N * stride_n + h * HD
    at_kv = head + keys[:, None] * stride_n + cols[None, :]
    kv_valid = (keys[:, None] < N) & (cols[None, :] < HD)
    k = tl.load(at_kv + H * HD, mask=kv_valid, other=0.0)  # (BLOCK_N, BLOCK_D): the whole sequence's keys
    v = tl.load(at_kv + 2 * H * HD, mask=kv_valid, other=0.0)
    for start in range(0, N, BLOCK_M):  # BLOCK_M queries at a time: small score tiles, few registers
        rows = start + tl.arange(0, BLOCK_M)
        valid = (rows[:, None] < N) & (cols[None, :] < HD)
        q = tl.load(head + rows[:, None] * stride_n + cols[None, :], mask=valid, other=0.0)
        s = tl.dot(q, tl.trans(k), out_dtype=ACC, input_precision=PRECISION) * scale  # (BLOCK_M, BLOCK_N)
        s = tl.where(keys[None, :] < N, s, float("-inf"))
        m = tl.max(s, 1)
        p = tl.exp(s - m[:, None])
        total = tl.sum(p, 1)
        o = tl.dot((p / total[:, None]).to(v.dtype), v, out_dtype=ACC, input_precision=PRECISION)
        out = O + b * N * H * HD + h * HD + rows[:, None] * (H * HD) + cols[None, :]  # o: (B, N, H, HD)
        tl.store(out, o.to(O.dtype.element_ty), mask=valid)
        tl.store(LSE + pid * N + rows, m + tl.log(total), mask=rows < N)


@triton.jit
def backward_blocked(QKV, O, DO, LSE, DQKV, N, H, HD, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_D: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    b, h = pid // H, pid % H
    keys, cols = tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_D)
    stride_n = 3 * H * HD
    head = b * N * stride_n + h * HD
    at_kv = head + keys[:, None] * stride_n + cols[None, :]
    kv_valid = (keys[:, None] < N) & (cols[None, :] < HD)
    k = tl.load(QKV + at_kv + H * HD, mask=kv_valid, other=0.0)
    v = tl.load(QKV + at_kv + 2 * H * HD, mask=kv_valid, other=0.0)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=ACC)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=ACC)
    for start in range(0, N, BLOCK_M):  # dq of BLOCK_M queries at a time; dk, dv summed over all of them
        rows = start + tl.arange(0, BLOCK_M)
        valid = (rows[:, None] < N) & (cols[None, :] < HD)
        at_q = head + rows[:, None] * stride_n + cols[None, :]
        q = tl.load(QKV + at_q, mask=valid, other=0.0)
        at_o = b * N * H * HD + h * HD + rows[:, None] * (H * HD) + cols[None, :]
        o = tl.load(O + at_o, mask=valid, other=0.0)
        do = tl.load(DO + at_o, mask=valid, other=0.0)
        lse = tl.load(LSE + pid * N + rows, mask=rows < N, other=0.0)
        s = tl.dot(q, tl.trans(k), out_dtype=ACC, input_precision=PRECISION) * scale
        p = tl.exp(s - lse[:, None])
        p = tl.where((rows[:, None] < N) & (keys[None, :] < N), p, 0.0)  # padding rows and columns: 0
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, out_dtype=ACC, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), out_dtype=ACC, input_precision=PRECISION)
        delta = tl.sum(do.to(ACC) * o.to(ACC), 1)  # rowsum(dO * O) = rowsum(P * dP)
        ds = p * (dp - delta[:, None]) * scale
        dq = tl.dot(ds.to(k.dtype), k, out_dtype=ACC, input_precision=PRECISION)
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, out_dtype=ACC, input_precision=PRECISION)
        tl.store(DQKV + at_q, dq.to(DQKV.dtype.element_ty), mask=valid)
    ty = DQKV.dtype.element_ty
    tl.store(DQKV + at_kv + H * HD, dk.to(ty), mask=kv_valid)
    tl.store(DQKV + at_kv + 2 * H * HD, dv.to(ty), mask=kv_valid)


def _run(kernel: str, qkv: torch.Tensor, heads: int, *tensors: torch.Tensor) -> None:
    """One program per (sample, head) of ``qkv`` (B, N, 3*H*d), ``kernel`` 'forward' or 'backward': the whole-tile
    kernel for short sequences, the blocked one from ``BLOCKED_FROM`` padded tokens. Compiled on CUDA; on the CPU
    only Triton's interpreter runs it."""
    if not qkv.is_cuda and not interpreted():
        raise VitbenchError(CPU_NEEDS_INTERPRETER)
    B, N, three_d = qkv.shape
    head_dim = three_d // (3 * heads)
    meta = _meta(N, head_dim, qkv.dtype)
    fn = KERNELS[kernel, "BLOCK_M" in meta]
    fn[(B * heads,)](*tensors, N, heads, head_dim, head_dim**-0.5, **meta)


def interpreted() -> bool:
    """Were the kernels made by Triton's interpreter (TRITON_INTERPRET=1 when triton was imported)?"""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(forward, InterpretedFunction)


CPU_NEEDS_INTERPRETER = ("attention 'triton' runs its kernel on CUDA; on the CPU use another --attention "
                         "(vectorized computes the same function) or set TRITON_INTERPRET=1 (Triton's interpreter: slow)")


# By the padded sequence length BLOCK_N: warps per program of the whole-tile kernels, and from BLOCKED_FROM on
# (queries per step, warps) of the blocked ones, whose steps hold BLOCK_M x BLOCK_N score tiles instead of one
# BLOCK_N x BLOCK_N tile (three in the backward pass: at 128 they spilled registers). Chosen on the H100 by
# scripts/reproduce/attention_warps.py (results/speed.md).
WARPS = {16: 4, 32: 4, 64: 4}
BLOCKED_FROM = 128
TILES = {128: (32, 2)}
KERNELS = {("forward", False): forward, ("backward", False): backward,
           ("forward", True): forward_blocked, ("backward", True): backward_blocked}


def _meta(n: int, head_dim: int, dtype: torch.dtype) -> dict:
    block_n = max(16, triton.next_power_of_2(n))
    meta = dict(BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
                ACC=tl.float64 if dtype == torch.float64 else tl.float32,
                PRECISION="ieee" if dtype in (torch.float32, torch.float64) else "tf32")
    if block_n >= BLOCKED_FROM:
        meta["BLOCK_M"], meta["num_warps"] = TILES.get(block_n, (16, 1))
    else:
        meta["num_warps"] = WARPS.get(block_n, 4)
    return meta


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# Custom operators: torch.compile and CUDA graphs see one opaque op each way (no graph break), autograd pairs them.
@torch.library.custom_op("vitbench::fused_attention", mutates_args=())
def _forward(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    qkv = qkv.contiguous()
    B, N, three_d = qkv.shape
    out = qkv.new_empty(B, N, three_d // 3)
    lse = qkv.new_empty(B * heads, N, dtype=_lse_dtype(qkv.dtype))
    _run("forward", qkv, heads, qkv, out, lse)
    return out, lse


@_forward.register_fake
def _(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    B, N, three_d = qkv.shape
    return qkv.new_empty(B, N, three_d // 3), qkv.new_empty(B * heads, N, dtype=_lse_dtype(qkv.dtype))


@torch.library.custom_op("vitbench::fused_attention_backward", mutates_args=())
def _backward(qkv: torch.Tensor, out: torch.Tensor, grad_out: torch.Tensor, lse: torch.Tensor,
              heads: int) -> torch.Tensor:
    qkv = qkv.contiguous()
    grad_qkv = torch.empty_like(qkv)
    _run("backward", qkv, heads, qkv, out, grad_out.contiguous().to(out.dtype), lse, grad_qkv)
    return grad_qkv


@_backward.register_fake
def _(qkv, out, grad_out, lse, heads):
    return torch.empty_like(qkv)


def _setup_context(ctx, inputs, output) -> None:
    qkv, heads = inputs
    out, lse = output
    ctx.save_for_backward(qkv, out, lse)
    ctx.heads = heads


def _grad(ctx, grad_out, grad_lse):
    qkv, out, lse = ctx.saved_tensors
    return _backward(qkv, out, grad_out, lse, ctx.heads), None


_forward.register_autograd(_grad, setup_context=_setup_context)


def fused_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head self-attention of the fused projection ``qkv`` (B, N, 3*D) -> (B, N, D); N <= MAX_TOKENS."""
    if qkv.shape[1] > MAX_TOKENS:
        raise ValueError(f"the fused Triton attention takes up to {MAX_TOKENS} tokens, got {qkv.shape[1]}")
    return _forward(qkv, heads)[0]
