"""The `vitbench` command: parses options and delegates to the library. Bad input -> one line on
stderr and exit code 2."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from vitbench import names, wall, warm
from vitbench.config import Options
from vitbench.errors import VitbenchError, check_number, check_run_id
from vitbench.flags import (
    WRITTEN,
    Attentions,
    CudaGraph,
    DataDir,
    Depth,
    Detail,
    Device,
    Dim,
    Experiment,
    Heads,
    LiveEvery,
    MlpDim,
    Mlps,
    Panels,
    Patchifies,
    PatchSize,
    Peers,
    Pool,
    PosEmbed,
    Profile,
    ProgressInterval,
    Quiet,
    Retry,
    SweepExperiment,
    TrackingUri,
    check_mlflow_names,
    cli_errors,
    display,
    int_list,
    settings,
    split_list,
    with_options,
)
from vitbench.names import choices

SWEEP_VAL_SPLIT = 0.1  # a sweep scores its trials on this share of the training set, held out

app = typer.Typer(help="Which way of writing a Vision Transformer is faster, lighter and as accurate?",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=True,
                  rich_markup_mode=None)  # plain help: wrapped to the terminal, never cut mid-word


def print_version(asked: bool) -> None:
    if asked:
        from vitbench import __version__

        typer.echo(f"vitbench {__version__}")
        raise typer.Exit()


@app.callback()
def options_of_vitbench(
    version: Annotated[bool, typer.Option("--version", callback=print_version, is_eager=True,
                                          help="print vitbench's version and exit")] = False,
) -> None:
    """Which way of writing a Vision Transformer is faster, lighter and as accurate?"""


@app.command(cls=Panels)
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


@app.command(cls=Panels)
@cli_errors
def recipes() -> None:
    """List the recipes (vitbench/recipe_files/*.yaml): what each sets, how it was chosen, what it measured."""
    from vitbench.recipes import load_recipes

    def sets(options: dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in options.items())

    for r in load_recipes().values():
        tiers = "".join(f"\n  {f'--time-budget <= {up_to:g} s' if up_to is not None else 'longer'}: {sets(o)}"
                        for up_to, o in r.budgets)
        typer.echo(f"{r.name}: {r.description}\n  sets:      {sets(r.options)}{tiers}\n  chosen by: {r.chosen_by}"
                   f"\n  measured:  {r.measured}\n")


@app.command(cls=Panels)
@cli_errors
@with_options
def run(
    options: Options, tracking_uri: TrackingUri = None, experiment: Experiment = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name", rich_help_panel="Tracking")] = None,
    resume: Annotated[str | None, typer.Option(help="continue this MLflow run from its last checkpoint", rich_help_panel="Tracking")] = None,
    checkpoint_dir: Annotated[Path, typer.Option(help="where checkpoints are written", rich_help_panel="Tracking")] = Path("checkpoints"),
    system_metrics: Annotated[bool, typer.Option(help="log MLflow system metrics: CPU, memory, disk, network; GPU utilisation and memory "
                                                  "with NVIDIA's NVML (pip install 'vitbench[gpu]')", rich_help_panel="Tracking")] = False,
    recipe: Annotated[str | None, typer.Option(help="a named set of options from vitbench/recipe_files/, e.g. "
                                                    "mnist-fast (`vitbench recipes` lists them); options given "
                                                    "explicitly win")] = None,
    config: Annotated[Path | None, typer.Option(help="a YAML file of options, `options:` as in a recipe (what "
                                                     "--print-config writes): over the recipe, under the flags")] = None,
    print_config: Annotated[bool, typer.Option(help="print the resolved options as a file --config reads; train "
                                                    "nothing")] = False,
    log_model: Annotated[bool | None, typer.Option(help="log the trained model as an MLflow model (runs:/RUN/model) "
                                                       "[on up to 10 M parameters: the mnist, cifar10, vit-ti16 "
                                                       "presets]", rich_help_panel="Tracking")] = None,
    register: Annotated[str | None, typer.Option(help="register the model under this name in MLflow's model "
                                                      "registry", rich_help_panel="Tracking")] = None,
    quiet: Quiet = False, progress_interval: ProgressInterval = 30.0, live_every: LiveEvery = "10s",
    gpus: Annotated[int, typer.Option(help="data-parallel training on N GPUs of this host: N processes through "
                                           "torch.distributed.run, DistributedDataParallel, --batch-size the "
                                           "global batch (with --device cpu: N CPU processes on gloo)", rich_help_panel="Hardware")] = 1,
    nodes: Annotated[int, typer.Option(help="hosts training together, --gpus N each: give the same command on "
                                            "every host, with --rdzv-endpoint", rich_help_panel="Hardware")] = 1,
    rdzv_endpoint: Annotated[str | None, typer.Option(help="HOST:PORT where the hosts of --nodes meet (torch's "
                                                           "c10d rendezvous), a free port on one of them", rich_help_panel="Hardware")] = None,
    rdzv_id: Annotated[str, typer.Option(help="the run's rendezvous id, the same on every host", rich_help_panel="Hardware")] = "vitbench",
) -> None:
    """Train a variant on a dataset and record everything in one MLflow run."""
    from vitbench import distributed
    from vitbench.progress import Every
    from vitbench.recipes import config_yaml, run_options
    from vitbench.runner import Tracking, launch, run_configs, run_experiment, say_done

    wall.mark("imports")
    check_number("--gpus", gpus, 1, 1024)
    check_number("--nodes", nodes, 1, 4096)
    check_mlflow_names(experiment=experiment, run_name=run_name, register=register)
    live, shown = Every.parse(live_every), display(quiet, progress_interval)
    cfg, model_cfg, checkpoint = run_configs(run_options(recipe, config, options), resume, checkpoint_dir, tracking_uri,
                                             typer.echo)
    if print_config:
        typer.echo(config_yaml(cfg, model_cfg), nl=False)
        return
    if gpus * nodes > 1 and not distributed.in_rank():
        raise typer.Exit(launch(gpus, distributed.Nodes(nodes, rdzv_endpoint, rdzv_id), cfg, tracking_uri, experiment,
                                typer.echo))
    if distributed.in_rank():
        cfg = replace(cfg, device=str(distributed.init(cfg.device)))
        shown = shown if distributed.lead() else display(True, progress_interval)
    tracking = Tracking(tracking_uri, experiment, run_name, tags={"recipe": recipe} if recipe else None,
                        system_metrics=system_metrics, on_start=lambda rid: typer.echo(f"mlflow run {rid}"),
                        log_model=log_model, register=register)
    outcome = run_experiment(cfg, model_cfg, tracking, resume_run_id=resume, resume_checkpoint=checkpoint,
                             checkpoint_dir=checkpoint_dir, display=shown, live=live)
    speaks = distributed.lead()
    distributed.close()
    if speaks:
        say_done(outcome, cfg, quiet, typer.echo)


@app.command(cls=Panels)
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
    profile: Profile = 0,
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

    from vitbench.bench import BenchOptions, plan, run_bench, runnable
    from vitbench.bench_rows import keep_bench, rich_table
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
                        max_seconds=max_seconds, device=device, seed=seed, retry=retry, detail=detail,
                        profile=profile)
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
    keep_bench(rows, opts, out, tracking_uri, experiment, typer.echo,
               {"variants": ",".join(names), "preset": preset, "batch_sizes": batch_sizes,
                "image_sizes": image_sizes, "patch_sizes": patch_sizes, "peers": peers, **overrides}, WRITTEN)


@app.command(cls=Panels)
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
    pruner_startup_trials: Annotated[int, typer.Option(help="trials the median pruner lets finish before it "
                                                           "prunes")] = 5,
    pruner_warmup_epochs: Annotated[int, typer.Option(help="epochs of each trial never pruned (hyperband: the "
                                                          "fewest a trial gets)")] = 1,
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
    from vitbench.options import named
    from vitbench.progress import Every
    from vitbench.study import SweepSpec, check_objectives, check_space_for, default_study_name, load_space
    from vitbench.sweep import run_sweep

    check_number("--workers", workers, 1, 1024)
    check_mlflow_names(experiment=experiment, study_name=study_name)

    live, shown = Every.parse(live_every), display(quiet, progress_interval)
    base = named(options)  # what every trial starts from
    if base.val_split is None:
        base = replace(base, val_split=SWEEP_VAL_SPLIT)
    objectives = check_objectives(objective)
    variant, dataset = base.variant, base.dataset
    searched = check_space_for(base, load_space(space))
    spec = SweepSpec(variant=variant, dataset=dataset, n_trials=n_trials, space=searched,
                     space_path=str(space or "default"), objectives=objectives, pruner=pruner, storage=storage,
                     study_name=study_name or default_study_name(variant, dataset, objectives), timeout=timeout,
                     heartbeat=heartbeat, seed=base.seed or 0, pruner_startup=pruner_startup_trials,
                     pruner_warmup=pruner_warmup_epochs)
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


@app.command(cls=Panels)
@cli_errors
def suite(
    path: Annotated[Path, typer.Argument(help="suite YAML, e.g. experiments/attention.yaml")],
    repeats: Annotated[int | None, typer.Option(help="repeats per cell (each its own seed) [the suite's]")] = None,
    device: Device = None, data_dir: DataDir = None, tracking_uri: TrackingUri = None,
    force: Annotated[bool, typer.Option(help="re-run cells that already FINISHED")] = False,
    cells: Annotated[str | None, typer.Option(help="only these cells, comma-separated")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE: an option for every cell, over the "
                                                          "suite's own (repeatable, e.g. --set epochs=1)")] = None,
    gpus: Annotated[str, typer.Option(help="run the cells in parallel, one worker process per GPU: N or all "
                                           "(with --device cpu or no GPU: N CPU processes)")] = "1",
    storage: Annotated[str | None, typer.Option(help="the Optuna storage the runs are queued in: journal:FILE "
                                                     "(this host) [beside the store], postgresql+psycopg://"
                                                     "user:pw@host/db (every host that runs this command "
                                                     "takes a share)")] = None,
    heartbeat: Annotated[int, typer.Option(help="seconds between a worker's heartbeats; a run whose worker is "
                                                "silent for 3 of them goes back to the queue")] = 10,
    worker: Annotated[str | None, typer.Option(hidden=True, help="this worker's GPU (set by the launcher)")] = None,
    quiet: Quiet = False, progress_interval: ProgressInterval = 30.0, live_every: LiveEvery = "10s",
) -> None:
    """Run every cell of a declared grid into one MLflow experiment named after the suite; the runs are queued in an
    Optuna study that workers on every GPU, of this host and others, claim them from."""
    from vitbench.progress import Every

    if repeats is not None:
        check_number("--repeats", repeats, 1, 1000)
    check_number("--heartbeat", heartbeat, 1, 3600)
    live, shown = Every.parse(live_every), display(quiet, progress_interval)
    sets = settings(set_ or [])
    if worker is not None:  # started by the launcher: claim runs until none is left
        from vitbench.suite import join

        join(path, sets, storage, heartbeat, device, data_dir, tracking_uri, worker, live, typer.echo)
        if not quiet:
            typer.echo(f"[{worker}] {wall.summary()}")
        return
    from vitbench.cells import load_suite
    from vitbench.launcher import resolve_gpus
    from vitbench.suite import run_suite

    s, resolved = load_suite(path, sets), resolve_gpus(gpus, device)
    wall.mark("imports")
    made = run_suite(s, repeats=repeats, device=device, tracking_uri=tracking_uri, force=force, log=typer.echo,
                     data_dir=data_dir, only=split_list(cells), display=shown, live=live, gpus=resolved,
                     storage=storage, heartbeat=heartbeat, argv=sys.argv[1:])
    typer.echo(f"suite {s.name}: {len(made)} run(s) made; report with `vitbench report --experiment {s.name}`")
    import mlflow

    from vitbench.mlflow_ui import see_line
    from vitbench.tracking import resolve_tracking_uri

    typer.echo(see_line(resolve_tracking_uri(tracking_uri), mlflow.get_experiment_by_name(s.name).experiment_id,
                        charts=True))
    if not quiet:
        typer.echo(wall.summary())


@app.command(cls=Panels)
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


@app.command(cls=Panels)
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


@app.command(cls=Panels)
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


@app.command("warm", cls=Panels)
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
        typer.echo(f"pid {p['pid']}: {'leaving' if stop else state}, {p['served']} command(s) served, "
                   f"log {p['log']}")
