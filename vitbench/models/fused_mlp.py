"""fc1 and its GELU as one operator: cuBLAS's matmuls and two Triton kernels of ours (``mlp`` 'triton').

Forward: ``pre = x W^T + b`` (``F.linear``, the bias in cuBLAS's epilogue, as ``nn.Linear``), then one pass that
writes ``gelu(pre)``; both are kept, so the backward recomputes nothing. Backward: one pass reads the incoming
gradient and ``pre``, writes ``grad_pre = grad * gelu'(pre)`` and, per block of rows, the column sums of
``grad_pre`` (the bias gradient, summed over the blocks after), then ``grad_pre W`` and ``grad_pre^T x``
(cuBLAS). GELU is ``nn.GELU``'s, with erf: ``x Phi(x)``; its derivative ``Phi(x) + x phi(x)``. Sums and the GELU
are taken in float32 (float64 for float64 inputs) and rounded once to the tensors' dtype.

Under autocast the operator takes its inputs in the autocast dtype, as ``nn.Linear`` would (``linear_gelu`` casts
them). On CUDA the kernels are compiled by Triton; on the CPU they run only in Triton's interpreter
(``TRITON_INTERPRET=1`` set before triton is imported), slowly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.utils.flop_counter import register_flop_formula

from vitbench.errors import VitbenchError

INV_SQRT2 = tl.constexpr(0.7071067811865476)  # Triton kernels read globals only as constexpr
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _gelu_forward(pre, out, n, BLOCK: tl.constexpr, ACC: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = i < n
    x = tl.load(pre + i, mask=inside).to(ACC)
    y = 0.5 * x * (1.0 + tl.math.erf(x * INV_SQRT2))
    tl.store(out + i, y.to(out.dtype.element_ty), mask=inside)


@triton.jit
def _gelu_backward(grad, pre, grad_pre, partial, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   ACC: tl.constexpr):
    """One (BLOCK_M x BLOCK_N) tile of the (M, N) activation: grad_pre, and its column sums into row
    ``program_id(0)`` of ``partial`` (cdiv(M, BLOCK_M), N)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    inside = (rows[:, None] < M) & (cols[None, :] < N)
    at = rows[:, None] * N + cols[None, :]
    x = tl.load(pre + at, mask=inside, other=0.0).to(ACC)
    g = tl.load(grad + at, mask=inside, other=0.0).to(ACC)
    d = 0.5 * (1.0 + tl.math.erf(x * INV_SQRT2)) + x * INV_SQRT_2PI * tl.exp(-0.5 * x * x)
    gp = g * d
    tl.store(grad_pre + at, gp.to(grad_pre.dtype.element_ty), mask=inside)
    tl.store(partial + tl.program_id(0) * N + cols, tl.sum(gp, axis=0), mask=cols < N)


def interpreted() -> bool:
    """Were the kernels made by Triton's interpreter (TRITON_INTERPRET=1 when triton was imported)?"""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_gelu_forward, InterpretedFunction)


CPU_NEEDS_INTERPRETER = ("mlp 'triton' runs its kernels on CUDA; on the CPU use --mlp torch (the same function) "
                         "or set TRITON_INTERPRET=1 (Triton's interpreter: slow)")

# Chosen at ViT-S/16 and ViT-B/16 sizes, bf16: the fastest of the tiles and warps tried (results/real_sizes.md).
FORWARD_BLOCK, FORWARD_WARPS = 4096, 8  # elements per program
BACKWARD_TILE, BACKWARD_WARPS = (32, 128), 4  # (rows, columns) per program; bias-gradient partial sums per 32 rows


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _check_device(t: torch.Tensor) -> None:
    if not t.is_cuda and not interpreted():
        raise VitbenchError(CPU_NEEDS_INTERPRETER)


# Custom operators: torch.compile and CUDA graphs see one opaque op each way (no graph break), autograd pairs them.
@torch.library.custom_op("vitbench::linear_gelu", mutates_args=())
def _forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_device(x)
    pre = F.linear(x, weight, bias).contiguous()
    out = torch.empty_like(pre)
    n = pre.numel()
    _gelu_forward[(triton.cdiv(n, FORWARD_BLOCK),)](pre, out, n, BLOCK=FORWARD_BLOCK, ACC=_acc(pre.dtype),
                                                    num_warps=FORWARD_WARPS)
    return out, pre


@_forward.register_fake
def _(x, weight, bias):
    shape = (*x.shape[:-1], weight.shape[0])
    return x.new_empty(shape), x.new_empty(shape)


@torch.library.custom_op("vitbench::linear_gelu_backward", mutates_args=())
def _backward(grad_out: torch.Tensor, pre: torch.Tensor, x: torch.Tensor,
              weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_device(pre)
    N, K = weight.shape
    M = pre.numel() // N
    grad_out = grad_out.contiguous().to(pre.dtype)
    grad_pre = torch.empty_like(pre)
    rows, cols = BACKWARD_TILE
    partial = torch.empty(triton.cdiv(M, rows), N, device=pre.device,
                          dtype=torch.float64 if pre.dtype == torch.float64 else torch.float32)
    _gelu_backward[(triton.cdiv(M, rows), triton.cdiv(N, cols))](grad_out, pre, grad_pre, partial, M, N,
                                                                 BLOCK_M=rows, BLOCK_N=cols, ACC=_acc(pre.dtype),
                                                                 num_warps=BACKWARD_WARPS)
    gp = grad_pre.view(M, N)
    grad_x = (gp @ weight).view(x.shape)
    grad_weight = gp.t() @ x.reshape(M, K)
    return grad_x, grad_weight, partial.sum(0).to(weight.dtype)


@_backward.register_fake
def _(grad_out, pre, x, weight):
    return torch.empty_like(x), torch.empty_like(weight), weight.new_empty(weight.shape[0])


def _setup_context(ctx, inputs, output) -> None:
    x, weight, _ = inputs
    _, pre = output
    ctx.save_for_backward(x, weight, pre)


def _grad(ctx, grad_out, grad_pre):
    x, weight, pre = ctx.saved_tensors
    return _backward(grad_out, pre, x, weight)


_forward.register_autograd(_grad, setup_context=_setup_context)


# torch.utils.flop_counter (bench's FLOPs and MFU) counts the matmuls inside, as it would for nn.Linear's.
@register_flop_formula(torch.ops.vitbench.linear_gelu)
def _forward_flops(x_shape, weight_shape, bias_shape, *args, **kwargs) -> int:
    return 2 * math.prod(x_shape[:-1]) * weight_shape[0] * weight_shape[1]


@register_flop_formula(torch.ops.vitbench.linear_gelu_backward)
def _backward_flops(grad_shape, pre_shape, x_shape, weight_shape, *args, **kwargs) -> int:
    return 2 * _forward_flops(x_shape, weight_shape, None)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``gelu(F.linear(x, weight, bias))`` (erf GELU); in the autocast dtype where autocast is on, as nn.Linear."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
    return _forward(x, weight, bias)[0]
