"""`vitbench bench`: speed and memory of every implementation, with spread.

Modelled on timm's benchmark.py (warm-up, synchronised timing, OOM batch decay, CSV with
``*_samples_per_sec`` / ``*_step_time`` keys) plus what it lacks: peak memory, p10/p90 of the step
time, FLOPs and achieved TFLOP/s, and token scaling. Inputs are synthetic: no dataset is needed.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from vitbench import names
from vitbench.conditions import BUSY_SHARE, Conditions
from vitbench.errors import VitbenchError, check_field_types, check_number
from vitbench.models import ViTConfig, count_params, list_variants, resolve_config
from vitbench.models.attention import ATTENTION
from vitbench.models.registry import get_preset
from vitbench.models.vit import unavailable
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
from vitbench.train import (
    AMP_DTYPES,
    TrainConfig,
    Trainer,
    autocast_to,
    compiles,
    inference,
    precision_unavailable,
    to_float8,
    torch_compile,
)

MODES = ("train", "infer")
PEERS = names.PEERS


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
    device: str = "auto"
    seed: int = 0
    retry: bool = True  # on CUDA OOM, retry the cell at a smaller batch (timm's benchmark.py does); off: fail it
    detail: bool = False  # train: also time forward, backward and the optimizer's update apart (timm's --detail)

    def __post_init__(self) -> None:
        check_field_types(self)
        check_number("warmup", self.warmup, 0)
        check_number("repeats", self.repeats, 1)
        check_number("seed", self.seed, 0)
        if self.max_seconds is not None:
            check_number("max_seconds", self.max_seconds, 0.0, low_open=True)

    @property
    def graphs(self) -> bool:
        """Whether the whole-step CUDA graph applies here, so peers get a row stepped through it too."""
        return resolve_device(self.device).type == "cuda" and self.cuda_graph is not False


def decay_batch(batch_size: int) -> int:
    """Next smaller batch after an OOM, timm-style: powers of two with one step between
    (1024, 768, 512, 384, 256, ...); 0 when there is nothing smaller."""
    if batch_size <= 1:
        return 0
    base = 2 ** int(math.log2(batch_size - 1))
    step = max(base // 2, 1)
    return base + ((batch_size - base - 1) // step) * step


def timm_vit(c: ViTConfig) -> nn.Module:
    """timm's VisionTransformer at vitbench's dimensions (``--peers timm``)."""
    VisionTransformer = _timm().models.vision_transformer.VisionTransformer
    return VisionTransformer(
        img_size=c.image_size, patch_size=c.patch_size, in_chans=c.in_chans, num_classes=c.num_classes,
        embed_dim=c.dim, depth=c.depth, num_heads=c.heads, mlp_ratio=c.mlp_dim / c.dim, qkv_bias=c.qkv_bias,
        class_token=c.pool == "cls", global_pool="token" if c.pool == "cls" else "avg",
    )


def timm_named(name: str) -> Callable[[ViTConfig], nn.Module]:
    """Any model ``timm.create_model`` builds (``--peers timm:resnet50``), at the preset's image size, channels
    and classes, with random weights: a reference beside the ViTs, ViT or not."""
    timm = _timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        raise VitbenchError(f"timm has no model {name!r}{'; e.g. ' + ', '.join(close) if close else ''}")

    def build(c: ViTConfig) -> nn.Module:
        kwargs = dict(pretrained=False, num_classes=c.num_classes, in_chans=c.in_chans)
        try:
            return timm.create_model(name, img_size=c.image_size, **kwargs)
        except TypeError:  # a model without an image size of its own (a CNN)
            return timm.create_model(name, **kwargs)

    return build


def _timm():
    from vitbench.errors import require_torchvision

    require_torchvision()  # timm imports it
    try:
        import timm
        import timm.models.vision_transformer  # noqa: F401
    except ImportError:
        raise VitbenchError("--peers timm needs timm: pip install 'vitbench[peers]'") from None
    return timm


PEER_BUILDERS: dict[str, Callable[[ViTConfig], nn.Module]] = {"timm": timm_vit}  # a peer: ViTConfig -> module


def peer_builder(peer: str) -> Callable[[ViTConfig], nn.Module]:
    if peer in PEER_BUILDERS:
        return PEER_BUILDERS[peer]
    if peer.startswith("timm:") and peer[5:]:
        return timm_named(peer[5:])
    raise VitbenchError(f"unknown peer {peer!r}; valid: {', '.join(PEERS)}, or timm:MODEL (any timm model name)")


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
    cond = Conditions()
    cond.start()
    times = time_steps(fn, device, warmup=opts.warmup, repeats=opts.repeats, max_seconds=opts.max_seconds)
    synchronize(device)
    cond.stop()
    extra["conditions"] = cond.metrics()
    mem, source = peak_memory_mb(device)
    model.train()
    return {**summarize(times), "peak_memory_mb": mem, "memory_source": source, **extra}


def timed_phases(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, opts: BenchOptions) -> list[tuple]:
    """(forward, backward, update) seconds of ``opts.repeats`` uncaptured steps after ``opts.warmup`` untimed ones."""
    for _ in range(opts.warmup):
        trainer.step_phases(x, y)
    return [trainer.step_phases(x, y) for _ in range(opts.repeats)]


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
    device = resolve_device(opts.device)
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
    device = resolve_device(opts.device)
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
                        **phase_columns(mode, cell.get("phases")),
                        **{f"{mode}_{k}": v for k, v in cell.get("conditions", {}).items()},
                    })
                display.note(_progress_line(row, mode))
                cells += 1
                left = (time.perf_counter() - started) / cells * (task.total - cells)
                task.update(cells, fields={"": f"{entry.name} b{batch} {mode}", "ETA": duration(left)})
            rows.append(row)
    return rows


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


def _progress_line(row: dict, mode: str) -> str:
    if f"{mode}_samples_per_sec" not in row:
        return f"  {row['model']} img {row['img_size']} b{row[f'{mode}_requested_batch_size']} {mode}: {row[f'{mode}_error']}"
    return (f"  {row['model']} img {row['img_size']} ({row['tokens']} tokens) b{row[f'{mode}_batch_size']} {mode}: "
            f"{row[f'{mode}_samples_per_sec_median']:,.0f} img/s, {row[f'{mode}_step_time_median']:.2f} ms "
            f"[p10 {row[f'{mode}_step_time_p10']:.2f}, p90 {row[f'{mode}_step_time_p90']:.2f}], "
            f"{row[f'{mode}_peak_memory_mb']:,.0f} MiB" + (" (process peak RSS)" if row.get(f"{mode}_memory_source") ==
                                                           "process_peak_rss" else "")
            + (" -- busy machine: not comparable" if busy_cell(row, mode) else ""))


def columns(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def write_rows(rows: list[dict], path: Path) -> Path:
    """CSV or JSON; a value not known (the MFU of a device without a known peak) is blank / null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in rows]
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1))
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns(rows))
            w.writeheader()
            w.writerows(rows)
    else:
        raise VitbenchError(f"--out must end in .csv or .json, got {path}")
    return path


