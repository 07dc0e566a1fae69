"""Which process trained a run: a warm process (``vitbench.warm_server`` sets ``SERVING`` while it runs a
command) or one of its own; and ``release_memory`` between two of its commands. A leaf: the tracking layer reads it without importing the warm process."""

from __future__ import annotations

import gc
import os
import sys

SERVING: tuple[int, int] | None = None  # (pid, command number) while a warm process runs a command


def process_tag() -> str:
    return f"warm (pid {SERVING[0]}, command {SERVING[1]})" if SERVING else f"own (pid {os.getpid()})"


def release_memory() -> None:
    """After a command in a process that serves more (a warm process): what the command
    left is collected and torch's CUDA cache goes back to the GPU (torch only if it is imported already)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
