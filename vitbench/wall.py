"""Where a command's wall time goes: named phases, summed over the process, and what is left over.

``START`` is when vitbench was first imported (the interpreter's own start-up, ~50 ms, comes before it);
``summary()`` is printed after ``run``'s result, so what follows it (the process's exit) is not in it.
"""

from __future__ import annotations

import contextlib
import time

START = time.perf_counter()
SINCE = "vitbench was imported"
PHASES: dict[str, float] = {}


def restart(since: str, earlier: float = 0.0) -> None:
    """Count from now, or from ``earlier`` seconds ago (a warm process taking its next command:
    ``vitbench.warm``; a suite's worker, from when the coordinator started it)."""
    global START, SINCE
    START, SINCE = time.perf_counter() - earlier, since
    PHASES.clear()


def add(name: str, seconds: float) -> None:
    PHASES[name] = PHASES.get(name, 0.0) + seconds


@contextlib.contextmanager
def phase(name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - t0)


def mark(name: str) -> None:
    """Everything from ``START`` not yet in a phase, up to now, goes to ``name`` (e.g. the imports)."""
    add(name, max(0.0, time.perf_counter() - START - sum(PHASES.values())))


def summary() -> str:
    total = time.perf_counter() - START
    parts = [f"{name} {seconds:.2f}" for name, seconds in PHASES.items() if seconds >= 0.005]
    rest = total - sum(PHASES.values())
    return f"wall {total:.2f} s since {SINCE}: " + ", ".join([*parts, f"other {rest:.2f}"])