def busy_cell(row: dict, mode: str) -> bool:
    return row.get(f"{mode}_cond_others_cpu_share", 0.0) >= BUSY_SHARE


def rich_table(rows: list[dict], opts: BenchOptions):
    """The figures a person compares, narrow enough for an 80-column terminal; every other column (p10/p90 of
    inference, TFLOP/s, FLOPs, the conditions) is in the CSV and in MLflow."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    where = rows[0]["device"] if rows else opts.device
    mode = "" if opts.compile_mode == "default" else f" {opts.compile_mode}"
    compiled = f", compile{mode}" if opts.compile else ""
    cpu = any(r.get(f"{m}_memory_source") == "process_peak_rss" for r in rows for m in MODES)
    memory = "MiB: the process's peak RSS (all of it, not the cell's)" if cpu else \
        "MiB: peak CUDA memory the cell allocated"
    t = Table(title=f"bench ({opts.precision}, {where}{compiled}); img/s = batch / median step; {memory}",
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    tokens = len({r["tokens"] for r in rows}) > 1
    mfu = any(math.isfinite(r.get("train_mfu", math.nan)) for r in rows)
    detail = any("train_fwd_time" in r for r in rows)
    main, both = opts.modes[0], len(opts.modes) > 1  # train where it was measured, else infer
    for col in ("model", *(("tokens",) if tokens else ()), "batch", f"{main} img/s", "step ms (p10-p90)", "MiB",
                *(("infer img/s",) if both else ()), *(("MFU",) if mfu else ()), *(("fwd/bwd/opt ms",) if detail else ())):
        t.add_column(col, justify="left" if col == "model" else "right", overflow="fold")

    def ms(v: float) -> str:
        return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"

    def fmt(r: dict, mode: str, full: bool) -> list[str]:
        if f"{mode}_samples_per_sec" not in r:
            return [r.get(f"{mode}_error", "") or "-", *(["", ""] if full else [])]
        busy = "*" if busy_cell(r, mode) else ""
        return [f"{r[f'{mode}_samples_per_sec_median']:,.0f}{busy}",
                *([f"{ms(r[f'{mode}_step_time_median'])} ({ms(r[f'{mode}_step_time_p10'])}-"
                   f"{ms(r[f'{mode}_step_time_p90'])})", f"{r[f'{mode}_peak_memory_mb']:,.0f}"] if full else [])]

    for r in rows:
        batch = r.get("train_batch_size", r.get("infer_batch_size"))
        first, infer = fmt(r, main, True), fmt(r, "infer", False) if both else []
        mfu_text = [f"{r['train_mfu']:.1%}" if math.isfinite(r.get("train_mfu", math.nan)) else "-"] if mfu else []
        phases = ["/".join(f"{r[f'train_{p}_time_median']:.2f}" for p in ("fwd", "bwd", "opt"))
                  if "train_fwd_time" in r else "-"] if detail else []
        t.add_row(escape(r["model"]), *([str(r["tokens"])] if tokens else []), str(batch), *first, *infer,
                  *mfu_text, *phases)
    if any(busy_cell(r, m) for r in rows for m in MODES):
        t.caption = (f"* timed while other processes took >= {BUSY_SHARE:.0%} of the CPU: not comparable with a quiet "
                     "machine's figures")
    return t


CELL_PARAMS = ("model", "peer", "attention", "patchify", "mlp", "pos_embed", "pool", "img_size", "patch_size", "tokens",
               "dim", "depth", "heads", "mlp_dim", "precision", "compile", "device")


def cell_metrics(row: dict) -> dict[str, float]:
    """A cell's figures under the same names in every cell (timm's): the compare view lines cells up."""
    from vitbench.mlflow_ui import readable

    return readable({k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and (k.startswith(("train_", "infer_")) or k in ("gflops_per_image_fwd", "gflops_per_image_train",
                                                             "param_count"))})


def requested_batch(row: dict) -> int:
    return row.get("train_requested_batch_size") or row.get("infer_requested_batch_size")


def cell_name(row: dict) -> str:
    return (f"{row['model']} img{row['img_size']}/p{row['patch_size']} b{requested_batch(row)} {row['precision']}"
            f"{' compiled' if row['compile'] else ''}")


def bench_note(rows: list[dict], opts: BenchOptions) -> str:
    fastest = max((r for r in rows if "train_samples_per_sec_median" in r),
                  key=lambda r: r["train_samples_per_sec_median"], default=None)
    best = (f" Fastest training cell: **{cell_name(fastest)}**, {fastest['train_samples_per_sec_median']:,.0f} img/s "
            "(batch / median step)."
            if fastest else "")
    return (f"`vitbench bench`: {len(rows)} cells ({', '.join(sorted({r['model'] for r in rows}))}) on "
            f"{rows[0]['device'] if rows else opts.device}, {opts.precision}{', compiled' if opts.compile else ''}, "
            f"{' and '.join(opts.modes)}; {opts.warmup} untimed warm-up steps, then the median (p10-p90) of "
            f"{opts.repeats} timed steps per cell; images/s = batch / median step (`*_samples_per_sec_median`), "
            f"and as timm's benchmark.py counts it, timed images / total time (`*_samples_per_sec`).{best} Each cell "
            "is a nested run with the same metric names (train_samples_per_sec_median, train_peak_memory_mb, ...): "
            "select them and Compare; the whole table is the artifact bench_table.json.")


def log_to_mlflow(rows: list[dict], opts: BenchOptions, out: Path | None, tracking_uri: str | None,
                  experiment: str, params: dict) -> str:
    """One parent run per invocation (its options, the table as CSV, JSON and an MLflow table) and one nested
    run per cell (the cell's parts and sizes as params, its figures as metrics)."""
    import tempfile

    import mlflow
    import pandas as pd
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from vitbench.mlflow_ui import BENCH_COLUMNS, NOTE
    from vitbench.tracking import connect, environment_tags, flatten, get_experiment_id, tracked_run

    uri = connect(tracking_uri)
    exp_id = get_experiment_id(experiment, uri, columns=BENCH_COLUMNS)
    env = environment_tags(resolve_device(opts.device))
    tags = {"kind": "bench", NOTE: bench_note(rows, opts), **env}
    client = MlflowClient()
    with tracked_run(exp_id, f"bench-{len(rows)}-cells", tags=tags) as run_id:
        mlflow.log_params(flatten({**params, "precision": opts.precision, "compile": opts.compile,
                                   "warmup": opts.warmup, "repeats": opts.repeats,
                                   "max_seconds": opts.max_seconds, "modes": ",".join(opts.modes)}))
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifact(str(write_rows(rows, Path(tmp) / "bench.csv")))
            mlflow.log_artifact(str(write_rows(rows, Path(tmp) / "bench.json")))
        if rows:
            mlflow.log_table(pd.DataFrame(rows), "bench_table.json")
        if out is not None:
            mlflow.log_artifact(str(out))
        now = int(time.time() * 1000)
        for row in rows:
            errors = "; ".join(row[k] for k in ("train_error", "infer_error") if row.get(k))
            child = client.create_run(exp_id, run_name=cell_name(row), tags={
                "mlflow.parentRunId": run_id, "kind": "bench-cell", "bench.parent": run_id,
                NOTE: "; ".join(_progress_line(row, m).strip() for m in opts.modes), **env})
            client.log_batch(child.info.run_id,
                             params=[Param(k, str(row[k])) for k in CELL_PARAMS] + [Param("batch_size", str(requested_batch(row)))],
                             metrics=[Metric(k, v, now, 0) for k, v in cell_metrics(row).items()],
                             tags=[RunTag("error", errors[:500])] if errors else [])
            measured = any(f"{m}_samples_per_sec" in row for m in opts.modes)
            client.set_terminated(child.info.run_id, "FINISHED" if measured else "FAILED")
    return run_id
