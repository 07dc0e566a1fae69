"""`vitbench bench`: speed and memory of every implementation, with spread.

Modelled on timm's benchmark.py (warm-up, synchronised timing, OOM batch decay, CSV with
``*_samples_per_sec`` / ``*_step_time`` keys) plus what it lacks: peak memory, p10/p90 of the step
time, FLOPs and achieved TFLOP/s, and token scaling. Inputs are synthetic: no dataset is needed.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from vitbench import names
from vitbench.bench_rows import MODES, progress_line
from vitbench.compute import (
    AMP_DTYPES,
    autocast_to,
    compiles,
    inference,
    precision_unavailable,
    to_float8,
    torch_compile,
)
from vitbench.conditions import Conditions, GpuSampler
from vitbench.errors import VitbenchError, check_field_types, check_number
from vitbench.models import ViTConfig, count_params, list_variants, resolve_config
from vitbench.models.attention import ATTENTION
from vitbench.models.registry import get_preset
from vitbench.models.vit import unavailable
from vitbench.peers import PEER_BUILDERS, peer_builder
from vitbench.progress import Display, Task, duration
from vitbench.timing import (
    free_memory,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    summarize,
    synchronize,
    time_steps,
)
from vitbench.train import TrainConfig, Trainer


@dataclass(frozen=True)
class Entry:
    """One model to measure: a vitbench variant or a peer library's ViT of the same dimensions."""

    name: str
    cfg: ViTConfig
    peer: str | None = None
    peer_graph: bool = False  # run the peer through vitbench's CUDA-graph step too (same trick, same gain)
    compile: bool = False  # torch.compile the model (inside the CUDA graph where there is one)


@dataclass(frozen=True)
class BenchOptions:
    modes: tuple[str, ...] = MODES
    precision: str = "fp32"
    compile: bool = False  # recorded with the run; each Entry says whether it is compiled
    compile_mode: str = "default"  # torch.compile's mode
    cuda_graph: bool | None = None  # vitbench variants' training step; None: where it applies
    warmup: int = 5
    repeats: int = 20
    max_seconds: float | None = 30.0  # per cell and mode
    device: str = "auto"  # resolved once, here: "cuda" / "cpu" after construction
    seed: int = 0
    retry: bool = True  # on CUDA OOM, retry the cell at a smaller batch (timm's benchmark.py does); off: fail it
    detail: bool = False  # train: also time forward, backward and the optimizer's update apart (timm's --detail)
    profile: int = 0  # profile this many more steps of each cell's timed function (vitbench.profiling)

    def __post_init__(self) -> None:
        check_field_types(self)
        check_number("warmup", self.warmup, 0)
        check_number("repeats", self.repeats, 1)
        check_number("seed", self.seed, 0)
        check_number("profile", self.profile, 0, 1000)
        if self.max_seconds is not None:
            check_number("max_seconds", self.max_seconds, 0.0, low_open=True)
        object.__setattr__(self, "device", str(resolve_device(self.device)))

    @property
    def graphs(self) -> bool:
        """Whether the whole-step CUDA graph applies here, so peers get a row stepped through it too."""
        return self.device.startswith("cuda") and self.cuda_graph is not False


