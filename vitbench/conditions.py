"""The conditions a speed figure was measured under, on the CPU side: the machine (CPU model, cores), its load,
and how much of the CPU other processes took while the timed region ran. A busy machine changes every
images/s figure (15x, once, on a 2-core laptop), so each run and bench cell records these, says when the
machine was busy, and reports compare speed only between runs measured under comparable conditions.

Torch-free: psutil reads the system's and this process's CPU times."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from functools import lru_cache

import psutil

BUSY_SHARE = 0.2  # others took at least this share of the machine's CPU time while we measured: "busy"


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """'AMD EPYC 7B13' from /proc/cpuinfo on Linux; else what the platform says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    """The cores this process may run on (its affinity), which is what it competes for."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_seconds() -> tuple[float, float]:
    """(the whole machine's busy CPU seconds, this process's CPU seconds, its threads' included). A virtual
    machine's steal time counts as busy: the hypervisor gave those cycles to another tenant."""
    t = psutil.cpu_times()
    busy = t.user + t.system + sum(getattr(t, k, 0.0) for k in ("nice", "irq", "softirq", "steal"))
    p = psutil.Process().cpu_times()
    return busy, p.user + p.system + p.children_user + p.children_system


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return float("nan")


@dataclass
class Conditions:
    """CPU time accumulated over timed regions: ``start()`` ... ``stop()``, as often as there are regions."""

    wall: float = 0.0
    machine_busy: float = 0.0  # every process's CPU seconds, ours included
    ours: float = 0.0
    load_start: float = float("nan")
    load_end: float = float("nan")
    _at: tuple[float, float, float] | None = None

    def start(self) -> None:
        if self.load_start != self.load_start:
            self.load_start = load_average()
        self._at = (time.perf_counter(), *cpu_seconds())

    def stop(self) -> None:
        if self._at is None:
            return
        t0, busy0, ours0 = self._at
        busy1, ours1 = cpu_seconds()
        self.wall += time.perf_counter() - t0
        self.machine_busy += max(busy1 - busy0, 0.0)
        self.ours += max(ours1 - ours0, 0.0)
        self.load_end = load_average()
        self._at = None

    @property
    def others_share(self) -> float:
        """The share of the machine's CPU time (its cores x the wall time) that other processes used."""
        if self.wall <= 0:
            return float("nan")
        return min(max(self.machine_busy - self.ours, 0.0) / (self.wall * (os.cpu_count() or 1)), 1.0)

    @property
    def process_share(self) -> float:
        """The CPU time this process got, over the wall time x the cores it may use."""
        return self.ours / (self.wall * cores()) if self.wall > 0 else float("nan")

    @property
    def busy(self) -> bool:
        return self.others_share >= BUSY_SHARE

    def metrics(self) -> dict[str, float]:
        """What a run or a cell records (``cond_*``), NaN left out."""
        out = {"cond_others_cpu_share": self.others_share, "cond_process_cpu_share": self.process_share,
               "cond_load_avg_start": self.load_start, "cond_load_avg_end": self.load_end}
        return {k: round(v, 3) for k, v in out.items() if v == v}

    def verdict(self) -> str:
        """'' on a quiet machine; else the sentence a run ends with and its ``busy_machine`` tag holds."""
        if not self.busy:
            return ""
        return (f"the machine was busy: other processes used {self.others_share:.0%} of its CPU time while this was "
                f"timed (load average {self.load_start:.1f} -> {self.load_end:.1f} on {os.cpu_count()} cores); "
                "speed figures measured so are not comparable with a quiet machine's")
