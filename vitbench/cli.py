"""The `vitbench` command: parses options and delegates to the library. Bad input -> one line on
stderr and exit code 2."""

from __future__ import annotations

import functools
import os
import signal
import sys
import textwrap
import time
from dataclasses import fields, replace
from inspect import Parameter, signature
from pathlib import Path
from typing import Annotated, get_type_hints

import typer

from vitbench import names, wall, warm
from vitbench.config import DECLARED, Options
from vitbench.errors import Interrupted, VitbenchError, check_number, check_run_id
from vitbench.names import choices
from vitbench.secrets import guard_streams

app = typer.Typer(help="Which way of writing a Vision Transformer is faster, lighter and as accurate?",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=None)  # plain help: wrapped to the terminal, never cut mid-word


def fail(message: str, code: int = 2) -> None:
    from vitbench.secrets import mask_secrets  # no password reaches a terminal or a log

    typer.echo(f"error: {mask_secrets(message)}", err=True)
    raise typer.Exit(code)


WRITTEN: list[str] = []  # files a command has written its results to (bench --out), for an interrupt's message


def cli_errors(fn):
    """VitbenchError -> 'error: ...' and exit 2; Ctrl-C -> exit 130 (the run is already KILLED)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VitbenchError as e:
            fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
        except Exception as e:
            if (why := store_error(e)) is None:
                raise
            fail(why)
        except KeyboardInterrupt as e:
            from vitbench.distributed import lead
            from vitbench.tracking import ENDED

            if not lead() or isinstance(e, Interrupted):  # rank 0 / the pool already said what was ended
                raise typer.Exit(130) from None

            killed = [rid for rid, status in ENDED.items() if status == "KILLED"]
            typer.echo(f"interrupted: run {killed[-1]} was ended KILLED and a checkpoint written" if killed
                       else f"interrupted before its MLflow run started: the results are in {', '.join(WRITTEN)}"
                       if WRITTEN else "interrupted before any run started: nothing was recorded", err=True)
            raise typer.Exit(130) from None

    return wrapper


def store_error(e: Exception) -> str | None:
    """One line for a tracking store that failed mid-command (a server that stopped answering, a lost database),
    None for anything else: a bug keeps its traceback."""
    if "mlflow" not in sys.modules:
        return None
    import requests
    from mlflow.exceptions import MlflowException

    if not isinstance(e, (MlflowException, requests.RequestException, ConnectionError, TimeoutError)):
        return None
    import mlflow

    text = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return f"the tracking store {mlflow.get_tracking_uri()} failed: {type(e).__name__}: {text}"


def check_names(**names: str | None) -> None:
    """An experiment or run name given is not empty and fits MLflow's SQL stores (a longer one fails there,
    mid-command, after a run exists)."""
    from vitbench.mlflow_ui import NAME_LENGTH

    for option, name in names.items():
        flag = "--" + option.replace("_", "-")
        if name is not None and not name.strip():
            raise VitbenchError(f"{flag} is empty; give a name, or leave the option out for the default")
        if name is not None and len(name) > NAME_LENGTH:
            raise VitbenchError(f"{flag} has {len(name)} characters; MLflow keeps {NAME_LENGTH} at most")


def split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def int_list(value: str | None, name: str = "sizes") -> list[int]:
    """``"64,256"`` -> [64, 256], each a positive size; anything else a one-line error."""
    try:
        sizes = [int(v) for v in split_list(value) or []]
    except ValueError:
        raise VitbenchError(f"{name} must be comma-separated integers, got {value!r}") from None
    for v in sizes:
        check_number(name, v, 1)
    return sizes


TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def flag(name: str):
    """The flag of an option declared in vitbench.config: its help with its choices and default."""
    f = next(f for f in fields(Options) if f.name == name)
    m, kind = f.metadata, TYPES[f.type.split(" | ")[0]]
    default = DECLARED[name].default if name in DECLARED else None
    shown = m["shown"] or (("on" if default else "off") if kind is bool else default)
    text = "; ".join(t for t in (choices(m["choices"]), m["help"]) if t)
    text += f" [{shown}]" if shown is not None and f.default is None else ""
    long = "--" + name.replace("_", "-")
    decls = [f"{long}/--no-{long[2:]}" if kind is bool else long, *([m["short"]] if m["short"] else [])]
    return Annotated[kind | None, typer.Option(*decls, help=text)]


def declared_flags() -> list[Parameter]:
    """`run`'s and `sweep`'s flags for the options: one per declared option that is a flag."""
    return [Parameter(f.name, Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=flag(f.name))
            for f in fields(Options) if f.metadata["flag"]]


Device, DataDir, CudaGraph = flag("device"), flag("data_dir"), flag("cuda_graph")
PosEmbed, Pool, Dim, Depth, Heads = flag("pos_embed"), flag("pool"), flag("dim"), flag("depth"), flag("heads")
MlpDim, PatchSize = flag("mlp_dim"), flag("patch_size")


def implementations(part: str, impls: tuple[str, ...]):
    """A bench flag that lists several implementations of a part (every combination is measured)."""
    return Annotated[str | None, typer.Option(help=f"{part} implementations, comma-separated: {', '.join(impls)}")]


Attentions = implementations("attention", names.ATTENTION)
Patchifies = implementations("patchify", names.PATCHIFY)
Mlps = implementations("MLP", names.MLP)
PosEmbed = Annotated[str | None, typer.Option(help=choices(names.POS_EMBED))]
Pool = Annotated[str | None, typer.Option(help=choices(names.POOL))]
Norm = Annotated[str | None, typer.Option(help=choices(names.NORM))]
Dim = Annotated[int | None, typer.Option(help="token width")]
Depth = Annotated[int | None, typer.Option(help="transformer blocks")]
Heads = Annotated[int | None, typer.Option(help="attention heads")]
MlpDim = Annotated[int | None, typer.Option(help="MLP hidden width")]
PatchSize = Annotated[int | None, typer.Option(help="patch size in pixels")]
Dropout = Annotated[float | None, typer.Option(help="dropout")]
PatchDrop = Annotated[float | None, typer.Option(help="training only: drop this fraction of each image's patch "
                                                      "tokens at random (PatchDropout) [0]")]
TrackingUri = Annotated[str | None, typer.Option(help="MLflow tracking URI (else $MLFLOW_TRACKING_URI, "
                                                         "else sqlite:///mlflow.db)")]
Experiment = Annotated[str | None, typer.Option(help="MLflow experiment [vitbench-<dataset>]")]
SweepExperiment = Annotated[str | None, typer.Option(help="MLflow experiment [vitbench-sweep-<dataset>]")]
SWEEP_VAL_SPLIT = 0.1  # a sweep scores its trials on this share of the training set, held out
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar and no periodic progress lines")]
ProgressInterval = Annotated[float, typer.Option(help="seconds between progress lines when output is not a "
                                                      "terminal (a log file, CI, nohup)")]
LiveEvery = Annotated[str, typer.Option(help="step-level metrics to MLflow (live/train_loss, live/train_acc, "
                                             "live/train_images_per_sec): every '10s', every '200' steps, or 'off'")]


# bench's own
Detail = Annotated[bool, typer.Option(help="also time the training step's forward, backward and optimizer update "
                                           "apart, uncaptured, a sync after each (timm's --detail): train_fwd_time, "
                                           "train_bwd_time, train_opt_time")]
Retry = Annotated[bool, typer.Option("--retry/--no-retry", help="on CUDA out-of-memory, retry the cell at a smaller "
                                                                "batch, as timm's benchmark.py does; --no-retry "
                                                                "fails the cell")]
Peers = Annotated[str | None, typer.Option(help=f"also measure peer libraries' ViT at the same dimensions: "
                                                f"{', '.join(names.PEERS)}; or timm:MODEL, any model "
                                                "timm.create_model builds (e.g. timm:resnet50)")]


def display(quiet: bool, interval: float):
    from vitbench.progress import Display

    check_number("--progress-interval", interval, 0.0, low_open=True)
    return Display("off" if quiet else "auto", interval, log=typer.echo)

def flags(command) -> list[Parameter]:
    """A command's parameters but ``options``, their annotations resolved (what Typer makes flags of)."""
    hints = get_type_hints(command, localns={"Options": object}, include_extras=True)  # Options: never a flag
    return [p.replace(annotation=hints[p.name]) for p in signature(command).parameters.values() if p.name != "options"]