def decay_batch(batch_size: int) -> int:
    """Next smaller batch after an OOM, timm-style: powers of two with one step between
    (1024, 768, 512, 384, 256, ...); 0 when there is nothing smaller."""
    if batch_size <= 1:
        return 0
    base = 2 ** int(math.log2(batch_size - 1))
    step = max(base // 2, 1)
    return base + ((batch_size - base - 1) // step) * step


def build_model(entry: Entry) -> nn.Module:
    if entry.peer is None:
        from vitbench.models import ViT

        return ViT(entry.cfg)
    return peer_builder(entry.peer)(entry.cfg)


def counting_twin(entry: Entry) -> Entry:
    """The entry whose FLOPs are counted: itself, or for an attention the counter cannot see into (a fused
    custom kernel, FlexAttention's compiled one) the same function written with batched matmuls."""
    if entry.peer or ATTENTION[entry.cfg.attention].counts_flops:
        return entry
    return replace(entry, cfg=replace(entry.cfg, attention="vectorized"), compile=False)


def flops_per_image(model: nn.Module, cfg: ViTConfig, device: torch.device) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs for one image, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, cfg.in_chans, cfg.image_size, cfg.image_size, device=device)
    model.train()
    with FlopCounterMode(display=False) as fwd:
        out = model(x)
    with FlopCounterMode(display=False) as bwd:
        out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    f = fwd.get_total_flops() / 2
    return f, f + bwd.get_total_flops() / 2


def _measure(entry: Entry, model: nn.Module, mode: str, batch: int, opts: BenchOptions,
             device: torch.device) -> dict:
    """Time one (model, mode, batch) cell; raises torch.OutOfMemoryError when it does not fit."""
    c = entry.cfg
    gen = torch.Generator(device=device).manual_seed(opts.seed)
    x = torch.randn(batch, c.in_chans, c.image_size, c.image_size, device=device, generator=gen)
    y = torch.randint(0, c.num_classes, (batch,), device=device, generator=gen)
    reset_peak_memory(device)
    extra = {}
    if mode == "train":
        tcfg = TrainConfig(variant=entry.name, batch_size=batch, precision=opts.precision, compile=entry.compile,
                           compile_mode=opts.compile_mode,
                           cuda_graph=opts.cuda_graph if entry.peer is None or entry.peer_graph else False,
                           device=str(device), seed=opts.seed, warmup_epochs=0, grad_clip=1.0)
        trainer = Trainer(tcfg, None if entry.peer else c, steps_per_epoch=10**6, log=lambda s: None, model=model)
        t0 = time.perf_counter()
        if trainer.use_graph or trainer.use_compile:  # capture / compile, untimed; eager cells warm up in time_steps
            trainer.warm_up(x, y, steps=max(1, min(opts.warmup, 3)))
        extra["warmup_seconds"] = time.perf_counter() - t0
        extra["cuda_graph"] = trainer.graph is not None
        extra["compiled"] = trainer.use_compile
        if opts.detail:
            extra["phases"] = timed_phases(trainer, x, y, opts)

        def fn() -> None:
            trainer.run_step(x, y)
    else:
        compiled = compiles(entry.compile, None if entry.peer else c)
        if opts.precision == "fp8":  # available: run_bench checked before any cell
            to_float8(model)
        run_model = torch_compile(model, opts.compile_mode) if compiled else model
        model.eval()
        autocast = autocast_to(device.type, AMP_DTYPES[opts.precision])

        def fn() -> None:
            with inference(opts.precision), autocast:
                run_model(x)

        extra["cuda_graph"], extra["compiled"] = False, compiled
    cond = Conditions(gpu=GpuSampler.of(device))
    cond.start()
    times = time_steps(fn, device, warmup=opts.warmup, repeats=opts.repeats, max_seconds=opts.max_seconds)
    synchronize(device)
    cond.stop()
    extra["conditions"] = cond.metrics()
    mem, source = peak_memory_mb(device)
    if opts.profile:  # after the timing and its peak: the profiler's own memory and time are no part of them
        import tempfile

        from vitbench.profiling import profile_steps

        folder = Path(tempfile.mkdtemp(prefix="vitbench-profile-"))
        extra["profile"] = (profile_steps(fn, device, opts.profile, folder), str(folder))
    model.train()
    return {**summarize(times), "peak_memory_mb": mem, "memory_source": source, **extra}


def step_phases(trainer: Trainer, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """One step, uncaptured, with forward, backward and the optimizer's update timed apart (seconds each), as
    timm's benchmark.py --detail does: each phase ends in a synchronisation, so the three add up to more than
    a step that flows freely."""
    def timed(fn: Callable):
        synchronize(trainer.device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(trainer.device)
        return out, time.perf_counter() - t0

    trainer.optimizer.zero_grad(set_to_none=True)
    (loss, _), fwd = timed(lambda: trainer.forward(x, y))
    _, bwd = timed(lambda: trainer.backward(loss))
    _, opt = timed(trainer.update)
    trainer.scheduler.step()
    return fwd, bwd, opt


def timed_phases(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, opts: BenchOptions) -> list[tuple]:
    """(forward, backward, update) seconds of ``opts.repeats`` uncaptured steps after ``opts.warmup`` untimed ones."""
    for _ in range(opts.warmup):
        step_phases(trainer, x, y)
    return [step_phases(trainer, x, y) for _ in range(opts.repeats)]


def measure_cell(entry: Entry, mode: str, batch: int, opts: BenchOptions, device: torch.device,
                 log: Callable[[str], None] = print,
                 measure: Callable[..., dict] | None = None) -> dict:
    """One cell with timm-style OOM handling: on CUDA OOM, free memory and retry at a smaller batch.
    An illegal memory access (or any other error) ends this cell only, with the error recorded."""
    measure = measure or _measure
    requested, error = batch, ""
    while batch > 0:
        oom = False
        baseline = free_memory(device)  # what earlier cells left (graph pools, caches) must not count here
        torch.manual_seed(opts.seed)
        model = build_model(entry).to(device)
        try:
            result = measure(entry, model, mode, batch, opts, device)
            result["peak_memory_mb"] -= baseline  # this cell's model, optimizer state and activations
            del model
            free_memory(device)
            return {**result, "batch_size": batch, "requested_batch_size": requested, "error": error}
        except torch.OutOfMemoryError:
            oom = True  # handled below, outside the except block, so the traceback's frames are freed
        except Exception as e:  # illegal memory access, compile failures, ...
            text = str(e).strip().splitlines()
            return {"batch_size": batch, "requested_batch_size": requested,
                    "error": f"{type(e).__name__}: {text[0] if text else ''}"[:300]}
        del model
        free_memory(device)
        if oom and not opts.retry:
            return {"batch_size": 0, "requested_batch_size": requested, "error": f"OOM at batch {batch} (--no-retry)"}
        if oom:
            smaller = decay_batch(batch)
            log(f"  {entry.name} {mode}: out of memory at batch {batch}, retrying at {smaller}")
            error = f"OOM at batch {batch}" if not error else error
            batch = smaller
    return {"batch_size": 0, "requested_batch_size": requested, "error": error or "OOM at every batch size"}


def plan(variants: list[str], preset: str, peers: list[str], image_sizes: list[int] | None,
         patch_sizes: list[int] | None, overrides: dict, with_graph: bool = False,
         compile: bool = False) -> list[Entry]:
    """Every (variant | peer) x (image size | patch size) to measure, all at the same dimensions.

    A peer always gets a row as its users run it (eager, not compiled). ``with_graph`` adds it run
    through the same CUDA-graph step as vitbench; ``compile`` compiles the vitbench variants and adds
    the peer compiled too (eagerly stepped, and in the graph step): every trick vitbench uses is
    also measured on the peer, so the table separates model code from step engineering."""
    overrides = dict(overrides)
    unknown = [v for v in variants if v not in list_variants()]
    if unknown:
        raise VitbenchError(f"unknown variant {unknown[0]!r}; valid: {', '.join(list_variants())}, all")
    for p in peers:
        peer_builder(p)  # an unknown peer or timm model: one line, before anything is measured
    get_preset(preset)
    if image_sizes and patch_sizes:
        raise VitbenchError("give --image-sizes or --patch-sizes, not both")
    shapes = ([{"image_size": s} for s in image_sizes] if image_sizes else
              [{"patch_size": p} for p in patch_sizes] if patch_sizes else [{}])
    # --attention / --patchify / --mlp may list several implementations: every combination is measured.
    parts = {}
    for part in ("attention", "patchify", "mlp"):
        given = overrides.pop(part, None) or [None]
        parts[part] = [given] if isinstance(given, str) else given
    entries = []
    for shape in shapes:
        base = None
        for v in variants:
            for att, pat, mlp in itertools.product(*parts.values()):
                cfg = resolve_config(v, preset, **{**overrides, **shape}, attention=att, patchify=pat, mlp=mlp)
                base = base or cfg
                name = (v if att is None and pat is None else f"{v}[{cfg.attention},{cfg.patchify}]") + (
                    "" if mlp is None else f"[mlp {cfg.mlp}]")
                entries.append(Entry(name, cfg, compile=compile))
        for p in peers:
            ref = base or resolve_config("sdpa", preset, **{**overrides, **shape})
            ref = replace(ref, attention="sdpa", patchify="conv", pos_embed="learned", mlp="torch")
            name = f"{p}-vit" if p in PEER_BUILDERS else p  # timm's ViT at our dimensions, or a named timm model
            entries.append(Entry(name, ref, peer=p))  # as its users run it: eager
            if compile:
                entries.append(Entry(f"{name}+compile", ref, peer=p, compile=True))
            if with_graph:
                suffix = "+compile+graph" if compile else "+graph"
                entries.append(Entry(f"{name}{suffix}", ref, peer=p, peer_graph=True, compile=compile))
    return entries


def mfu(tflops: float, device: torch.device, precision: str) -> float:
    """Model FLOP utilisation: achieved TFLOP/s over the device's dense peak at ``precision`` (vitbench.gpus);
    NaN (a blank cell) for a CPU or a GPU not in the table."""
    from vitbench.gpus import peak_tflops

    peak = peak_tflops(torch.cuda.get_device_name(device), precision) if device.type == "cuda" else None
    return tflops / peak if peak else float("nan")


def runnable(entries: list[Entry], opts: BenchOptions) -> list[Entry]:
    """``entries``, once the precision and every implementation are known to run on the device: one line if not,
    before anything is measured or recorded."""
    device = torch.device(opts.device)
    if why := precision_unavailable(opts.precision, device):
        raise VitbenchError(why)
    for e in entries:
        if e.peer is None and (why := unavailable(e.cfg, device, training="train" in opts.modes)):
            raise VitbenchError(why)
    return entries


def run_bench(entries: list[Entry], batch_sizes: list[int], opts: BenchOptions,
              log: Callable[[str], None] = print, measure: Callable[..., dict] | None = None,
              display: Display | None = None) -> list[dict]:
    """Rows with timm's keys in timm's meaning (``train_samples_per_sec``: timed images over the timed steps' total
    time; ``infer_step_time``: the mean step in ms; ``param_count`` in millions; ``train_img_size``), the median
    step and its images/s (``*_samples_per_sec_median``, ``*_step_time_median``: the table's figures)
    plus spread, memory and FLOPs columns; one row per (model, shape, batch size)."""
    device = torch.device(opts.device)
    for m in opts.modes:
        if m not in MODES:
            raise VitbenchError(f"unknown mode {m!r}; valid: train, infer, both")
    if opts.precision not in names.PRECISIONS:
        raise VitbenchError(f"unknown precision {opts.precision!r}; valid: {', '.join(names.PRECISIONS)}")
    if opts.compile_mode not in names.COMPILE_MODES:
        raise VitbenchError(f"unknown compile mode {opts.compile_mode!r}; valid: {', '.join(names.COMPILE_MODES)}")
    runnable(entries, opts)
    if any(b < 1 for b in batch_sizes):
        raise VitbenchError(f"batch sizes must be >= 1, got {batch_sizes}")
    display = display or Display("off", log=log)
    with display:
        task = display.task("bench", len(entries) * len(batch_sizes) * len(opts.modes), unit="cell")
        rows = bench_entries(entries, batch_sizes, opts, device, display, task, measure)
        task.close()
    return rows


def bench_entries(entries: list[Entry], batch_sizes: list[int], opts: BenchOptions, device: torch.device,
                  display: Display, task: Task, measure: Callable[..., dict] | None) -> list[dict]:
    flops_cache: dict[tuple, tuple[float, float]] = {}
    rows = []
    started, cells = time.perf_counter(), 0
    for entry in entries:
        c = entry.cfg
        key = (entry.peer, c)
        if key not in flops_cache:
            torch.manual_seed(opts.seed)
            counted = counting_twin(entry)
            flops_cache[key] = flops_per_image(build_model(counted).to(device), counted.cfg, device)
        fwd, fwd_bwd = flops_cache[key]
        params = count_params(build_model(entry))
        for batch in batch_sizes:
            row = {
                "model": entry.name, "peer": entry.peer or "", "attention": "" if entry.peer else c.attention,
                "patchify": "" if entry.peer else c.patchify,
                "mlp": "" if entry.peer else c.mlp, "pos_embed": c.pos_embed, "pool": c.pool,
                "img_size": c.image_size, **{f"{m}_img_size": c.image_size for m in opts.modes},  # timm's names
                "patch_size": c.patch_size, "tokens": c.num_patches + (c.pool == "cls"),
                "dim": c.dim, "depth": c.depth, "heads": c.heads, "mlp_dim": c.mlp_dim,
                "param_count": round(params / 1e6, 2), "param_count_exact": params,  # timm's: millions
                "precision": opts.precision,
                "compile": entry.compile, "device": str(device), "gflops_per_image_fwd": fwd / 1e9,
                "gflops_per_image_train": fwd_bwd / 1e9,
            }
            for mode in opts.modes:
                cell = measure_cell(entry, mode, batch, opts, device, display.note, measure)
                flops = fwd if mode == "infer" else fwd_bwd
                row[f"{mode}_requested_batch_size"] = cell["requested_batch_size"]
                row[f"{mode}_batch_size"] = cell["batch_size"]
                row[f"{mode}_error"] = cell["error"]
                if "median" in cell:
                    med = cell["median"]
                    tflops = flops * cell["batch_size"] / med / 1e12
                    row.update({  # timm's meaning under timm's names: timed images over the timed steps' total
                        # time, the mean step; the median step and its images/s beside them (the table's figures)
                        f"{mode}_samples_per_sec": cell["batch_size"] / cell["mean"],
                        f"{mode}_step_time": cell["mean"] * 1e3,
                        f"{mode}_samples_per_sec_median": cell["batch_size"] / med,
                        f"{mode}_step_time_median": med * 1e3,
                        f"{mode}_step_time_p10": cell["p10"] * 1e3,
                        f"{mode}_step_time_p90": cell["p90"] * 1e3,
                        f"{mode}_repeats": int(cell["n"]),
                        f"{mode}_peak_memory_mb": cell["peak_memory_mb"],
                        f"{mode}_memory_source": cell["memory_source"],
                        f"{mode}_tflops": tflops,
                        f"{mode}_mfu": mfu(tflops, device, opts.precision),
                        f"{mode}_cuda_graph": cell.get("cuda_graph", False),
                        f"{mode}_compiled": cell.get("compiled", False),
                        **measured_columns(mode, cell),
                    })
                display.note(progress_line(row, mode))
                cells += 1
                left = (time.perf_counter() - started) / cells * (task.total - cells)
                task.update(cells, fields={"": f"{entry.name} b{batch} {mode}", "ETA": duration(left)})
            rows.append(row)
    return rows


def measured_columns(mode: str, cell: dict) -> dict:
    """A cell's --detail phases, --profile breakdown (and its folder) and conditions, as the row's columns."""
    prof, folder = cell.get("profile", ({}, None))
    return {**phase_columns(mode, cell.get("phases")), **{f"{mode}_prof_{k}_ms": v for k, v in prof.items()},
            **({f"{mode}_profile": folder} if folder else {}),
            **{f"{mode}_{k}": v for k, v in cell.get("conditions", {}).items()}}


def phase_columns(mode: str, phases: list[tuple] | None) -> dict:
    """timm's --detail columns: ``train_fwd_time``, ``train_bwd_time``, ``train_opt_time`` (mean ms), medians beside."""
    if not phases:
        return {}
    out = {}
    for i, name in enumerate(("fwd", "bwd", "opt")):
        times = [p[i] * 1e3 for p in phases]
        out[f"{mode}_{name}_time"] = statistics.fmean(times)
        out[f"{mode}_{name}_time_median"] = statistics.median(times)
    return out
