"""Which GPUs this process is given, told without importing torch (seconds): what starts worker processes
(``suite --gpus N``) and warm processes (``vitbench.warm``) reads it before torch is imported."""

from __future__ import annotations

import os


def listed_gpus() -> list[str]:
    """The GPU ids in CUDA_VISIBLE_DEVICES, in order ([] where it is unset or empty)."""
    return [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]


# Dense (no sparsity) peak TFLOP/s of NVIDIA's data sheets, by precision: bf16 / fp16 tensor cores (the same
# peak), fp8 tensor cores where the GPU has them, and fp32 without tensor cores (torch's default for fp32
# matmuls). Model FLOP utilisation (MFU) = achieved / this. Matched by the first name that the device's name
# contains, so the more specific names come first.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "fp32": 66.9}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp8": 1513.0, "fp32": 51.2}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "fp32": 66.9}),  # SXM
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.1, "fp16": 362.1, "fp8": 733.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "fp8": 242.5, "fp32": 30.3}),
    ("A10", {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2}),
    ("RTX 4090", {"bf16": 165.2, "fp16": 165.2, "fp32": 82.6}),
)


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The device's dense peak at ``precision``, or None for a device (or a CPU) not in the table."""
    for name, peaks in PEAK_TFLOPS:
        if name.lower() in device_name.lower():
            return peaks.get(precision)
    return None
