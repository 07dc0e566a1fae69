"""Fused attention kernels of our own (Triton): for the short sequences and small heads of the tutorials' ViTs,
and by blocks of tokens for the longer sequences of 224-px images.

The mnist preset has 17 tokens and 16 dims per head, the cifar10 preset 65 tokens and 12. One program per
(sample, head) does all of it -- QK^T, softmax, PV -- reading q, k and v straight out of the ``qkv``
projection's (B, N, 3, H, d) layout and writing the output straight into (B, N, H*d), so no permute or
transpose copies are made around it. A program keeps the head's keys and values and steps through its queries
BLOCK_M rows at a time (one step for the short sequences: the whole score tile). ``tl.dot`` wants blocks of a
power of two; rather than padding 65 keys to 128, they go as a block of 64 and a block of 16 (``key_blocks``),
the softmax taken over both. The backward pass is one program per (sample, head) too: it recomputes the
probabilities from the saved log-sum-exp, writes each step's dq and sums dk, dv over the steps, into the
(B, N, 3, H, d) gradient of qkv.

Longer sequences (over ``ONE_BLOCK`` tokens: 197 at 224 px and 16-pixel patches) go through a second pair of
kernels with a program per block of tokens and (sample, head), as FlashAttention-2 cuts them: the forward steps
through the keys with the softmax kept running; the backward writes dk and dv of its block of keys, stepping
through the queries, then dq of its block of queries, stepping through the keys. Any length. On CUDA
the kernels are compiled by Triton; on the CPU they run only in Triton's interpreter (``TRITON_INTERPRET=1``
set before triton is imported, as the tests do), slowly, in any dtype it has, float64 included. Matmuls
accumulate in float32 (float64 for float64 inputs); float32 inputs use IEEE float32 dots, not TF32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vitbench.errors import VitbenchError


@triton.jit
def _load(at, rows, cols, N, HD, stride_n):
    """Rows ``rows`` (masked to N) and columns ``cols`` (masked to HD) of a (N, stride_n) matrix at ``at``."""
    return tl.load(at + rows[:, None] * stride_n + cols[None, :], mask=(rows[:, None] < N) & (cols[None, :] < HD),
                   other=0.0)


@triton.jit
def _store(at, x, rows, cols, N, HD, stride_n):
    tl.store(at + rows[:, None] * stride_n + cols[None, :], x.to(at.dtype.element_ty),
             mask=(rows[:, None] < N) & (cols[None, :] < HD))


@triton.jit
def _scores(q, k, keys, N, scale, ACC: tl.constexpr, PRECISION: tl.constexpr):
    s = tl.dot(q, tl.trans(k), out_dtype=ACC, input_precision=PRECISION) * scale
    return tl.where(keys[None, :] < N, s, float("-inf"))


@triton.jit
def _grads(q, do, lse, delta, k, v, rows, keys, N, scale, ACC: tl.constexpr, PRECISION: tl.constexpr):
    """One block of queries against one block of keys: their parts of dq, dk and dv."""
    p = tl.exp(_scores(q, k, keys, N, scale, ACC, PRECISION) - lse[:, None])
    p = tl.where(rows[:, None] < N, p, 0.0)  # padding rows: 0
    dv = tl.dot(tl.trans(p.to(do.dtype)), do, out_dtype=ACC, input_precision=PRECISION)
    dp = tl.dot(do, tl.trans(v), out_dtype=ACC, input_precision=PRECISION)
    ds = p * (dp - delta[:, None]) * scale
    dq = tl.dot(ds.to(k.dtype), k, out_dtype=ACC, input_precision=PRECISION)
    dk = tl.dot(tl.trans(ds.to(q.dtype)), q, out_dtype=ACC, input_precision=PRECISION)
    return dq, dk, dv


@triton.jit
def _keys_and_values(head, N, H, HD, cols, KEYS: tl.constexpr, TAIL: tl.constexpr):
    """The head's keys and values, kept by the program while its queries step through: the block of KEYS and,
    with TAIL, the keys from KEYS on in a block of their own (else the first block again, not used)."""
    stride_n = 3 * H * HD
    keys = tl.arange(0, KEYS)
    k = _load(head + H * HD, keys, cols, N, HD, stride_n)
    v = _load(head + 2 * H * HD, keys, cols, N, HD, stride_n)
    if TAIL > 0:
        tail = KEYS + tl.arange(0, TAIL)
        k2 = _load(head + H * HD, tail, cols, N, HD, stride_n)
        v2 = _load(head + 2 * H * HD, tail, cols, N, HD, stride_n)
    else:
        tail, k2, v2 = keys, k, v
    return keys, k, v, tail, k2, v2


@triton.jit
def _forward_step(head, out, lse_at, start, k, v, k2, v2, keys, tail, cols, N, H, HD, scale, BLOCK_M: tl.constexpr,
                  TAIL: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr):
    """Queries start..start+BLOCK_M against all the keys: their rows of the output and of the log-sum-exp."""
    rows = start + tl.arange(0, BLOCK_M)
    q = _load(head, rows, cols, N, HD, 3 * H * HD)
    s = _scores(q, k, keys, N, scale, ACC, PRECISION)  # (BLOCK_M, KEYS)
    m = tl.max(s, 1)
    if TAIL > 0:
        s2 = _scores(q, k2, tail, N, scale, ACC, PRECISION)  # (BLOCK_M, TAIL)
        m = tl.maximum(m, tl.max(s2, 1))
    p = tl.exp(s - m[:, None])
    total = tl.sum(p, 1)
    o = tl.dot(p.to(v.dtype), v, out_dtype=ACC, input_precision=PRECISION)
    if TAIL > 0:
        p2 = tl.exp(s2 - m[:, None])
        total += tl.sum(p2, 1)
        o += tl.dot(p2.to(v2.dtype), v2, out_dtype=ACC, input_precision=PRECISION)
    _store(out, o / total[:, None], rows, cols, N, HD, H * HD)
    tl.store(lse_at + rows, m + tl.log(total), mask=rows < N)


@triton.jit
def _backward_step(head, out, grad_out, grad_head, lse_at, start, k, v, k2, v2, keys, tail, cols, N, H, HD, scale,
                   BLOCK_M: tl.constexpr, TAIL: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr):
    """Queries start..start+BLOCK_M: their rows of dq, and their parts of dk and dv (of the tail block's too)."""
    rows = start + tl.arange(0, BLOCK_M)
    q = _load(head, rows, cols, N, HD, 3 * H * HD)
    o = _load(out, rows, cols, N, HD, H * HD)
    do = _load(grad_out, rows, cols, N, HD, H * HD)
    lse = tl.load(lse_at + rows, mask=rows < N, other=0.0)
    delta = tl.sum(do.to(ACC) * o.to(ACC), 1)  # rowsum(dO * O) = rowsum(P * dP)
    dq, dk, dv = _grads(q, do, lse, delta, k, v, rows, keys, N, scale, ACC, PRECISION)
    if TAIL > 0:
        dq2, dk2, dv2 = _grads(q, do, lse, delta, k2, v2, rows, tail, N, scale, ACC, PRECISION)
        dq += dq2
    else:
        dk2, dv2 = dk, dv  # no tail block: not used
    _store(grad_head, dq, rows, cols, N, HD, 3 * H * HD)
    return dk, dv, dk2, dv2


@triton.jit
def attention_forward(QKV, O, LSE, N, H, HD, scale, BLOCK_M: tl.constexpr, KEYS: tl.constexpr, TAIL: tl.constexpr,
            BLOCK_D: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr, INDEX: tl.constexpr):
    pid = tl.program_id(0)
    b, h = (pid // H).to(INDEX), pid % H  # INDEX: int64 where b * N * 3 * H * HD outgrows 32 bits
    stride_n = 3 * H * HD  # qkv: (B, N, 3, H, HD); o: (B, N, H, HD)
    head, out = QKV + b * N * stride_n + h * HD, O + b * N * H * HD + h * HD
    cols = tl.arange(0, BLOCK_D)
    keys, k, v, tail, k2, v2 = _keys_and_values(head, N, H, HD, cols, KEYS, TAIL)
    if BLOCK_M >= KEYS + TAIL:  # one step takes every query; no loop (a loop of one step ran slower)
        _forward_step(head, out, LSE + pid * N, 0, k, v, k2, v2, keys, tail, cols, N, H, HD, scale, BLOCK_M, TAIL,
                      ACC, PRECISION)
    else:
        for start in range(0, N, BLOCK_M):
            _forward_step(head, out, LSE + pid * N, start, k, v, k2, v2, keys, tail, cols, N, H, HD, scale,
                          BLOCK_M, TAIL, ACC, PRECISION)


@triton.jit
def attention_backward(QKV, O, DO, LSE, DQKV, N, H, HD, scale, BLOCK_M: tl.constexpr, KEYS: tl.constexpr,
             TAIL: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
             INDEX: tl.constexpr):
    pid = tl.program_id(0)
    b, h = (pid // H).to(INDEX), pid % H  # INDEX: int64 where b * N * 3 * H * HD outgrows 32 bits
    stride_n = 3 * H * HD
    head, grad_head = QKV + b * N * stride_n + h * HD, DQKV + b * N * stride_n + h * HD
    out, grad_out = O + b * N * H * HD + h * HD, DO + b * N * H * HD + h * HD
    cols = tl.arange(0, BLOCK_D)
    keys, k, v, tail, k2, v2 = _keys_and_values(head, N, H, HD, cols, KEYS, TAIL)
    if BLOCK_M >= KEYS + TAIL:  # one step
        dk, dv, dk2, dv2 = _backward_step(head, out, grad_out, grad_head, LSE + pid * N, 0, k, v, k2, v2, keys, tail,
                                          cols, N, H, HD, scale, BLOCK_M, TAIL, ACC, PRECISION)
    else:  # dq of BLOCK_M queries at a time; dk, dv summed over all of them
        dk = tl.zeros((KEYS, BLOCK_D), dtype=ACC)
        dv = tl.zeros((KEYS, BLOCK_D), dtype=ACC)
        if TAIL > 0:
            dk2 = tl.zeros((TAIL, BLOCK_D), dtype=ACC)
            dv2 = tl.zeros((TAIL, BLOCK_D), dtype=ACC)
        for start in range(0, N, BLOCK_M):
            dk_part, dv_part, dk2_part, dv2_part = _backward_step(
                head, out, grad_out, grad_head, LSE + pid * N, start, k, v, k2, v2, keys, tail, cols, N, H, HD,
                scale, BLOCK_M, TAIL, ACC, PRECISION)
            dk += dk_part
            dv += dv_part
            if TAIL > 0:
                dk2 += dk2_part
                dv2 += dv2_part
    _store(grad_head + H * HD, dk, keys, cols, N, HD, stride_n)
    _store(grad_head + 2 * H * HD, dv, keys, cols, N, HD, stride_n)
    if TAIL > 0:
        _store(grad_head + H * HD, dk2, tail, cols, N, HD, stride_n)
        _store(grad_head + 2 * H * HD, dv2, tail, cols, N, HD, stride_n)


@triton.jit
def attention_forward_blocks(QKV, O, LSE, N, H, HD, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_D: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr, INDEX: tl.constexpr):
    """Longer sequences: one program per (BLOCK_M queries, sample x head), stepping through the keys BLOCK_N at a
    time with the softmax kept running (its maximum and sum rescaled at each step, as FlashAttention does)."""
    blocks = tl.cdiv(N, BLOCK_M)
    rows = tl.program_id(0) % blocks * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(0) // blocks
    b, h = (bh // H).to(INDEX), bh % H  # INDEX: int64 where b * N * 3 * H * HD outgrows 32 bits
    stride_n = 3 * H * HD
    head, out = QKV + b * N * stride_n + h * HD, O + b * N * H * HD + h * HD
    cols = tl.arange(0, BLOCK_D)
    q = _load(head, rows, cols, N, HD, stride_n)
    m = tl.full((BLOCK_M,), float("-inf"), dtype=ACC)
    total = tl.zeros((BLOCK_M,), dtype=ACC)
    o = tl.zeros((BLOCK_M, BLOCK_D), dtype=ACC)
    for first in range(0, N, BLOCK_N):
        keys = first + tl.arange(0, BLOCK_N)
        k = _load(head + H * HD, keys, cols, N, HD, stride_n)
        v = _load(head + 2 * H * HD, keys, cols, N, HD, stride_n)
        s = _scores(q, k, keys, N, scale, ACC, PRECISION)  # (BLOCK_M, BLOCK_N)
        m_new = tl.maximum(m, tl.max(s, 1))
        rescale = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        total = total * rescale + tl.sum(p, 1)
        o = o * rescale[:, None] + tl.dot(p.to(v.dtype), v, out_dtype=ACC, input_precision=PRECISION)
        m = m_new
    _store(out, o / total[:, None], rows, cols, N, HD, H * HD)
    tl.store(LSE + bh * N + rows, m + tl.log(total), mask=rows < N)


@triton.jit
def attention_backward_blocks(QKV, O, DO, LSE, DQKV, N, H, HD, scale, BLOCK: tl.constexpr, STEP: tl.constexpr,
                    BLOCK_D: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr, INDEX: tl.constexpr):
    """Longer sequences: one program per (BLOCK tokens, sample x head) writes dk and dv of those BLOCK keys,
    stepping through the queries STEP at a time, then dq of those BLOCK queries, stepping through the keys. Each
    recomputes the probabilities from the saved log-sum-exp, and rowsum(dO * O) from dO and O."""
    blocks = tl.cdiv(N, BLOCK)
    block = tl.program_id(0) % blocks * BLOCK + tl.arange(0, BLOCK)
    bh = tl.program_id(0) // blocks
    b, h = (bh // H).to(INDEX), bh % H  # INDEX: int64 where b * N * 3 * H * HD outgrows 32 bits
    stride_n = 3 * H * HD
    head, grad_head = QKV + b * N * stride_n + h * HD, DQKV + b * N * stride_n + h * HD
    out, grad_out, lse_at = O + b * N * H * HD + h * HD, DO + b * N * H * HD + h * HD, LSE + bh * N
    cols = tl.arange(0, BLOCK_D)
    # dk, dv of the keys in `block`, transposed products throughout: (keys, queries) tiles
    k = _load(head + H * HD, block, cols, N, HD, stride_n)
    v = _load(head + 2 * H * HD, block, cols, N, HD, stride_n)
    dk = tl.zeros((BLOCK, BLOCK_D), dtype=ACC)
    dv = tl.zeros((BLOCK, BLOCK_D), dtype=ACC)
    for first in range(0, N, STEP):
        rows = first + tl.arange(0, STEP)
        q = _load(head, rows, cols, N, HD, stride_n)
        do = _load(grad_out, rows, cols, N, HD, H * HD)
        delta = tl.sum(do.to(ACC) * _load(out, rows, cols, N, HD, H * HD).to(ACC), 1)
        lse = tl.load(lse_at + rows, mask=rows < N, other=0.0)
        st = tl.dot(k, tl.trans(q), out_dtype=ACC, input_precision=PRECISION) * scale  # (BLOCK, STEP)
        pt = tl.where(rows[None, :] < N, tl.exp(st - lse[None, :]), 0.0)
        dv += tl.dot(pt.to(do.dtype), do, out_dtype=ACC, input_precision=PRECISION)
        dpt = tl.dot(v, tl.trans(do), out_dtype=ACC, input_precision=PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q, out_dtype=ACC, input_precision=PRECISION)
    _store(grad_head + H * HD, dk * scale, block, cols, N, HD, stride_n)
    _store(grad_head + 2 * H * HD, dv, block, cols, N, HD, stride_n)
    # dq of the queries in `block`
    q = _load(head, block, cols, N, HD, stride_n)
    do = _load(grad_out, block, cols, N, HD, H * HD)
    delta = tl.sum(do.to(ACC) * _load(out, block, cols, N, HD, H * HD).to(ACC), 1)
    lse = tl.load(lse_at + block, mask=block < N, other=0.0)
    dq = tl.zeros((BLOCK, BLOCK_D), dtype=ACC)
    for first in range(0, N, STEP):
        keys = first + tl.arange(0, STEP)  # new names: Triton's loops keep each name's shape
        k_step = _load(head + H * HD, keys, cols, N, HD, stride_n)
        v_step = _load(head + 2 * H * HD, keys, cols, N, HD, stride_n)
        p = tl.exp(_scores(q, k_step, keys, N, scale, ACC, PRECISION) - lse[:, None])  # (BLOCK, STEP)
        dp = tl.dot(do, tl.trans(v_step), out_dtype=ACC, input_precision=PRECISION)
        dq += tl.dot((p * (dp - delta[:, None])).to(k_step.dtype), k_step, out_dtype=ACC, input_precision=PRECISION)
    _store(grad_head, dq * scale, block, cols, N, HD, stride_n)


def _run(kernel: str, qkv: torch.Tensor, heads: int, *tensors: torch.Tensor) -> None:
    """``kernel`` 'forward' or 'backward' over ``qkv`` (B, N, 3*H*d). Compiled on CUDA; on the CPU only Triton's
    interpreter runs it."""
    if not qkv.is_cuda and not interpreted():
        raise VitbenchError(CPU_NEEDS_INTERPRETER)
    B, N, three_d = qkv.shape
    head_dim = three_d // (3 * heads)
    fn, grid, meta = _launch(kernel, B, N, heads, head_dim, qkv.dtype, qkv.numel())
    fn[grid](*tensors, N, heads, head_dim, head_dim**-0.5, **meta)


def _launch(kernel: str, batch: int, n: int, heads: int, head_dim: int, dtype: torch.dtype,
            elements: int) -> tuple:
    """(the Triton kernel, its grid, its compile-time arguments and launch options) for ``kernel`` 'forward' or
    'backward': up to ONE_BLOCK tokens one program per (sample, head), longer sequences one per block of tokens
    and (sample, head)."""
    if n <= ONE_BLOCK:
        return (attention_forward if kernel == "forward" else attention_backward), (batch * heads,), _meta(n, head_dim, dtype, elements)
    types = _types(head_dim, dtype, elements)
    if kernel == "forward":
        block_m, block_n, warps, stages = FORWARD_BLOCKS
        meta = dict(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages, **types)
        return attention_forward_blocks, (triton.cdiv(n, block_m) * batch * heads,), meta
    block, step, warps, stages = BACKWARD_BLOCKS
    meta = dict(BLOCK=block, STEP=step, num_warps=warps, num_stages=stages, **types)
    return attention_backward_blocks, (triton.cdiv(n, block) * batch * heads,), meta


def interpreted() -> bool:
    """Were the kernels made by Triton's interpreter (TRITON_INTERPRET=1 when triton was imported)?"""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(attention_forward, InterpretedFunction)


CPU_NEEDS_INTERPRETER = ("attention 'triton' runs its kernel on CUDA; on the CPU use another --attention "
                         "(vectorized computes the same function) or set TRITON_INTERPRET=1 (Triton's interpreter: slow)")


def key_blocks(n: int) -> tuple[int, int]:
    """How ``n`` keys are laid out in blocks (``tl.dot`` wants powers of two, at least 16): (KEYS, TAIL), one
    block of KEYS and, where a short second block pads less than the next power of two would, one of TAIL
    (0: none). 65 tokens -> (64, 16): 80 keys instead of 128."""
    whole = max(16, triton.next_power_of_2(n))
    keys = whole // 2
    tail = max(16, triton.next_power_of_2(n - keys)) if n > keys else 0
    return (keys, tail) if SPLIT_KEYS and keys >= 16 and 0 < tail and keys + tail < whole else (whole, 0)


# By the padded number of keys (KEYS + TAIL): (BLOCK_M queries per step, warps per program, software-pipelining
# stages). A step holds BLOCK_M x (KEYS + TAIL) scores (three such tiles in the backward pass); one step over the
# whole padded sequence is the short sequences' best, while at 128 keys a whole tile spilled registers. Chosen on
# the H100 by scripts/reproduce/attention_warps.py (results/speed.md); SPLIT_KEYS off pads to the next power of two.
TILES = {16: (16, 4, 3), 32: (32, 2, 3), 64: (64, 4, 3), 80: (16, 1, 3), 128: (32, 2, 1)}
SPLIT_KEYS = True


# Longer sequences (over ONE_BLOCK tokens): (BLOCK_M queries per program, BLOCK_N keys per step, warps, stages) of
# the forward kernel and (BLOCK tokens per program, STEP tokens per step, warps, stages) of the backward kernel.
# Chosen at ViT-B/16's shapes (197 tokens, 64 dims per head, bf16) by `real_sizes.sh attention`: the fastest of the
# shapes tried, forward and backward (results/logs/real_sizes_attention.txt).
ONE_BLOCK = 128
FORWARD_BLOCKS = (128, 64, 8, 3)
BACKWARD_BLOCKS = (64, 16, 4, 3)


# From this many elements of qkv on, the kernels compute their offsets in 64 bits; below, in 32 (64-bit offsets
# throughout made the forward by blocks slower: results/real_sizes.md).
WIDE_ELEMENTS = 2**31


def _types(head_dim: int, dtype: torch.dtype, elements: int = 0) -> dict:
    """The kernels' compile-time types for heads of ``head_dim``, ``dtype`` and a qkv of ``elements``."""
    return dict(BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
                ACC=tl.float64 if dtype == torch.float64 else tl.float32,
                PRECISION="ieee" if dtype in (torch.float32, torch.float64) else "tf32",
                INDEX=tl.int64 if elements >= WIDE_ELEMENTS else tl.int32)


def _meta(n: int, head_dim: int, dtype: torch.dtype, elements: int = 0) -> dict:
    keys, tail = key_blocks(n)
    block_m, warps, stages = TILES.get(keys + tail, (32, 2, 3))
    return dict(BLOCK_M=block_m, KEYS=keys, TAIL=tail, num_warps=warps, num_stages=stages,
                **_types(head_dim, dtype, elements))


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
    """Multi-head self-attention of the fused projection ``qkv`` (B, N, 3*D) -> (B, N, D)."""
    return _forward(qkv, heads)[0]
