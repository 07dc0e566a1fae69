"""Which process trained a run: a warm process (``vitbench.warm_server`` sets ``SERVING`` while it runs a
command) or one of its own; and what a process serving command after command shares with the suite workers it
keeps (its own stdio, ``release_memory``). A leaf: the tracking layer reads it without importing the warm process."""

from __future__ import annotations

import gc
import os
import sys

SERVING: tuple[int, int] | None = None  # (pid, command number) while a warm process runs a command
# The warm process's own stdin, stdout, stderr (its log) while its 0, 1, 2 are the caller's: what a process it
# starts for longer than the command (a suite's workers, vitbench.workers) is given instead of the caller's.
STDIO: tuple[int, int, int] | None = None


def process_tag() -> str:
    return f"warm (pid {SERVING[0]}, command {SERVING[1]})" if SERVING else f"own (pid {os.getpid()})"


def release_memory() -> None:
    """After a command in a process that serves more (a warm process, a suite's kept worker): what the command
    left is collected and torch's CUDA cache goes back to the GPU (torch only if it is imported already)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
