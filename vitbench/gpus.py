"""Which GPUs this process is given, told without importing torch (seconds): what starts worker processes
(``suite --gpus N``) and warm processes (``vitbench.warm``) reads it before torch is imported."""

from __future__ import annotations

import os
from pathlib import Path

DEVICE_FILE = Path("/dev/nvidia0")  # the NVIDIA driver's first GPU: where it exists, a GPU is likely present


def listed_gpus() -> list[str]:
    """The GPU ids in CUDA_VISIBLE_DEVICES, in order ([] where it is unset or empty)."""
    return [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
