"""Where our Triton kernels (``vitbench.models.fused_attention``, ``fused_mlp``) run, readable without importing
Triton: a part whose kernels cannot run on a device says so before a run or a bench starts."""

from __future__ import annotations

import importlib


def kernels_unavailable(device, module: str, part: str) -> str | None:
    """Why the kernels of ``vitbench.models.<module>`` (``part``'s) cannot run on ``device`` (None: they can). On
    CUDA Triton compiles them; elsewhere only Triton's interpreter runs them (TRITON_INTERPRET=1 set before triton
    is imported), which the module reports as ``interpreted()``."""
    if device.type == "cuda":
        return None
    try:
        kernels = importlib.import_module(f"vitbench.models.{module}")
    except ImportError:
        return f"{part} needs the triton package (it comes with torch's CUDA builds on Linux)"
    return None if kernels.interpreted() else kernels.CPU_NEEDS_INTERPRETER
