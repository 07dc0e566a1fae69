"""Timing and memory discipline shared by `run` and `bench`: warm-up outside the timed region,
CUDA events (or a synchronised host clock on CPU), every sample kept for medians and spread."""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections.abc import Callable

import torch


def resolve_device(device: str = "auto") -> torch.device:
    from vitbench.errors import VitbenchError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cuda", "cpu") and not device.startswith("cuda:"):
        raise VitbenchError(f"unknown device {device!r}; valid: auto, cuda, cuda:N, cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VitbenchError(f"--device {device} asked for, but no CUDA device is available; use --device cpu")
    return torch.device(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(fn: Callable[[], object], device: torch.device, warmup: int = 3, repeats: int = 20,
               max_seconds: float | None = None) -> list[float]:
    """Seconds per call of ``fn`` for up to ``repeats`` calls after ``warmup`` untimed ones.

    ``max_seconds`` bounds the whole measurement (warm-up included); at least one call is timed.
    """
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
        if max_seconds is not None and time.perf_counter() - start > max_seconds / 2:
            break
    synchronize(device)
    times: list[float] = []
    for _ in range(repeats):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    return times


def quantile(xs: list[float], q: float) -> float:
    """Linear-interpolated quantile; q in [0, 1]."""
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[max(0, min(98, round(q * 100) - 1))]


def summarize(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "p10": quantile(times, 0.10), "p90": quantile(times, 0.90),
            "n": float(len(times))}


def free_memory(device: torch.device) -> float:
    """Collect garbage (CUDA-graph pools of finished runs, caches) and return the MiB still allocated:
    the baseline a new measurement subtracts, so what came before it does not count."""
    gc.collect()
    if device.type != "cuda":
        return 0.0
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated(device) / 2**20


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(MiB, source): CUDA's max_memory_allocated since the last reset, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"
