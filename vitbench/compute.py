"""How a step computes: its numeric precision (bf16 / fp16 autocast, torchao's FP8 layers), torch.compile and the
process's cache of compiled versions, and the naive loop parts that stay eager."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
from torch import nn

from vitbench.config import ViTConfig
from vitbench.models.attention import ATTENTION
from vitbench.models.patchify import PATCHIFY

NAIVE_REASON = "off for the naive loop implementations (they stay the eager baseline)"


def naive_parts(model_cfg: ViTConfig | None) -> bool:
    """The from-scratch loop implementations (those with a ``batched_twin``): never captured or compiled
    (compiling would unroll their Python loops over samples and heads), so they stay the eager baseline."""
    return model_cfg is not None and (ATTENTION[model_cfg.attention].batched_twin is not None
                                      or PATCHIFY[model_cfg.patchify].batched_twin is not None)


def compiles(requested: bool, model_cfg: ViTConfig | None) -> bool:
    """Whether ``--compile`` applies: everywhere but the naive parts (``model_cfg`` None: a peer's model)."""
    return requested and not naive_parts(model_cfg)


def autocast_to(device_type: str, amp: torch.dtype | None) -> torch.autocast:
    """Autocast to ``amp`` (an ``AMP_DTYPES`` value); off for None (fp32)."""
    return torch.autocast(device_type, dtype=amp or torch.bfloat16, enabled=amp is not None)


# Autocast dtype per precision. fp8: torchao swaps the Linear layers for Float8Linear (e4m3 forward, e5m2
# gradients, dynamic per-tensor scales); everything else runs under bf16 autocast, as torchao recommends.
AMP_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16,
                                             "fp8": torch.bfloat16}


def precision_unavailable(precision: str, device: torch.device) -> str:
    """Why ``precision`` cannot run on ``device`` ('' when it can): fp8 needs tensor cores with FP8 (compute
    capability 8.9: Ada, Hopper and later) and torchao."""
    if precision != "fp8":
        return ""
    if device.type != "cuda":
        return (f"--precision fp8 needs an NVIDIA GPU with FP8 tensor cores (H100, H200, L4, L40S, RTX 4090); "
                f"this run is on {device.type}: use bf16")
    if torch.cuda.get_device_capability(device) < (8, 9):
        return (f"--precision fp8 needs FP8 tensor cores (compute capability 8.9 or newer); "
                f"{torch.cuda.get_device_name(device)} has {'.'.join(map(str, torch.cuda.get_device_capability(device)))}: use bf16")
    if importlib.util.find_spec("torchao") is None:
        return "--precision fp8 needs torchao: pip install 'vitbench[fp8]'"
    return ""


def inference(precision: str):
    """No autograd for evaluation: inference_mode, or no_grad for fp8 (under inference_mode autocast tries to cast
    torchao's float8 tensors inside its matmul, which they refuse)."""
    return torch.no_grad() if precision == "fp8" else torch.inference_mode()


def fp8_linear(module: nn.Module) -> bool:
    """A layer FP8 can take: a plain nn.Linear with both dimensions multiples of 16, as FP8 matmuls need."""
    return type(module) is nn.Linear and module.in_features % 16 == 0 and module.out_features % 16 == 0


def fp8_layers(model: nn.Module) -> list[str]:
    """The names of the layers ``to_float8`` swaps: every FP8-able Linear the model calls (not the projections an
    attention implementation reads as tensors: ``reads_weights``)."""
    read = {f"{name}.{w}" for name, m in model.named_modules() for w in getattr(m, "reads_weights", ())}
    return [name for name, m in model.named_modules() if fp8_linear(m) and name not in read]


def to_float8(model: nn.Module) -> int:
    """Swap ``model``'s FP8-able Linear layers for torchao's Float8Linear (same weights); how many were swapped."""
    from torchao.float8 import convert_to_float8_training

    taken = set(fp8_layers(model))
    convert_to_float8_training(model, module_filter_fn=lambda m, fqn: fqn in taken)
    return len(taken)


_COMPILED: dict[tuple[Callable, str], Callable] = {}
MODELS_PER_PROCESS = 64  # distinct model shapes one process compiles the step for (bench, suites, sweeps)
_MODELS: set[str] = set()  # the distinct models (with precision, batch and mode) this process compiled it for


def models_compiled() -> int:
    """Distinct models this process compiled its step for: each is one more version of the same compiled
    function, of which torch keeps MODELS_PER_PROCESS before it runs the function eagerly."""
    return len(_MODELS)


def room_to_compile() -> bool:
    """Whether a process that goes on serving commands (a warm process, a suite's kept worker) has room for as
    many models again: past half of MODELS_PER_PROCESS it makes way for a fresh process, so that no later
    command's step runs uncompiled while its runs say compiled."""
    return models_compiled() < MODELS_PER_PROCESS // 2


def compiled(fn: Callable, mode: str = "default") -> Callable:
    """One compiled wrapper per function for the process. Its arguments are a module, tensors and plain
    values, never an object of ours: a guard on such an object's identity would miss for every new Trainer.
    Each distinct model (attention, preset, dims, a peer's) is one more version of the same compiled
    function; torch runs a function eagerly once it has 8 versions, so a bench of ten models in one process
    timed its last ones uncompiled. The limit is raised to MODELS_PER_PROCESS."""
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.6
    setattr(config, limit, max(getattr(config, limit), MODELS_PER_PROCESS))
    if (fn, mode) not in _COMPILED:
        _COMPILED[fn, mode] = torch_compile(fn, mode)
    return _COMPILED[fn, mode]


def torch_compile(fn: Callable, mode: str = "default") -> Callable:
    """``torch.compile`` in one of its modes (vitbench.names.COMPILE_MODES; "default": torch's own)."""
    return torch.compile(fn, mode=None if mode == "default" else mode)


def count_compiled(model: str) -> None:
    """Note one more distinct model (its repr with precision, batch and mode) compiled in this process."""
    _MODELS.add(model)
