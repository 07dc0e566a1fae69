"""`vitbench run` as a library function: validate everything, then train inside one MLflow run."""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vitbench import mlflow_ui, plots, wall
from vitbench.checkpoints import checksum_path, complete_interrupted_save, load_checkpoint
from vitbench.compute import naive_parts, precision_unavailable
from vitbench.data import RunContext, Splits, load_splits, loader_kind, mean_std, normalize
from vitbench.distributed import lead, rank_tags, world_size
from vitbench.errors import VitbenchError, check_run_id, write_error
from vitbench.liveness import check_not_running
from vitbench.loop import EpochCallback, Hooks, train
from vitbench.models import ViTConfig
from vitbench.models.vit import unavailable
from vitbench.names import is_timm
from vitbench.options import dataset_for, default_experiment
from vitbench.outbox import Outbox
from vitbench.peers import check_timm
from vitbench.progress import Display, Every
from vitbench.timing import resolve_device
from vitbench.tracking import (
    connect,
    environment_tags,
    flatten,
    get_experiment_id,
    tracked_run,
)
from vitbench.train import TrainConfig, TrainResult, ended

EVAL_TWIN = ("the batched twin of the loop parts (vectorized attention, unfold patchify, the same weights and the "
             "same function: tests/unit/test_models.py); training and inference timing ran the loops")


def default_run_name(cfg: TrainConfig, model_cfg: ViTConfig, recipe: str | None = None) -> str:
    """What the MLflow UI lists: the recipe, the variant, the parts that differ from the variant's own, the seed."""
    from vitbench.models.registry import get_variant

    parts = {} if is_timm(cfg.variant) else get_variant(cfg.variant).parts
    changed = [f"{k}={getattr(model_cfg, k)}" for k in parts if getattr(model_cfg, k) != parts[k]]
    return " ".join([*([f"{recipe}:"] if recipe else []), cfg.variant, *changed, f"seed={cfg.seed}"])


def preload(tracking_uri: str | None = None, compiled: bool = False) -> None:
    """Import now what a process's first run imports on first use: MLflow's database store (for a database URI),
    the notebook MLflow looks for as a run starts, torch's dynamo (the optimizer's first step), and with
    ``compiled`` inductor. A suite's worker does this before it claims its first run."""
    from mlflow.store.db.db_types import DATABASE_ENGINES

    from vitbench.tracking import resolve_tracking_uri

    database = resolve_tracking_uri(tracking_uri).split(":", 1)[0].split("+")[0] in DATABASE_ENGINES
    for name in (*(["mlflow.store.tracking.sqlalchemy_store"] if database else []), "IPython", "torch._dynamo",
                 *(["torch._inductor.compile_fx"] if compiled else [])):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


@dataclass
class RunOutcome:
    run_id: str
    result: TrainResult
    experiment_id: str = ""
    tracking_uri: str = ""


@dataclass(frozen=True)
class Tracking:
    """Where and how a run is recorded."""

    uri: str | None = None  # MLflow tracking URI; else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    experiment: str | None = None  # else vitbench-<dataset>
    run_name: str | None = None  # else the recipe, the variant, the parts changed, the seed
    parent_run_id: str | None = None  # a sweep's parent run
    tags: dict | None = None
    system_metrics: bool = False  # MLflow's CPU, memory, disk, network (and GPU with NVML) metrics
    on_start: Callable[[str], None] | None = None  # told the run's id as soon as it exists
    log_model: bool | None = None  # the trained model as an MLflow model; None: for models up to SMALL_MODEL
    register: str | None = None  # and under this name in the model registry

    def __post_init__(self) -> None:
        if self.register and self.log_model is False:
            raise VitbenchError("--register NAME registers the MLflow model that --no-log-model leaves out; give one")


