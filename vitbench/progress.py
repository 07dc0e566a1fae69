"""What a person watching a long job sees.

On a terminal: a rich progress bar (step, images/s, loss, ETA). When output goes to a file (CI, nohup, a
cluster job): one plain line every ``interval`` seconds with the same fields, so a log shows the job is
alive. ``quiet``: neither. One-off notes (the projection of a run's length) are printed in every mode.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from vitbench.errors import VitbenchError

MODES = ("auto", "bar", "lines", "off")


def duration(seconds: float) -> str:
    """3.2 s, 12 s, 4 min 05 s, 1 h 17 min: what a person reads at a glance."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


@dataclass(frozen=True)
class Every:
    """A cadence: every ``seconds`` of wall time and/or every ``steps`` optimizer steps (None: never)."""

    seconds: float | None = 10.0
    steps: int | None = None

    @classmethod
    def parse(cls, text: str) -> Every:
        """'10s', '2.5s', '200' (steps), '200steps', 'off'."""
        t = text.strip().lower().replace(" ", "")
        if t in ("off", "0", "never", "none"):
            return cls(None, None)
        if m := re.fullmatch(r"(\d+(?:\.\d+)?)s(?:ec(?:onds?)?)?", t):
            if float(m[1]) > 0:
                return cls(float(m[1]), None)
        if m := re.fullmatch(r"(\d+)(?:steps?)?", t):
            return cls(None, int(m[1]))
        raise VitbenchError(f"cannot read {text!r} as a cadence; give seconds ('10s'), steps ('200') or 'off'")

    @property
    def on(self) -> bool:
        return self.seconds is not None or self.steps is not None


class Display:
    """One display shared by everything a command runs (a suite's runs, a sweep's trials), so a
    suite's bar and its current run's bar stack instead of fighting over the terminal."""

    def __init__(self, mode: str = "auto", interval: float = 30.0, log: Callable[[str], None] = print) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown display mode {mode!r}")
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.interval, self.log = mode, interval, log
        self._rich = None
        self._depth = 0

    def __enter__(self) -> Display:
        self._depth += 1
        if self.mode == "bar" and self._rich is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("{task.fields[stats]}"), transient=False)
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and self._rich is not None:
            self._rich.stop()
            self._rich = None

    def note(self, message: str) -> None:
        """A one-off line (in every mode, above the bar on a terminal)."""
        if self._rich is not None:
            self._rich.console.print(message, markup=False, highlight=False)
        else:
            self.log(message)

    def task(self, description: str, total: int | None, unit: str = "step") -> Task:
        return Task(self, description, total, unit)


class Task:
    """One unit of progress: ``update`` is cheap when nothing is due (a clock read and a comparison)."""

    def __init__(self, display: Display, description: str, total: int | None, unit: str) -> None:
        self.display, self.description, self.total, self.unit = display, description, total, unit
        self.completed = 0
        self.fields: dict[str, str] = {}
        self.started = time.perf_counter()
        self.last_line = self.started
        self._id = None
        if display._rich is not None:
            self._id = display._rich.add_task(description, total=total, stats="")

    def update(self, completed: int, *, description: str | None = None, fields: dict[str, str] | None = None,
               force_line: bool = False, total: int | None = None) -> None:
        """``total``: a new total (a schedule fitted to a budget)."""
        if total and total != self.total and self.display._rich is not None and self._id is not None:
            self.display._rich.update(self._id, total=total)
        self.completed, self.total = completed, total or self.total
        if description is not None:
            self.description = description
        if fields is not None:
            self.fields = fields
        d = self.display
        if d._rich is not None and self._id is not None:
            d._rich.update(self._id, completed=completed, description=self.description, stats=self.stats())
        elif d.mode == "lines":
            now = time.perf_counter()
            if force_line or now - self.last_line >= d.interval:
                self.last_line = now
                d.log(self.line())

    def stats(self) -> str:
        return " | ".join(f"{k} {v}" if k else v for k, v in self.fields.items())

    def line(self) -> str:
        done = f"{self.completed:,}/{self.total:,}" if self.total else f"{self.completed:,}"
        pct = f" ({self.completed / self.total:.0%})" if self.total else ""
        elapsed = duration(time.perf_counter() - self.started)
        return f"{self.description}: {self.unit} {done}{pct} | {self.stats()} | elapsed {elapsed}".replace("|  |", "|")

    def close(self) -> None:
        if self.display._rich is not None and self._id is not None:
            self.display._rich.remove_task(self._id)
            self._id = None
