"""`vitbench run` as a library function: validate everything, then train inside one MLflow run."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vitbench import mlflow_ui, plots, wall
from vitbench.data import DatasetInfo, Splits, get_dataset_info, load_splits
from vitbench.distributed import lead, rank_tags, world_size
from vitbench.errors import VitbenchError, write_error
from vitbench.loop import EpochCallback, Hooks, train
from vitbench.models import ViTConfig, resolve_config
from vitbench.models.attention import ATTENTION
from vitbench.models.registry import PRESETS
from vitbench.outbox import Outbox
from vitbench.progress import Display, Every
from vitbench.timing import resolve_device
from vitbench.tracking import connect, environment_tags, flatten, get_experiment_id, tracked_run
from vitbench.train import TrainConfig, TrainResult, checksum_path, load_checkpoint, naive_parts

EVAL_TWIN = ("the batched twin of the loop parts (vectorized attention, unfold patchify, the same weights and the "
             "same function: tests/test_models.py); training and inference timing ran the loops")


def shaped(dataset: str, preset: str | None = None) -> tuple[DatasetInfo, str]:
    """The dataset's description and the preset its model takes: the dataset's own preset unless one is
    given; a synthetic or ImageFolder dataset takes its image shape (synthetic: its classes) from it."""
    info = get_dataset_info(dataset)
    if preset is None and info.torchvision_class == "ImageFolder":
        from vitbench.images import folder_preset

        preset = folder_preset(dataset)[0]  # from the images' size and colour
    preset = preset or info.preset
    if preset not in PRESETS:
        raise VitbenchError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    if info.synthetic or info.torchvision_class == "ImageFolder":
        p = PRESETS[preset]
        info = get_dataset_info(dataset, (p["in_chans"], p["image_size"], p["image_size"]), p["num_classes"])
    return info, preset


def dataset_for(dataset: str, model_cfg: ViTConfig) -> DatasetInfo:
    """The dataset as ``model_cfg`` sees it; a torchvision dataset's fixed shape must match the model."""
    shape = (model_cfg.in_chans, model_cfg.image_size, model_cfg.image_size)
    info = get_dataset_info(dataset, shape, model_cfg.num_classes)
    if shape != info.image_shape:
        raise VitbenchError(f"model input {shape} does not match {dataset} images {info.image_shape}")
    return info


def model_config_for(variant: str, dataset: str, preset: str | None = None, **overrides) -> ViTConfig:
    """The variant at its dataset's preset size (or ``preset``), with the dataset's shape and classes."""
    info, preset = shaped(dataset, preset)
    c, h, _ = info.image_shape
    shape = {"image_size": h, "in_chans": c, "num_classes": info.num_classes}
    for k, v in shape.items():
        if overrides.get(k) not in (None, v):
            raise VitbenchError(f"{dataset} has {k} {v}, but {overrides[k]} was asked for")
    return resolve_config(variant, preset, **{**overrides, **shape})


def default_experiment(dataset: str) -> str:
    """vitbench-mnist, vitbench-synthetic, vitbench-imagefolder-<folder name>."""
    if dataset.startswith("imagefolder:"):
        return f"vitbench-imagefolder-{Path(dataset.split(':', 1)[1]).expanduser().resolve().name}"
    return f"vitbench-{dataset}"


def default_run_name(cfg: TrainConfig, model_cfg: ViTConfig, recipe: str | None = None) -> str:
    """What the MLflow UI lists: the recipe, the variant, the parts that differ from the variant's own, the seed."""
    from vitbench.models.registry import get_variant

    parts = get_variant(cfg.variant).parts
    changed = [f"{k}={getattr(model_cfg, k)}" for k in parts if getattr(model_cfg, k) != parts[k]]
    return " ".join([*([f"{recipe}:"] if recipe else []), cfg.variant, *changed, f"seed={cfg.seed}"])


@dataclass
class RunOutcome:
    run_id: str
    result: TrainResult
    experiment_id: str = ""
    tracking_uri: str = ""