def run_experiment(cfg: TrainConfig, model_cfg: ViTConfig, tracking: Tracking = Tracking(), *,
                   resume_run_id: str | None = None, resume_checkpoint: dict | None = None,
                   checkpoint_dir: str | Path = "checkpoints", on_epoch: list[EpochCallback] | None = None,
                   splits: Splits | None = None, log: Callable[[str], None] = print,
                   pruned_exceptions: tuple[type[BaseException], ...] = (), display: Display | None = None,
                   live: Every = Every()) -> RunOutcome:
    """Train ``cfg`` x ``model_cfg`` as one MLflow run (or continue ``resume_run_id``).

    Every input is checked before the run is created, so bad input leaves nothing half-written.
    ``pruned_exceptions`` (Optuna's TrialPruned) end the run KILLED, ``stopped_by: pruned``, ``stopped_early`` its why.
    ``resume_checkpoint``: the checkpoint of ``resume_run_id`` when the caller already loaded it.
    ``display``: where progress goes (a suite's or sweep's shared one); ``live``: how often step-level
    metrics (``live/train_loss``, ``live/train_acc``, ``live/train_images_per_sec``) are logged.
    """
    ctx = run_context(cfg, model_cfg)
    if cfg.target_acc is not None and ctx.world > 1:
        raise VitbenchError("--target-acc is measured in one process; data-parallel ranks stop on epochs, steps or time")
    checked(cfg, model_cfg, ctx.device, tracking.system_metrics, checkpoint_dir, log)
    resume = resume_checkpoint
    if resume_run_id and resume is None:
        resume = load_checkpoint(find_checkpoint(resume_run_id, checkpoint_dir, tracking.uri))
    if ctx.world > 1:  # a data-parallel rank: rank 0 records for all of them
        tracking = replace(tracking, tags={**(tracking.tags or {}), **rank_tags(ctx.device)})
        if not lead():
            result = train(cfg, model_cfg, splits or load_data(cfg, ctx, lambda s: None), ctx, resume=resume,
                           log=lambda s: None)
            return RunOutcome("", result)
    uri, splits, exp_id = store_and_data(cfg, ctx, tracking, splits, log)
    if resume_run_id:
        check_not_running(resume_run_id)  # two writers of one run: never
    tags = tracking.tags or {}
    name = tracking.run_name or default_run_name(cfg, model_cfg, tags.get("recipe"))
    box = Outbox(checkpoint_dir, uri)  # what cannot be sent when the store is lost mid-run is kept here
    t_store = time.perf_counter()
    with tracked_run(exp_id, name, run_id=resume_run_id, tags=run_tags(cfg, model_cfg, splits, ctx, tags),
                     parent_run_id=tracking.parent_run_id, system_metrics=tracking.system_metrics,
                     stopped_on=pruned_exceptions, outbox=box) as run_id:
        if tracking.on_start is not None:
            tracking.on_start(run_id)
        record_start(cfg, model_cfg, splits, resume)
        wall.add("store", time.perf_counter() - t_store)
        ckpt = Path(checkpoint_dir) / run_id / "last.pt"
        try:
            with display or Display("off", log=log) as shown:
                result = train(cfg, model_cfg, splits, ctx, checkpoint_path=ckpt, resume=resume,
                               hooks=recording_hooks(box, on_epoch, pruned_exceptions), display=shown, live=live,
                               name=tracking.run_name or cfg.variant, log=log)
        except BaseException:
            log_checkpoint(ckpt, box)
            raise
        finally:
            box.flush()  # the live metrics queued during training
        record_result(result, cfg, model_cfg, splits, ckpt, box, tracking)
        t_store = time.perf_counter()
    wall.add("store", time.perf_counter() - t_store)  # the run's end
    return RunOutcome(run_id, result, exp_id, uri)


def record_start(cfg: TrainConfig, model_cfg: ViTConfig, splits: Splits, resume: dict | None) -> None:
    """A new run's options as params, its data as MLflow datasets, its description; a resumed run's step."""
    import mlflow

    if resume is None:
        model = model_cfg.to_dict()
        if is_timm(cfg.variant):  # none of vitbench's parts and sizes: timm's model takes the dataset's shape
            model = {k: model[k] for k in check_timm(cfg.variant, model_cfg)}
        mlflow.log_params({**flatten(asdict(cfg), "train."), **flatten(model, "model."), "data.eval_set": splits.eval_set})
        mlflow_ui.log_datasets(splits)
        mlflow.set_tag(mlflow_ui.NOTE, mlflow_ui.describe_start(cfg, model_cfg))
    else:
        mlflow.set_tag("resumed_at_step", str(resume["position"]["global_step"]))


