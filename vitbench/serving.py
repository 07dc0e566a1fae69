"""Which process trained a run: a warm process (``vitbench.warm_server`` sets ``SERVING`` while it runs a
command) or one of its own. A leaf: the tracking layer reads it without importing the warm process."""

from __future__ import annotations

import os

SERVING: tuple[int, int] | None = None  # (pid, command number) while a warm process runs a command
# The warm process's own stdin, stdout, stderr (its log) while its 0, 1, 2 are the caller's: what a process it
# starts for longer than the command (a suite's workers, vitbench.workers) is given instead of the caller's.
STDIO: tuple[int, int, int] | None = None


def process_tag() -> str:
    return f"warm (pid {SERVING[0]}, command {SERVING[1]})" if SERVING else f"own (pid {os.getpid()})"