def run_experiment(cfg: TrainConfig, model_cfg: ViTConfig, *, tracking_uri: str | None = None,
                   experiment: str | None = None, run_name: str | None = None, resume_run_id: str | None = None,
                   checkpoint_dir: str | Path = "checkpoints", system_metrics: bool = False,
                   parent_run_id: str | None = None, tags: dict | None = None,
                   on_epoch: list[EpochCallback] | None = None, splits: Splits | None = None,
                   log: Callable[[str], None] = print, on_start: Callable[[str], None] | None = None,
                   pruned_exceptions: tuple[type[BaseException], ...] = (),
                   resume_checkpoint: dict | None = None, display: Display | None = None,
                   live: Every = Every()) -> RunOutcome:
    """Train ``cfg`` x ``model_cfg`` as one MLflow run (or continue ``resume_run_id``).

    Every input is checked before the run is created, so bad input leaves nothing half-written.
    ``pruned_exceptions`` (Optuna's TrialPruned) end the run FINISHED with a ``stopped_early`` tag.
    ``resume_checkpoint``: the checkpoint of ``resume_run_id`` when the caller already loaded it.
    ``display``: where progress goes (a suite's or sweep's shared one); ``live``: how often step-level
    metrics (``live/train_loss``, ``live/train_acc``, ``live/train_images_per_sec``) are logged.
    """
    device = resolve_device(cfg.device)
    if why := ATTENTION[model_cfg.attention].unavailable(device):
        raise VitbenchError(why)
    info = dataset_for(cfg.dataset, model_cfg)
    resume = resume_checkpoint
    if resume_run_id and resume is None:
        resume = load_checkpoint(find_checkpoint(resume_run_id, checkpoint_dir, tracking_uri))
    if world_size() > 1:  # a data-parallel rank: rank 0 records for all of them
        tags = {**(tags or {}), **rank_tags(device)}
        if not lead():
            result = train(cfg, model_cfg, splits or load_data(cfg, info, lambda s: None), resume=resume,
                           log=lambda s: None)
            return RunOutcome("", result)
    writable_folder(Path(checkpoint_dir), "checkpoint folder")
    if system_metrics and device.type == "cuda" and importlib.util.find_spec("pynvml") is None:
        log("note: --system-metrics records no GPU utilisation or memory without NVIDIA's NVML bindings: "
            "pip install 'vitbench[gpu]' (nvidia-ml-py)")
    with wall.phase("store"):
        uri = connect(tracking_uri)  # an unreachable server fails here, before any data is loaded
    with wall.phase("data from disk"):
        splits = splits or load_data(cfg, info, log)
    if cfg.batch_size > len(splits.train_labels):
        raise VitbenchError(f"batch size {cfg.batch_size:,} is larger than the training set "
                            f"({len(splits.train_labels):,} images)")
    with wall.phase("store"):
        exp_id = get_experiment_id(experiment or default_experiment(cfg.dataset), uri)  # bad data: no store written
    name = run_name or default_run_name(cfg, model_cfg, (tags or {}).get("recipe"))
    import mlflow

    box = Outbox(checkpoint_dir, uri)  # what cannot be sent when the store is lost mid-run is kept here
    t_store = time.perf_counter()
    with tracked_run(exp_id, name, run_id=resume_run_id, tags=run_tags(cfg, model_cfg, splits, device, tags),
                     parent_run_id=parent_run_id,
                     system_metrics=system_metrics, finished_on=pruned_exceptions, outbox=box) as run_id:
        if on_start is not None:
            on_start(run_id)
        if resume is None:
            mlflow.log_params({**flatten(asdict(cfg), "train."), **flatten(model_cfg.to_dict(), "model."),
                               "data.eval_set": splits.eval_set})
            mlflow_ui.log_datasets(splits)
            mlflow.set_tag(mlflow_ui.NOTE, mlflow_ui.describe_start(cfg, model_cfg))
        else:
            mlflow.set_tag("resumed_at_step", str(resume["position"]["global_step"]))
        wall.add("store", time.perf_counter() - t_store)
        ckpt = Path(checkpoint_dir) / run_id / "last.pt"
        hooks = recording_hooks(box, on_epoch)
        try:
            with display or Display("off", log=log) as shown:
                result = train(cfg, model_cfg, splits, checkpoint_path=ckpt, resume=resume, hooks=hooks,
                               display=shown, live=live, name=run_name or cfg.variant, log=log)
        except BaseException:
            log_checkpoint(ckpt, box)
            raise
        finally:
            box.flush()  # the live metrics queued during training
        box.tags({"fast_path": result.fast_path, "stopped_by": result.stopped_by,
                  "peak_memory_source": result.peak_memory_source, "final_eval": result.eval_scope,
                  mlflow_ui.NOTE: mlflow_ui.describe_result(cfg, model_cfg, result, splits.eval_set),
                  **({"eval_model": EVAL_TWIN} if naive_parts(model_cfg) else {})})
        with wall.phase("plots, artifacts, final metrics"):
            box.metrics(result.final_metrics())
            log_artifacts(result, cfg, model_cfg, splits, ckpt, box)
        t_store = time.perf_counter()
    wall.add("store", time.perf_counter() - t_store)  # the run's end
    return RunOutcome(run_id, result, exp_id, uri)


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