def run_context(cfg: TrainConfig, model_cfg: ViTConfig) -> RunContext:
    """What the run's options come to on this machine, worked out here once and handed down."""
    device, world = resolve_device(cfg.device), world_size()
    return RunContext(device, world, loader_kind(cfg.loader, device.type, world), dataset_for(cfg.dataset, model_cfg),
                      naive_parts(model_cfg))


def checked(cfg: TrainConfig, model_cfg: ViTConfig, device, system_metrics: bool, checkpoint_dir: str | Path,
            log: Callable[[str], None]) -> None:
    """What can be checked before the store or the data is touched."""
    if why := unavailable(model_cfg, device) or precision_unavailable(cfg.precision, device):
        raise VitbenchError(why)
    if is_timm(cfg.variant):
        check_timm(cfg.variant, model_cfg)
    if lead():  # the rank that records
        writable_folder(Path(checkpoint_dir), "checkpoint folder")
        if system_metrics and device.type == "cuda" and importlib.util.find_spec("pynvml") is None:
            log("note: --system-metrics records no GPU utilisation or memory without NVIDIA's NVML bindings: "
                "pip install 'vitbench[gpu]' (nvidia-ml-py)")


def store_and_data(cfg: TrainConfig, ctx: RunContext, tracking: Tracking, splits: Splits | None,
                   log: Callable[[str], None]) -> tuple[str, Splits, str]:
    """The store (an unreachable server fails before any data is loaded), the data, then the experiment (bad
    data: nothing written to the store)."""
    with wall.phase("store"):
        uri = connect(tracking.uri)
    with wall.phase("data from disk"):
        splits = splits or load_data(cfg, ctx, log)
    if cfg.batch_size > len(splits.train_labels):
        raise VitbenchError(f"batch size {cfg.batch_size:,} is larger than the training set "
                            f"({len(splits.train_labels):,} images)")
    with wall.phase("store"):
        exp_id = get_experiment_id(tracking.experiment or default_experiment(cfg.dataset), uri)
    return uri, splits, exp_id


def record_result(result: TrainResult, cfg: TrainConfig, model_cfg: ViTConfig, splits: Splits, ckpt: Path,
                  box: Outbox, tracking: Tracking = Tracking()) -> None:
    """What a finished training leaves in its run: what stopped it, its description, the model, final metrics (linked
    to the model and the evaluation data), artifacts."""
    box.tags({"fast_path": result.fast_path, "stopped_by": result.stopped_by,
              "peak_memory_source": result.peak_memory_source, "final_eval": result.eval_scope,
              "busy_machine": result.conditions.verdict() or "no",
              "gpu_throttled": result.conditions.gpu_verdict() or "no",
              mlflow_ui.NOTE: mlflow_ui.describe_result(cfg, model_cfg, result, splits.eval_set)})
    with wall.phase("plots, artifacts, final metrics"):
        model_id = logged_model(result, splits, tracking)
        box.metrics(result.final_metrics(), model_id=model_id, dataset=mlflow_ui.datasets(splits)[1])
        log_artifacts(result, cfg, model_cfg, splits, ckpt, box)


def logged_model(result: TrainResult, splits: Splits, tracking: Tracking) -> str | None:
    """The trained model as an MLflow model (``tracking.log_model``; unsaid: models up to SMALL_MODEL parameters), its
    id; None where none is logged or the store refuses it (the checkpoint keeps the weights either way)."""
    wanted = tracking.log_model if tracking.log_model is not None else result.param_count <= mlflow_ui.SMALL_MODEL
    if not (wanted or tracking.register):
        return None
    device = next(result.model.parameters()).device
    example = normalize(splits.eval_images[:4].to(device), *mean_std(splits.info, device))
    try:
        return mlflow_ui.log_trained_model(result.model, example, tracking.register)
    except Exception as e:
        print(f"note: the MLflow model was not logged ({type(e).__name__}: {str(e).splitlines()[0][:200]}); the "
              "checkpoint keeps the weights", file=sys.stderr)
        return None


