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
            "n": float(len(times)), "mean": statistics.fmean(times)}


def free_memory(device: torch.device) -> float:
    """Collect garbage (CUDA-graph pools of finished runs, caches) and return the MiB still allocated:
    the baseline a new measurement subtracts, so what came before it does not count. On the CPU the peak is the
    process's and the baseline 0: no collection (half a second over everything a run has imported)."""
    if device.type != "cuda":
        return 0.0
    gc.collect()
    torch.cuda.empty_cache()
    _warm_blas(device)
    return torch.cuda.memory_allocated(device) / 2**20


_SIDE_STREAMS: dict[int, torch.cuda.Stream] = {}


def side_stream(device: torch.device) -> torch.cuda.Stream:
    """One side stream per GPU for every warm-up and CUDA-graph capture of the process. cuBLAS keeps workspaces
    per stream (~64 MiB), never freed: a new stream per run leaked them run after run."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SIDE_STREAMS:
        _SIDE_STREAMS[index] = torch.cuda.Stream(device)
    return _SIDE_STREAMS[index]


def _warm_blas(device: torch.device) -> None:
    """Make the libraries' per-stream workspaces (cuBLAS, cuBLASLt, cuDNN's convolution and attention) on the
    streams a run uses before a baseline is taken: made in a process's first run, they counted ~100 MiB in its
    peak and in no later run's (one cell, two peaks)."""
    import torch.nn.functional as F

    for stream in (torch.cuda.current_stream(device), side_stream(device)):
        with torch.cuda.stream(stream):
            for dtype in (torch.float32, torch.bfloat16):
                a = torch.ones(16, 16, device=device, dtype=dtype, requires_grad=True)
                out = torch.addmm(a, a, a).sum() + (a @ a).sum()
                img = torch.ones(2, 3, 8, 8, device=device, dtype=dtype, requires_grad=True)
                out = out + F.conv2d(img, torch.ones(4, 3, 4, 4, device=device, dtype=dtype), stride=4).sum()
                q = torch.ones(2, 2, 8, 16, device=device, dtype=dtype, requires_grad=True)
                out = out + F.scaled_dot_product_attention(q, q, q).sum()
                out.backward()
        stream.synchronize()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(MiB, source): CUDA's max_memory_allocated since the last reset, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"
