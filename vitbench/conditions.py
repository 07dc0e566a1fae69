"""The conditions a speed figure was measured under: on the CPU side the machine (CPU model, cores), its load, and
how much of the CPU other processes took while the timed region ran; on a GPU, through NVIDIA's NVML, its clocks,
power, temperature and whether it throttled. A busy machine changes every images/s figure, a throttled GPU too,
so each run and bench cell records these and says when either happened.

Torch-free: psutil reads the system's and this process's CPU times, nvidia-ml-py the GPU's."""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass, field
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


# NVML's clock event reasons that slow a timed region down (not idling, not clocks a user set), as a line names them
SLOWDOWNS = {0x4: "power cap", 0x8: "hardware slowdown", 0x20: "thermal (software)", 0x40: "thermal (hardware)",
             0x80: "power brake"}
SAMPLE_SECONDS = 0.1  # NVML readings while a region is timed
_NVML: object = None  # the initialised pynvml module, False where there is none


def nvml():
    """NVIDIA's management library (nvidia-ml-py), initialised once; None without it or without a driver."""
    global _NVML
    if _NVML is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            _NVML = pynvml
        except Exception:
            _NVML = False
    return _NVML or None


def nvml_gpus() -> list[str]:
    """The GPUs NVML sees (ids as CUDA_VISIBLE_DEVICES takes them), [] where it sees none."""
    lib = nvml()
    try:
        return [str(i) for i in range(lib.nvmlDeviceGetCount())] if lib else []
    except Exception:
        return []


@dataclass
class GpuSampler:
    """One GPU's NVML readings while timed regions run (a thread reads every SAMPLE_SECONDS): SM and memory clocks,
    power, temperature, and the clock event reasons that slow it down."""

    handle: object
    samples: list[tuple[float, float, float, float, int]] = field(default_factory=list)  # sm, mem MHz, W, C, reasons
    _done: threading.Event | None = None

    @classmethod
    def of(cls, device) -> GpuSampler | None:
        """The sampler of a torch ``device`` (a CUDA device of those this process sees); None on the CPU or without
        NVML."""
        if device.type != "cuda" or (lib := nvml()) is None:
            return None
        from vitbench.gpus import listed_gpus

        index, listed = device.index or 0, listed_gpus()
        gpu = listed[index] if index < len(listed) else str(index)
        try:
            return cls(lib.nvmlDeviceGetHandleByIndex(int(gpu)) if gpu.isdigit() else lib.nvmlDeviceGetHandleByUUID(gpu))
        except Exception:
            return None

    def read(self) -> None:
        lib = nvml()
        h = self.handle
        # "throttle" reasons until nvidia-ml-py 12.535 named them clock "event" reasons
        reasons = getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None) or lib.nvmlDeviceGetCurrentClocksThrottleReasons
        self.samples.append((lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_SM),
                             lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_MEM), lib.nvmlDeviceGetPowerUsage(h) / 1000,
                             lib.nvmlDeviceGetTemperature(h, lib.NVML_TEMPERATURE_GPU),
                             reasons(h)))

    def start(self) -> None:
        self._done = done = threading.Event()

        def sample() -> None:
            while True:
                try:
                    self.read()
                except Exception:
                    return  # the GPU's readings stop; the measurement goes on
                if done.wait(SAMPLE_SECONDS):
                    return

        threading.Thread(target=sample, name="vitbench-nvml", daemon=True).start()

    def stop(self) -> None:
        if self._done is not None:
            self._done.set()
            self._done = None

    @property
    def slowdowns(self) -> dict[str, float]:
        """Each slowdown reason seen and the share of the readings it was on in."""
        n = len(self.samples)
        return {name: sum(bool(s[4] & bit) for s in self.samples) / n for bit, name in SLOWDOWNS.items()
                if n and any(s[4] & bit for s in self.samples)}

    def metrics(self) -> dict[str, float]:
        if not self.samples:
            return {}
        sm, mem, watts, temp, _ = zip(*self.samples, strict=True)
        lib, h = nvml(), self.handle
        out = {"cond_gpu_sm_clock_mhz_mean": sum(sm) / len(sm), "cond_gpu_sm_clock_mhz_min": min(sm),
               "cond_gpu_mem_clock_mhz_mean": sum(mem) / len(mem), "cond_gpu_power_w_mean": sum(watts) / len(watts),
               "cond_gpu_power_w_max": max(watts), "cond_gpu_temp_c_max": max(temp),
               "cond_gpu_throttled_share": sum(any(s[4] & b for b in SLOWDOWNS) for s in self.samples) / len(sm)}
        try:
            out |= {"cond_gpu_power_limit_w": lib.nvmlDeviceGetEnforcedPowerLimit(h) / 1000,
                    "cond_gpu_sm_clock_mhz_max": lib.nvmlDeviceGetMaxClockInfo(h, lib.NVML_CLOCK_SM)}
        except Exception:
            pass
        return out

    def verdict(self) -> str:
        """'' where the GPU ran unhindered; else the line a run ends with and its ``gpu_throttled`` tag holds."""
        if not (slow := self.slowdowns):
            return ""
        sm = [s[0] for s in self.samples]
        return (f"the GPU slowed down while this was timed ({', '.join(f'{k} {v:.0%} of the time' for k, v in slow.items())};"
                f" SM clock {min(sm):.0f}-{max(sm):.0f} MHz): speed figures measured so are not comparable with an "
                "unhindered GPU's")


@dataclass
class Conditions:
    """CPU time accumulated over timed regions: ``start()`` ... ``stop()``, as often as there are regions; with
    ``gpu``, that GPU's NVML readings over the same regions."""

    wall: float = 0.0
    machine_busy: float = 0.0  # every process's CPU seconds, ours included
    ours: float = 0.0
    load_start: float = float("nan")
    load_end: float = float("nan")
    gpu: GpuSampler | None = None
    _at: tuple[float, float, float] | None = None

    def start(self) -> None:
        if self.load_start != self.load_start:
            self.load_start = load_average()
        if self.gpu is not None:
            self.gpu.start()
        self._at = (time.perf_counter(), *cpu_seconds())

    def stop(self) -> None:
        if self.gpu is not None:
            self.gpu.stop()
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
               "cond_load_avg_start": self.load_start, "cond_load_avg_end": self.load_end,
               **(self.gpu.metrics() if self.gpu is not None else {})}
        return {k: round(v, 3) for k, v in out.items() if v == v}

    def gpu_verdict(self) -> str:
        return self.gpu.verdict() if self.gpu is not None else ""

    def verdict(self) -> str:
        """'' on a quiet machine; else the sentence a run ends with and its ``busy_machine`` tag holds."""
        if not self.busy:
            return ""
        return (f"the machine was busy: other processes used {self.others_share:.0%} of its CPU time while this was "
                f"timed (load average {self.load_start:.1f} -> {self.load_end:.1f} on {os.cpu_count()} cores); "
                "speed figures measured so are not comparable with a quiet machine's")