def writable_folder(folder: Path, what: str) -> None:
    """Prove, before any run exists, that ``folder`` can be made and written: a uniquely named folder is made and
    removed in it, or in its nearest existing parent. Nothing else is touched, so commands started together
    (a suite's workers) do not race over the folder itself."""
    folder = folder.absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        tempfile.TemporaryDirectory(prefix=".vitbench-probe-", dir=existing).cleanup()
    except OSError as e:
        raise write_error(folder, e, what) from None


def run_tags(cfg: TrainConfig, model_cfg: ViTConfig, splits: Splits, ctx: RunContext, tags: dict | None
             ) -> dict[str, str]:
    """What a run is (variant, parts, data) and where it ran (hardware, versions, command), plus ``tags``."""
    out = {
        "variant": cfg.variant, "dataset": cfg.dataset, "eval_set": splits.eval_set,
        **({} if is_timm(cfg.variant) else
           {f"part.{k}": getattr(model_cfg, k) for k in ("attention", "patchify", "mlp", "pos_embed", "pool", "norm")}),
        **environment_tags(ctx.device), **({"eval_model": EVAL_TWIN} if ctx.eager_only else {}), **(tags or {}),
    }
    if splits.info.synthetic:
        out["synthetic"] = "true: random images and labels, throughput only"
    return out


def recording_hooks(box: Outbox, on_epoch: list[EpochCallback] | None,
                    pruned: tuple[type[BaseException], ...] = ()) -> Hooks:
    """Epoch metrics (step = epoch), live metrics (step = global step, not waited for) and what a stopped
    run did, all through the outbox; then the caller's epoch callbacks."""
    return Hooks(epoch=[lambda epoch, metrics: box.metrics(metrics, step=epoch), *(on_epoch or [])],
                 live=lambda step, metrics: box.metrics({f"live/{k}": v for k, v in metrics.items()}, step, wait=False),
                 stopped=lambda metrics, tags: (box.metrics(metrics), box.tags(tags)), pruned=pruned)


def load_data(cfg: TrainConfig, ctx: RunContext, log: Callable[[str], None]) -> Splits:
    """The run's splits, on the device where the context's loader keeps them there."""
    info, resident = ctx.info, ctx.loader == "gpu"
    splits = load_splits(cfg.dataset, cfg.data_dir, cfg.val_split, cfg.seed, info, resident=resident)
    if not splits.resident and resident:
        log(f"note: {cfg.dataset} does not fit in memory; its images are read from disk per batch (DataLoader)")
    if info.synthetic:
        log("note: synthetic data (random images, fixed random labels): throughput only, accuracy means nothing")
    return splits


def log_artifacts(result: TrainResult, cfg: TrainConfig, model_cfg: ViTConfig, splits: Splits, ckpt: Path,
                  box: Outbox) -> None:
    title = f"{cfg.variant} on {cfg.dataset}"
    classes = splits.info.class_names
    folder = ckpt.parent  # kept beside the checkpoint: an offline run's artifacts must outlive this call
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.json"
    config.write_text(json.dumps({"train": asdict(cfg), "model": model_cfg.to_dict(), "eval_set": splits.eval_set},
                                 indent=2))
    box.artifact(config)
    plot_dir = folder / "plots"
    if result.history:
        plots.learning_curves(result.history, plot_dir / "learning_curves.png", title)
    if result.predictions is not None:
        plots.confusion_matrix(result.predictions, result.labels, classes, plot_dir / "confusion_matrix.png",
                               f"{title}: confusion matrix ({splits.eval_set} set)")
        plots.prediction_grid(splits.eval_images[:32], result.predictions[:32], result.labels[:32], classes,
                              plot_dir / "predictions.png", f"{title}: predictions")
    for png in sorted(plot_dir.glob("*.png")):
        box.artifact(png, "plots")
    for f in sorted(Path(result.profile_dir).iterdir()) if result.profile_dir else []:  # --profile
        box.artifact(f, "profile/train")
    log_checkpoint(ckpt, box)


def log_checkpoint(ckpt: Path, box: Outbox) -> None:
    """The checkpoint and its checksum, as the run's ``checkpoint/`` artifacts."""
    for f in (ckpt, checksum_path(ckpt)):
        if f.exists():
            box.artifact(f, "checkpoint")


