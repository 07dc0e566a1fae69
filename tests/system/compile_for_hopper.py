"""Compiles each of vitbench's Triton kernels for a Hopper GPU (sm_90) with the launch shapes vitbench uses there,
no GPU needed. Triton's interpreter, which runs the kernels in the CPU tests, accepts code that its GPU compiler
refuses (a loop-carried name changing shape, a module-level constant that is not a constexpr); this catches that.
Run by tests/system/test_models.py in a process of its own, with the interpreter off: ``python tests/system/compile_for_hopper.py``.
"""

from __future__ import annotations

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from vitbench.models import fused_attention as fa
from vitbench.models import fused_mlp

SHAPE = {"N": "i32", "H": "i32", "HD": "i32", "scale": "fp32"}
FORWARD = {"QKV": "*bf16", "O": "*bf16", "LSE": "*fp32", **SHAPE}
BACKWARD = {"QKV": "*bf16", "O": "*bf16", "DO": "*bf16", "LSE": "*fp32", "DQKV": "*bf16", **SHAPE}


def compile_kernel(fn, types: dict[str, str], constants: dict, num_warps: int, num_stages: int = 3) -> None:
    source = ASTSource(fn, {**types, **dict.fromkeys(constants, "constexpr")}, constants)
    triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, num_stages=num_stages))
    print("compiled", fn.__name__, constants.get("BLOCK_M", constants.get("BLOCK", "")), flush=True)


def main() -> None:
    bf16 = torch.bfloat16
    # the mnist and cifar10 presets (one program per sample and head) and 224 px (197 tokens, by blocks), launched
    # as vitbench launches them
    for tokens, head_dim in ((17, 16), (65, 12), (197, 64)):
        for kernel, types in (("forward", FORWARD), ("backward", BACKWARD)):
            fn, _, meta = fa._launch(kernel, 256, tokens, 6, head_dim, bf16, 0)
            compile_kernel(fn, types, meta, num_warps=meta.pop("num_warps"), num_stages=meta.pop("num_stages"))
    acc = fused_mlp._acc(bf16)
    compile_kernel(fused_mlp._gelu_forward, {"pre": "*bf16", "out": "*bf16", "n": "i64"},
                   dict(BLOCK=fused_mlp.FORWARD_BLOCK, ACC=acc), fused_mlp.FORWARD_WARPS)
    rows, cols = fused_mlp.BACKWARD_TILE
    compile_kernel(fused_mlp._gelu_backward, {"grad": "*bf16", "pre": "*bf16", "grad_pre": "*bf16",
                                              "partial": "*fp32", "M": "i32", "N": "i32"},
                   dict(BLOCK_M=rows, BLOCK_N=cols, ACC=acc), fused_mlp.BACKWARD_WARPS)


if __name__ == "__main__":
    main()
