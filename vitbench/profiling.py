"""Where a step's time goes: torch.profiler over a few more steps of the very function that was timed (a CUDA-graph
replay included), its GPU kernels (on the CPU: its ops, by self time) grouped by what they do, in ms per step and
% of the step, with the Chrome/Perfetto trace beside (https://ui.perfetto.dev opens trace.json)."""

from __future__ import annotations

import copy
import csv
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from vitbench.timing import synchronize

# What a kernel or op does, by lower-case pieces of its name; the first group that matches wins, so the specific
# (attention, normalisation, the optimizer's fused kernels) come before the general (matmul, copies, elementwise).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention", ("attention", "attn", "sdpa", "flash", "fmha", "softmax")),
    ("normalisation", ("layer_norm", "layernorm", "batch_norm", "rms_norm", "norm_")),
    ("optimizer", ("adam", "foreach", "multi_tensor", "lerp", "clip_grad")),
    ("matmul", ("gemm", "matmul", "addmm", "bmm", "aten::mm", "linear", "cutlass", "cublas", "xmma", "nvjet",
                "conv")),  # nvjet: cuBLAS's kernels on Hopper
    ("copies_layout", ("copy", "contiguous", "transpose", "permute", "aten::cat", "clone", "memcpy", "memset",
                       "index", "unfold", "im2col", "fill", "zero", "as_strided", "expand", "aten::t")),
    ("elementwise_activation", ("gelu", "relu", "silu", "add", "mul", "div", "sub", "elementwise", "pointwise",
                                "dropout", "triton_poi", "triton_red", "exp", "where", "sum", "mean", "reduce",
                                "pow", "sqrt", "rsqrt", "neg", "max", "tanh")),
)
KINDS = (*(g for g, _ in GROUPS), "other")
SKIP = ("profilerstep", "[memory]", "cudagraphlaunch", "cudalaunchkernel", "cudastreamsynchronize",
        "cudadevicesynchronize", "cudagraph")  # bookkeeping, not the step's work


def kind(name: str) -> str:
    """The group of a kernel's or an op's name (``other`` where none fits)."""
    low = name.lower()
    return next((g for g, pieces in GROUPS if any(p in low for p in pieces)), "other")


def profile_steps(fn: Callable[[], None], device: torch.device, steps: int, folder: Path) -> dict[str, float]:
    """ms per step of each kind (KINDS) over ``steps`` calls of ``fn``, profiled after one more untimed call;
    ``folder`` gets trace.json and breakdown.csv (kind, ms per step, % of the step)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    fn()
    synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        for _ in range(steps):
            fn()
        synchronize(device)
    folder.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(folder / "trace.json"))
    ms = dict.fromkeys(KINDS, 0.0)
    for e in prof.key_averages():
        if any(s in e.key.lower() for s in SKIP) or (cuda and e.device_type != DeviceType.CUDA):
            continue
        ms[kind(e.key)] += (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1000 / steps
    total = sum(ms.values()) or float("nan")
    with open(folder / "breakdown.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "ms_per_step", "percent"])
        w.writerows([k, f"{v:.4f}", f"{100 * v / total:.1f}"] for k, v in ms.items())
    return ms


def profile_trainer(trainer, position: dict, loader, steps: int, log: Callable[[str], None]) -> tuple[dict, str]:
    """`run --profile N`: N more steps of the step that was timed (its CUDA graph replayed, where one was captured)
    on the first training batch, profiled; then the weights, optimizer, schedule and EMA put back as training left
    them, so the model recorded is the one evaluated. Returns ``profile_steps``'s breakdown and its folder."""
    from vitbench.checkpoints import restore_trainer, trainer_state
    from vitbench.data import first_batch

    saved = copy.deepcopy(trainer_state(trainer, position))
    x, y = first_batch(loader)
    folder = Path(tempfile.mkdtemp(prefix="vitbench-profile-"))
    log(f"profiling {steps} more steps ...")
    ms = profile_steps(lambda: trainer.run_step(x, y), trainer.device, steps, folder)
    restore_trainer(trainer, saved)
    return ms, str(folder)