def with_options(command):
    """Gives ``command`` the flags of the declared options -- Typer reads the combined signature -- and calls it with
    ``options``, the Options they make."""
    shared = declared_flags()
    params = [*shared, *flags(command)]

    @functools.wraps(command)
    def wrapper(**kwargs):
        return command(options=Options(**{p.name: kwargs.pop(p.name) for p in shared}), **kwargs)

    wrapper.__signature__ = signature(command).replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


@app.command()
@cli_errors
def variants(preset: Annotated[str | None, typer.Option(help=f"size preset for the parameter count: "
                                                             f"{choices(names.PRESETS)} [mnist and cifar10]")] = None
             ) -> None:
    """List the registered variants, their parts and parameter counts."""
    from vitbench.models import VARIANTS, count_params, create_model, list_variants

    presets = [preset] if preset else ["mnist", "cifar10"]
    rows = [("variant", "attention", "patchify", "positions", "pool", "norm", *presets)]
    for name in list_variants():
        v = VARIANTS[name]
        rows.append((name, *(v.parts[k] for k in ("attention", "patchify", "pos_embed", "pool", "norm")),
                     *(f"{count_params(create_model(name, p)):,}" for p in presets)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    typer.echo("parameters at each preset:")
    for r in rows:  # plain columns, as wide as their content (~75 characters): any terminal, any file
        typer.echo("  ".join(c.rjust(w) if i >= 6 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    typer.echo("")
    for name in list_variants():
        typer.echo(textwrap.fill(f"{name}: {VARIANTS[name].description}", 79, subsequent_indent="  "))
    typer.echo(f"\nany part can be swapped:\n  --attention {choices(names.ATTENTION)}\n  --patchify "
               f"{choices(names.PATCHIFY)}\n  --mlp {choices(names.MLP)}\n  --pos-embed {choices(names.POS_EMBED)}\n  --pool {choices(names.POOL)}")


@app.command()
@cli_errors
def recipes() -> None:
    """List the recipes (vitbench/recipe_files/*.yaml): what each sets, how it was chosen, what it measured."""
    from vitbench.recipes import load_recipes

    for r in load_recipes().values():
        typer.echo(f"{r.name}: {r.description}\n  sets:      "
                   + ", ".join(f"{k}={v}" for k, v in r.options.items())
                   + f"\n  chosen by: {r.chosen_by}\n  measured:  {r.measured}\n")


@app.command()
@cli_errors
@with_options
def run(
    options: Options, tracking_uri: TrackingUri = None, experiment: Experiment = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name")] = None,
    resume: Annotated[str | None, typer.Option(help="continue this MLflow run from its last checkpoint")] = None,
    checkpoint_dir: Annotated[Path, typer.Option(help="where checkpoints are written")] = Path("checkpoints"),
    system_metrics: Annotated[bool, typer.Option(help="log MLflow system metrics: CPU, memory, disk, network; GPU utilisation and memory "
                                                  "with NVIDIA's NVML (pip install 'vitbench[gpu]')")] = False,
    recipe: Annotated[str | None, typer.Option(help="a named set of options from vitbench/recipe_files/, e.g. "
                                                    "mnist-fast (`vitbench recipes` lists them); options given "
                                                    "explicitly win")] = None,
    quiet: Quiet = False, progress_interval: ProgressInterval = 30.0, live_every: LiveEvery = "10s",
    gpus: Annotated[int, typer.Option(help="data-parallel training on N GPUs of this host: N processes through "
                                           "torch.distributed.run, DistributedDataParallel, --batch-size the "
                                           "global batch (with --device cpu: N CPU processes on gloo)")] = 1,
    nodes: Annotated[int, typer.Option(help="hosts training together, --gpus N each: give the same command on "
                                            "every host, with --rdzv-endpoint")] = 1,
    rdzv_endpoint: Annotated[str | None, typer.Option(help="HOST:PORT where the hosts of --nodes meet (torch's "
                                                           "c10d rendezvous), a free port on one of them")] = None,
    rdzv_id: Annotated[str, typer.Option(help="the run's rendezvous id, the same on every host")] = "vitbench",
) -> None:
    """Train a variant on a dataset and record everything in one MLflow run."""
    from vitbench import distributed
    from vitbench.progress import Every
    from vitbench.recipes import recipe_options
    from vitbench.runner import Tracking, run_experiment

    wall.mark("imports")
    check_number("--gpus", gpus, 1, 1024)
    check_number("--nodes", nodes, 1, 4096)
    check_names(experiment=experiment, run_name=run_name)
    live, shown = Every.parse(live_every), display(quiet, progress_interval)
    cfg, model_cfg, checkpoint = run_configs(recipe_options(recipe).then(options), resume, checkpoint_dir,
                                             tracking_uri)
    if gpus * nodes > 1 and not distributed.in_rank():
        launch(gpus, distributed.Nodes(nodes, rdzv_endpoint, rdzv_id), cfg, tracking_uri, experiment)
    if distributed.in_rank():
        cfg = replace(cfg, device=str(distributed.init(cfg.device)))
        shown = shown if distributed.lead() else display(True, progress_interval)
    tracking = Tracking(tracking_uri, experiment, run_name, tags={"recipe": recipe} if recipe else None,
                        system_metrics=system_metrics, on_start=lambda rid: typer.echo(f"mlflow run {rid}"))
    outcome = run_experiment(cfg, model_cfg, tracking, resume_run_id=resume, resume_checkpoint=checkpoint,
                             checkpoint_dir=checkpoint_dir, display=shown, live=live)
    speaks = distributed.lead()
    distributed.close()
    if speaks:
        say_done(outcome, cfg, quiet)


def run_configs(opts, resume: str | None, checkpoint_dir: Path, tracking_uri: str | None) -> tuple:
    """`run`'s configs and the checkpoint it continues: a resumed run's own configs with what a resume may
    change, else the options' (an image folder's preset taken from its images, and said)."""
    from vitbench.options import configs, resumed

    if resume:
        check_run_id(resume, "--resume")
        from vitbench.checkpoints import load_checkpoint
        from vitbench.runner import find_checkpoint

        checkpoint = load_checkpoint(find_checkpoint(resume, checkpoint_dir, tracking_uri))
        return (*resumed(checkpoint, opts), checkpoint)
    if opts.dataset.startswith("imagefolder:") and opts.preset is None:
        from vitbench.images import folder_preset

        preset, why = folder_preset(opts.dataset)
        typer.echo(f"note: {opts.dataset}: {why} -> preset {preset}; --preset chooses another")
        opts = replace(opts, preset=preset)
    return (*configs(opts), None)


def say_done(outcome, cfg, quiet: bool) -> None:
    """What a run reached, where its wall time went, and where to see it in the MLflow UI."""
    from vitbench.mlflow_ui import see_line

    r = outcome.result
    typer.echo(
        f"done: {cfg.variant} on {cfg.dataset} | val_acc {r.final_val_acc:.4f} (best {r.best_val_acc:.4f}) | "
        f"train {r.train_seconds:.2f} s ({r.steps} steps, stopped by {r.stopped_by}) | "
        f"warm-up/compile {r.warmup_seconds:.2f} s | infer {r.infer_images_per_sec:,.0f} img/s | "
        f"peak {r.peak_memory_mb:,.0f} MiB | {r.param_count:,} params | {r.fast_path} | run {outcome.run_id}"
        + (" | synthetic data: throughput only, the accuracy means nothing" if cfg.dataset == "synthetic" else "")
    )
    if busy := r.conditions.verdict():
        typer.echo(f"note: {busy}")
    if not quiet:
        typer.echo(wall.summary())
    typer.echo(see_line(outcome.tracking_uri, outcome.experiment_id))


def launch(gpus: int, nodes, cfg, tracking_uri: str | None, experiment: str | None) -> None:
    """`run --gpus N [--nodes M]`: check, prepare the tracking store (whichever host's rank 0 records, every host
    must reach it), then run this same command as N ranks here, M x N in all."""
    from vitbench import distributed
    from vitbench.options import default_experiment
    from vitbench.tracking import connect, get_experiment_id

    distributed.check_launch(gpus, cfg.device, cfg.batch_size, cfg.loader, nodes)
    get_experiment_id(experiment or default_experiment(cfg.dataset), connect(tracking_uri))
    ranks = gpus * nodes.count
    where = "this host" if nodes.count == 1 else f"each of {nodes.count} hosts meeting at {nodes.endpoint}"
    typer.echo(f"data-parallel: {gpus} rank(s) on {where} through torch.distributed.run, global batch "
               f"{cfg.batch_size} ({cfg.batch_size // ranks} per rank)")
    raise typer.Exit(distributed.launch(gpus, sys.argv[1:], nodes))


@app.command()
@cli_errors
def bench(
    variants: Annotated[str, typer.Option(help="comma-separated variants, or all")] = "all",
    preset: Annotated[str, typer.Option(help=f"size presets, comma-separated: {', '.join(names.PRESETS)}")] = "mnist",
    batch_sizes: Annotated[str, typer.Option(help="comma-separated batch sizes")] = "64,256,1024",
    image_sizes: Annotated[str | None, typer.Option(help="token scaling: comma-separated image sizes")] = None,
    patch_sizes: Annotated[str | None, typer.Option(help="token scaling: comma-separated patch sizes")] = None,
    mode: Annotated[str, typer.Option(help="train | infer | both")] = "both",
    precision: Annotated[str, typer.Option(help=f"{choices(names.PRECISIONS)} (see run --help)")] = "fp32",
    compile: Annotated[bool, typer.Option(help="torch.compile the variants; peers get a compiled row too")] = False,
    compile_mode: Annotated[str, typer.Option(help=f"torch.compile's mode: {choices(names.COMPILE_MODES)}")] = "default",
    detail: Detail = False,
    cuda_graph: CudaGraph = None,
    warmup: Annotated[int, typer.Option(help="untimed steps before timing")] = 5,
    repeats: Annotated[int, typer.Option(help="timed steps per cell")] = 20,
    max_seconds: Annotated[float, typer.Option(help="time bound per cell and mode (the naive parts)")] = 30.0,
    retry: Retry = True,
    device: Annotated[str, typer.Option(help="auto | cuda | cpu")] = "auto",
    out: Annotated[Path | None, typer.Option(help="write rows to FILE.csv or FILE.json")] = None,
    peers: Peers = None,
    attention: Attentions = None, patchify: Patchifies = None, mlp: Mlps = None,
    pos_embed: PosEmbed = None, pool: Pool = None,
    dim: Dim = None, depth: Depth = None, heads: Heads = None, mlp_dim: MlpDim = None,
    patch_size: PatchSize = None, seed: Annotated[int, typer.Option(help="seed of weights and inputs")] = 0,
    tracking_uri: TrackingUri = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "vitbench-bench",
    quiet: Quiet = False, progress_interval: ProgressInterval = 30.0,
) -> None:
    """Step time (median, p10, p90), images/s, peak memory and TFLOP/s of every implementation."""
    from rich.console import Console

    from vitbench.bench import BenchOptions, plan, rich_table, run_bench, runnable
    from vitbench.models import list_variants
    from vitbench.tracking import connect

    names = list_variants() if variants == "all" else split_list(variants) or []
    if out is not None and out.suffix not in (".csv", ".json"):
        raise VitbenchError(f"--out must end in .csv or .json, got {out}")
    overrides = dict(attention=split_list(attention), patchify=split_list(patchify), mlp=split_list(mlp),
                     pos_embed=pos_embed, pool=pool, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim,
                     patch_size=patch_size)
    opts = BenchOptions(modes=("train", "infer") if mode == "both" else (mode,), precision=precision, compile=compile,
                        compile_mode=compile_mode, cuda_graph=cuda_graph, warmup=warmup, repeats=repeats,
                        max_seconds=max_seconds, device=device, seed=seed, retry=retry, detail=detail)
    entries = runnable([e for p in split_list(preset) or ["mnist"]
                        for e in plan(names, p, split_list(peers) or [], int_list(image_sizes) or None,
                                      int_list(patch_sizes) or None, overrides, with_graph=opts.graphs,
                                      compile=compile)], opts)  # all can run here, or one line now
    connect(tracking_uri)  # fail on an unusable store before measuring anything
    if out is not None:  # nor measure everything and then find the folder unwritable
        from vitbench.runner import writable_folder

        writable_folder(out.parent, "--out folder")
    rows = run_bench(entries, int_list(batch_sizes), opts, log=typer.echo, display=display(quiet, progress_interval))
    Console().print(rich_table(rows, opts))  # the figures shown first: what fails after this loses none of them
    keep_bench(rows, opts, out, tracking_uri, experiment,
               {"variants": ",".join(names), "preset": preset, "batch_sizes": batch_sizes,
                "image_sizes": image_sizes, "patch_sizes": patch_sizes, "peers": peers, **overrides})


def keep_bench(rows: list[dict], opts, out: Path | None, tracking_uri: str | None, experiment: str, params: dict) -> None:
    """The rows to --out, then to MLflow: a failure of one keeps the other, and is one line at the end."""
    from vitbench.bench import log_to_mlflow, write_rows

    failed = []
    if out is not None:
        try:
            write_rows(rows, out)
            WRITTEN.append(str(out))
            typer.echo(f"wrote {out}")
        except OSError as e:
            failed.append(f"could not write {out}: {e.strerror or e}")
            out = None
    try:
        typer.echo(f"mlflow run {log_to_mlflow(rows, opts, out, tracking_uri, experiment, params)}")
    except Exception as e:  # the store went away while measuring: the table and the file stand
        from vitbench.tracking import error_line

        failed.append(f"could not record the bench in MLflow ({error_line(e)})" + (f"; the rows are in {out}" if out else ""))
    if failed:
        raise VitbenchError("; ".join(failed))


@app.command()
@cli_errors
@with_options
def sweep(
    options: Options,
    n_trials: Annotated[int, typer.Option(help="total trials of the study (a re-run resumes to it)")] = 20,
    timeout: Annotated[float | None, typer.Option(help="stop starting trials after this many seconds")] = None,
    space: Annotated[str | None, typer.Option(help="search space: a YAML file, or a space that ships with vitbench: "
                                                   "default (model and training), train-only [default]")] = None,
    objective: Annotated[str, typer.Option(help="val_acc, or val_acc,train_images_per_sec for a Pareto front "
                                                "(multi-objective studies cannot be pruned)")] = "val_acc",
    pruner: Annotated[str, typer.Option(help="median | hyperband | none (on per-epoch val_acc)")] = "median",
    storage: Annotated[str, typer.Option(help="Optuna storage: sqlite:///FILE (one worker), journal:FILE (several "
                                              "workers on this host), postgresql+psycopg://user:pw@host/db "
                                              "(workers on several hosts)")] = "sqlite:///optuna.db",
    study_name: Annotated[str | None, typer.Option(help="[<variant>-<dataset>-<objective>]")] = None,
    workers: Annotated[int, typer.Option(help="worker processes on this machine, one GPU each (round robin "
                                              "over the visible GPUs)")] = 1,
    heartbeat: Annotated[int, typer.Option(help="seconds between trial heartbeats; a worker silent for 3 of "
                                                "them is declared dead and its trial retried")] = 10,
    worker: Annotated[int | None, typer.Option(hidden=True, help="worker index (set by the coordinator)")] = None,
    tracking_uri: TrackingUri = None, experiment: SweepExperiment = None,
    quiet: Quiet = False, progress_interval: ProgressInterval = 30.0, live_every: LiveEvery = "10s",
) -> None:
    """Optuna search whose trials are nested MLflow runs under one parent run: resumable, parallel. Trials are
    scored on 10 % of the training set held out (--val-split); the test set is used once, for the chosen trial."""
    from vitbench.progress import Every
    from vitbench.sweep import SweepSpec, check_objectives, default_study_name, load_space, run_sweep

    check_number("--workers", workers, 1, 1024)
    check_names(experiment=experiment, study_name=study_name)

    live, shown = Every.parse(live_every), display(quiet, progress_interval)
    base = options  # what every trial starts from
    if base.val_split is None:
        base = replace(base, val_split=SWEEP_VAL_SPLIT)
    objectives = check_objectives(objective)
    variant, dataset = base.variant, base.dataset
    spec = SweepSpec(variant=variant, dataset=dataset, n_trials=n_trials, space=load_space(space),
                     space_path=str(space or "default"), objectives=objectives, pruner=pruner, storage=storage,
                     study_name=study_name or default_study_name(variant, dataset, objectives), timeout=timeout,
                     heartbeat=heartbeat, seed=base.seed or 0)
    experiment = experiment or f"vitbench-sweep-{dataset}"
    if worker is None:
        typer.echo(f"note: trials are scored on {base.val_split:.0%} of the training set, held out; the official test "
                   "set is used once, for the chosen trial" if base.val_split else "note: --val-split 0: trials are "
                   "scored on the official test set, so the chosen trial's accuracy is an optimistic estimate")
    if worker is not None:  # started by a coordinator: it owns the parent run
        from vitbench.sweep import join_study

        join_study(replace(spec, seed=spec.seed + worker),  # each worker's sampler its own seed
                   base, tracking_uri, experiment, typer.echo, shown, live)
        return
    run_sweep(spec, base, tracking_uri=tracking_uri, experiment=experiment, workers=workers,
              argv=sys.argv[1:], log=typer.echo, display=shown, live=live)


def check_sweep_base(base) -> None:
    """The variant, the dataset and the options every trial starts from, checked before a study exists."""
    from vitbench.data import get_dataset_info
    from vitbench.models.registry import get_variant
    from vitbench.options import train_config

    get_variant(base.variant)
    get_dataset_info(base.dataset)
    train_config(base)


@app.command()
@cli_errors
def suite(
    path: Annotated[Path, typer.Argument(help="suite YAML, e.g. experiments/attention.yaml")],
    repeats: Annotated[int | None, typer.Option(help="repeats per cell (each its own seed) [the suite's]")] = None,
    device: Device = None, data_dir: DataDir = None, tracking_uri: TrackingUri = None,
    force: Annotated[bool, typer.Option(help="re-run cells that already FINISHED")] = False,
    cells: Annotated[str | None, typer.Option(help="only these cells, comma-separated")] = None,
    gpus: Annotated[str, typer.Option(help="run the cells in parallel, one worker process per GPU: N or all "
                                           "(with --device cpu or no GPU: N CPU processes)")] = "1",
    quiet: Quiet = False, progress_interval: ProgressInterval = 30.0, live_every: LiveEvery = "10s",
) -> None:
    """Run every cell of a declared grid into one MLflow experiment named after the suite."""
    from vitbench.progress import Every
    from vitbench.workers import likely_gpus, pool_for

    if repeats is not None:
        check_number("--repeats", repeats, 1, 1000)
    live, shown = Every.parse(live_every), display(quiet, progress_interval)
    guess = likely_gpus(gpus, device) if path.is_file() else None
    # The workers start before this process imports torch: each imports it, MLflow and its data meanwhile (or,
    # in a warm process, those it kept from its last suite take the job).
    pool = pool_for(path, guess, device, data_dir, tracking_uri, live) if guess else None
    try:
        from vitbench.cells import load_suite
        from vitbench.suite import run_suite
        from vitbench.workers import resolve_gpus

        s, resolved = load_suite(path), resolve_gpus(gpus, device)
        if pool and pool.gpus != resolved:  # the guess was wrong (e.g. no CUDA in this torch): start again
            pool.discard()
            pool = None
        wall.mark("imports")
    except BaseException:
        if pool:
            pool.discard()
        raise
    made = run_suite(s, repeats=repeats, device=device, tracking_uri=tracking_uri, force=force, log=typer.echo,
                     data_dir=data_dir, only=split_list(cells), display=shown, live=live, gpus=resolved, pool=pool)
    typer.echo(f"suite {s.name}: {len(made)} run(s) made; report with `vitbench report --experiment {s.name}`")
    import mlflow

    from vitbench.mlflow_ui import see_line
    from vitbench.tracking import resolve_tracking_uri

    typer.echo(see_line(resolve_tracking_uri(tracking_uri), mlflow.get_experiment_by_name(s.name).experiment_id))
    if not quiet:  # where the time went: this process's, then each worker's (from when it was started)
        typer.echo(wall.summary())
        for gpu, line in sorted(wall.WORKERS.items()):
            typer.echo(f"[{gpu}] {line}")


@app.command()
@cli_errors
def report(
    experiment: Annotated[str, typer.Option(help="MLflow experiment(s), comma-separated (a suite's name, "
                                                 "vitbench-bench, ...)")],
    filter: Annotated[str | None, typer.Option(help="MLflow search filter, e.g. \"params.`train.epochs` = '5'\"")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder [reports/<experiment>]")] = None,
    target: Annotated[float, typer.Option(help="accuracy for the time-to-target column")] = 0.98,
    note: Annotated[str | None, typer.Option(help="a Notes section (caveats, context) for the report")] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Markdown report with seaborn plots from the runs of an experiment."""
    from vitbench.report import build_report

    check_number("--target", target, 0.0, 1.0, low_open=True)

    build_report(experiment, out, filter, tracking_uri, target, log=typer.echo, note=note)


@app.command()
@cli_errors
def inspect(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a training run")],
    out: Annotated[Path | None, typer.Option(help="output folder [reports/inspect/<run id>]")] = None,
    images: Annotated[int, typer.Option(help="test images to show attention for")] = 6,
    data_dir: DataDir = None, tracking_uri: TrackingUri = None,
    checkpoint_dir: Annotated[Path, typer.Option(help="where checkpoints are")] = Path("checkpoints"),
) -> None:
    """Attention maps (per head and rollout), prediction grid and confusion matrix of a trained run."""
    from vitbench.inspect_run import inspect_run

    check_number("--images", images, 1, 64)

    inspect_run(run_id, out, images, tracking_uri, checkpoint_dir, data_dir, log=typer.echo)


@app.command()
@cli_errors
def sync(
    run_id: Annotated[str, typer.Argument(help="the run whose records could not be sent")],
    checkpoint_dir: Annotated[Path, typer.Option(help="where its checkpoints (and unsent records) are")] = Path("checkpoints"),
    tracking_uri: TrackingUri = None,
) -> None:
    """Send what a run kept locally while its tracking server was away (metrics, tags, artifacts, status), to the
    store the run recorded unless --tracking-uri names one."""
    from vitbench.outbox import recorded_store
    from vitbench.outbox import sync as send
    from vitbench.tracking import connect

    check_run_id(run_id)
    connect(tracking_uri or recorded_store(run_id, checkpoint_dir) or os.environ.get("MLFLOW_TRACKING_URI"),
            existing=True)
    send(run_id, checkpoint_dir, log=typer.echo)


@app.command("warm")
@cli_errors
def warm_processes(
    start: Annotated[bool, typer.Option("--start", help="start one (if there is none) and wait until it is ready")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="ask each to leave (after the command it is running)")] = False,
) -> None:
    """The warm processes that serve `vitbench run` and `suite` (VITBENCH_WARM=auto|on|off): list, start or stop
    them."""
    t0 = time.perf_counter()
    try:
        if start:
            p = warm.start()
            typer.echo(f"pid {p['pid']}: ready ({time.perf_counter() - t0:.1f} s), log {p['log']}")
            return
        found = warm.status(stop=stop)
    except OSError as e:  # a timeout, a socket folder that is not ours alone
        raise VitbenchError(str(e)) from None
    if not found:
        typer.echo("no warm process is running")
    for p in found:
        state = ("running a command" if p["busy"] else f"idle for {time.time() - p['since']:.0f} s") if p["ready"] \
            else "importing torch, CUDA, MLflow"
        kept = ", ".join(f"{gpu} pid {pid}" for gpu, pid in p.get("workers", {}).items())
        typer.echo(f"pid {p['pid']}: {'leaving' if stop else state}, {p['served']} command(s) served, "
                   + (f"keeps its last suite's workers ({kept}), " if kept else "") + f"log {p['log']}")


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    guard_streams()  # no password reaches the terminal, whoever prints it (MLflow's "View run at" lines)
    # SIGTERM (kill, timeout, a scheduler) ends runs KILLED like Ctrl-C, wherever it lands.
    signal.signal(signal.SIGTERM, _terminate)
    argv = sys.argv[1:]
    try:
        to_warm = warm.wanted(argv)
    except ValueError as e:
        leave(f"error: {e}", 2)
    if to_warm:  # `run` in the warm process, where torch, CUDA and MLflow are loaded already
        try:
            code = warm.forward(argv, note=lambda line: print(line, file=sys.stderr, flush=True))
        except OSError:
            code = None  # no warm process to be had (e.g. an unwritable socket folder): run it here
        except KeyboardInterrupt:  # Ctrl-C before the warm process took the command, or twice
            leave("interrupted: the warm process was asked to end the command; its run, if one started, ends KILLED",
                  130)
        if code is not None:
            leave(code)
    if not argv:
        app(prog_name="vitbench")  # the help
    usage_error = typer.BadParameter.__mro__[1]  # click's UsageError, as Typer carries it
    try:
        code = app(prog_name="vitbench", standalone_mode=False)
    except usage_error as e:  # not a number, no such option, a missing argument: one line too
        known = {c.name or c.callback.__name__ for c in app.registered_commands}
        where = f"vitbench {argv[0]} --help` lists its options" if argv[0] in known else "vitbench --help` lists them"
        leave(f"error: {e.format_message()} (`{where})", 2)
    except typer.Abort:
        leave(130)
    except SystemExit as e:
        leave(e.code)
    leave(code if isinstance(code, int) else 0)


def leave(code: int | str | None, message_code: int = 1) -> None:
    """Exit as soon as a command is done. Its work is recorded by then (runs ended, stores committed, files
    closed), and the interpreter's own teardown -- torch's compile workers, the CUDA context, MLflow's thread
    pools -- took seconds after the result was printed (3.5 s on a CPU, ~10 s on an H100 host)."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = message_code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    sys.exit(main())