def find_checkpoint(run_id: str, checkpoint_dir: str | Path, tracking_uri: str | None) -> Path:
    """The run's last checkpoint: on local disk if there, else brought from the run's artifacts (with its
    checksum) into ``checkpoint_dir/RUN``; a download that fails leaves nothing behind."""
    local = Path(checkpoint_dir) / check_run_id(run_id) / "last.pt"
    complete_interrupted_save(local)
    if local.exists():
        return local
    import mlflow

    connect(tracking_uri)
    made = not local.parent.exists()
    try:
        local.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=local.parent))
    except OSError as e:
        raise write_error(local.parent, e) from None
    try:
        got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoint", dst_path=str(staging)))
        if not (got / "last.pt").exists():
            raise FileNotFoundError("checkpoint/last.pt")
        for f in got.iterdir():
            os.replace(f, local.parent / f.name)
    except Exception:
        raise VitbenchError(f"no checkpoint for run {run_id}: looked in {local} and in the run's artifacts") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made and not any(local.parent.iterdir()):
            local.parent.rmdir()
    return local


def run_configs(opts, resume: str | None, checkpoint_dir: Path, tracking_uri: str | None,
                log: Callable[[str], None] = print) -> tuple:
    """`run`'s configs and the checkpoint it continues: a resumed run's own configs with what a resume may
    change, else the options' (an image folder's preset taken from its images, and said)."""
    from vitbench.options import configs, named, resumed

    opts = named(opts)
    if resume:
        check_run_id(resume, "--resume")
        checkpoint = load_checkpoint(find_checkpoint(resume, checkpoint_dir, tracking_uri))
        return (*resumed(checkpoint, opts), checkpoint)
    if opts.dataset.startswith("imagefolder:") and opts.preset is None:
        from vitbench.images import folder_preset

        preset, why = folder_preset(opts.dataset)
        log(f"note: {opts.dataset}: {why} -> preset {preset}; --preset chooses another")
        opts = replace(opts, preset=preset)
    return (*configs(opts), None)


def say_done(outcome: RunOutcome, cfg: TrainConfig, quiet: bool, log: Callable[[str], None] = print) -> None:
    """What a run reached, where its wall time went, and where to see it in the MLflow UI."""
    from vitbench.mlflow_ui import see_line

    r = outcome.result
    log(
        f"done: {cfg.variant} on {cfg.dataset} | val_acc {r.final_val_acc:.4f} (best {r.best_val_acc:.4f}) | "
        f"train {r.train_seconds:.2f} s ({r.steps} steps, {ended(r.stopped_by, r.steps, r.planned_steps)}) | "
        f"warm-up/compile {r.warmup_seconds:.2f} s | infer {r.infer_images_per_sec:,.0f} img/s | "
        f"peak {r.peak_memory_mb:,.0f} MiB | {r.param_count:,} params | {r.fast_path} | run {outcome.run_id}"
        + (" | synthetic data: throughput only, the accuracy means nothing" if cfg.dataset == "synthetic" else "")
    )
    for note in (r.conditions.verdict(), r.conditions.gpu_verdict()):
        if note:
            log(f"note: {note}")
    if not quiet:
        log(wall.summary())
    log(see_line(outcome.tracking_uri, outcome.experiment_id))


def launch(gpus: int, nodes, cfg: TrainConfig, tracking_uri: str | None, experiment: str | None,
           log: Callable[[str], None] = print) -> int:
    """`run --gpus N [--nodes M]`: check, prepare the tracking store (whichever host's rank 0 records, every host
    must reach it), then run this same command as N ranks here, M x N in all; their exit code."""
    from vitbench import distributed

    distributed.check_launch(gpus, cfg.device, cfg.batch_size, cfg.loader, nodes)
    get_experiment_id(experiment or default_experiment(cfg.dataset), connect(tracking_uri))
    ranks = gpus * nodes.count
    where = "this host" if nodes.count == 1 else f"each of {nodes.count} hosts meeting at {nodes.endpoint}"
    log(f"data-parallel: {gpus} rank(s) on {where} through torch.distributed.run, global batch "
        f"{cfg.batch_size} ({cfg.batch_size // ranks} per rank)")
    return distributed.launch(gpus, sys.argv[1:], nodes)