def run_tags(cfg: TrainConfig, model_cfg: ViTConfig, splits: Splits, device, tags: dict | None) -> dict[str, str]:
    """What a run is (variant, parts, data) and where it ran (hardware, versions, command), plus ``tags``."""
    out = {
        "variant": cfg.variant, "dataset": cfg.dataset, "eval_set": splits.eval_set,
        **{f"part.{k}": getattr(model_cfg, k) for k in ("attention", "patchify", "pos_embed", "pool", "norm")},
        **environment_tags(device), **(tags or {}),
    }
    if splits.info.synthetic:
        out["synthetic"] = "true: random images and labels, throughput only"
    return out


def recording_hooks(box: Outbox, on_epoch: list[EpochCallback] | None) -> Hooks:
    """Epoch metrics (step = epoch), live metrics (step = global step, not waited for) and what a stopped
    run did, all through the outbox; then the caller's epoch callbacks."""
    return Hooks(epoch=[lambda epoch, metrics: box.metrics(metrics, step=epoch), *(on_epoch or [])],
                 live=lambda step, metrics: box.metrics({f"live/{k}": v for k, v in metrics.items()}, step, wait=False),
                 stopped=lambda metrics, tags: (box.metrics(metrics), box.tags(tags)))


def load_data(cfg: TrainConfig, info: DatasetInfo, log: Callable[[str], None]) -> Splits:
    # in memory for the device-resident loader: asked for, or the default on CUDA and for data-parallel ranks
    resident = cfg.loader == "gpu" or (cfg.loader == "auto" and (resolve_device(cfg.device).type == "cuda"
                                                                 or world_size() > 1))
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
    log_checkpoint(ckpt, box)


def log_checkpoint(ckpt: Path, box: Outbox) -> None:
    """The checkpoint and its checksum, as the run's ``checkpoint/`` artifacts."""
    for f in (ckpt, checksum_path(ckpt)):
        if f.exists():
            box.artifact(f, "checkpoint")


def find_checkpoint(run_id: str, checkpoint_dir: str | Path, tracking_uri: str | None) -> Path:
    """The run's last checkpoint: on local disk if there, else brought from the run's artifacts (with its
    checksum) into ``checkpoint_dir/RUN``; a download that fails leaves nothing behind."""
    local = Path(checkpoint_dir) / run_id / "last.pt"
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


def resume_configs(ckpt: dict, **changes) -> tuple[TrainConfig, ViTConfig]:
    """The configuration saved in a checkpoint, with the options a resume may change."""
    cfg = TrainConfig.from_dict(ckpt["train_config"])
    cfg = replace(cfg, **{k: v for k, v in changes.items() if v is not None or k in ("max_steps", "time_budget")})
    return cfg, ViTConfig(**ckpt["model_config"])
