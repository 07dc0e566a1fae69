"""What a person sees in the MLflow UI: each run's description (MLflow's run note) in words, the data it trained
and evaluated on as MLflow datasets, and experiments marked as model training, so the UI opens on their runs.

MLflow keeps a run's or an experiment's description in the tag ``mlflow.note.content`` (the UI's
"Description" box) and an experiment's kind in ``mlflow.experimentKind``; without it MLflow 3's UI may open an
experiment on its GenAI view."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import warnings
from typing import TYPE_CHECKING

from vitbench.names import is_timm

if TYPE_CHECKING:
    import torch

    from vitbench.config import TrainConfig
    from vitbench.data import Splits
    from vitbench.models import ViTConfig
    from vitbench.train import TrainResult

NOTE = "mlflow.note.content"
NAME_LENGTH = 250  # MLflow's SQL stores keep an experiment's and a run's name in 250 characters
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI's "Machine learning" type
SMALL_MODEL = 10_000_000  # parameters: up to this size (the mnist, cifar10, vit-ti16 presets) a run logs its model
MEMORY_KIND = {"cuda_max_memory_allocated": "GPU, torch.cuda.max_memory_allocated",
               "process_peak_rss": "the process's peak RSS on the CPU, not the model's memory"}


# MLflow cannot choose the runs table's columns for a user; it can open a view shared through an experiment tag
# (mlflow.sharedViewState.KEY, the UI's own "share view" format) at ...#/experiments/ID/runs?viewStateShareKey=KEY.
VIEW_KEY = "vitbench"
TRAINING_COLUMNS = ("metrics.`final_val_acc`", "metrics.`train_images_per_sec_mean`", "metrics.`peak_memory_mb`",
                    "metrics.`param_count`", "metrics.`train_seconds`", "tags.`part.attention`", "tags.`part.patchify`",
                    "tags.`part.mlp`", "tags.`part.pos_embed`", "tags.`stopped_by`")
BENCH_COLUMNS = ("metrics.`train_samples_per_sec_median`", "metrics.`train_step_time_median`", "metrics.`train_peak_memory_mb`",
                 "metrics.`infer_samples_per_sec`", "metrics.`train_tflops`", "params.`attention`", "params.`patchify`",
                 "params.`mlp`", "params.`batch_size`")


def shared_view(columns: tuple[str, ...] = TRAINING_COLUMNS, grouped: bool = False) -> str:
    """The view's state as the UI shares it: the comparison's columns first, wide enough for their names; ``grouped``
    (a suite's experiment): its runs grouped by cell (mean of the repeats), and charts that answer the question --
    accuracy against training images/s, peak memory and images/s per cell."""
    import json

    state = {"selectedColumns": list(columns), "columnOrder": list(columns),
             "columnWidths": {c: max(120, 9 * len(c.split("`")[1 if "`" in c else 0])) for c in columns},
             "orderByKey": columns[0], "orderByAsc": False}
    if grouped:
        def chart(uuid: str, kind: str, title: str, **axes) -> dict:
            return {"uuid": f"vitbench-{uuid}", "type": kind, "metricSectionId": "vitbench", "deleted": False,
                    "isGenerated": False, "runsCountToCompare": 100, "displayName": title, **axes}

        state |= {"groupBy": {"aggregateFunction": "average",
                              "groupByKeys": [{"mode": "tag", "groupByData": "suite.cell"}]},
                  "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
                  "compareRunSections": [{"uuid": "vitbench", "name": "faster, lighter, as accurate?", "display": True,
                                          "isReordered": False}],
                  "compareRunCharts": [
                      chart("accuracy", "SCATTER", "accuracy against training images/s",
                            xaxis={"key": "train_images_per_sec_mean", "type": "METRIC"},
                            yaxis={"key": "final_val_acc", "type": "METRIC"}),
                      chart("memory", "BAR", "peak memory per cell (MiB)", metricKey="peak_memory_mb"),
                      chart("speed", "BAR", "training images/s per cell", metricKey="train_images_per_sec_mean")]}
    return json.dumps(state)


def view_url(tracking_uri: str, experiment_id: str, charts: bool = False) -> str:
    """Where a person sees the experiment's runs with the comparison's columns (``charts``: its charts): the server's
    page, or the page of `mlflow ui` on the same store (its default address)."""
    from vitbench.secrets import mask_secrets

    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    mode = "&compareRunsMode=CHART" if charts else ""
    return mask_secrets(f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}{mode}")


def mark_experiment(experiment_id: str, description: str | None = None,
                    columns: tuple[str, ...] | None = None, grouped: bool | None = None) -> None:
    """The experiment is model training (the UI opens on its runs), with ``description`` as its note and a
    shared view that shows ``columns`` (view_url), grouped by suite cell where ``grouped``; neither given: the view
    it has stays (a suite's run does not ungroup its suite's view)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    view = f"mlflow.sharedViewState.{VIEW_KEY}"
    tags = {**EXPERIMENT_KIND, view: shared_view(columns or TRAINING_COLUMNS, bool(grouped)),
            **({NOTE: description} if description else {})}
    with contextlib.suppress(Exception):  # an older server without experiment tags: the runs matter more
        current = client.get_experiment(experiment_id).tags
        if grouped is None and columns is None and view in current:
            tags.pop(view)
        for k, v in tags.items():
            if current.get(k) != v:
                client.set_experiment_tag(experiment_id, k, v)


def parts_line(model_cfg: ViTConfig, variant: str = "") -> str:
    m = model_cfg
    if is_timm(variant):
        from vitbench.peers import check_timm

        patches = f", patch {m.patch_size}" if "patch_size" in check_timm(variant, m) else ""
        return f"timm's model as timm.create_model builds it for {m.image_size}x{m.image_size}x{m.in_chans} images{patches}"
    return (f"attention {m.attention}, patchify {m.patchify}, MLP {m.mlp}, positions {m.pos_embed}, {m.pool} pooling, "
            f"{m.norm}-norm; dim {m.dim}, depth {m.depth}, heads {m.heads}, MLP width {m.mlp_dim}, patch {m.patch_size}, "
            f"{m.image_size}x{m.image_size}x{m.in_chans} images")


def describe_start(cfg: TrainConfig, model_cfg: ViTConfig) -> str:
    return (f"**{cfg.variant}** on {cfg.dataset}: {parts_line(model_cfg, cfg.variant)}. Training ({plural(cfg.epochs, 'epoch')} of batch "
            f"{cfg.batch_size}, {cfg.precision}{', compiled' if cfg.compile else ''}, seed {cfg.seed}){bound(cfg)}.")


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def bound(cfg: TrainConfig) -> str:
    limits = []
    if cfg.time_budget is not None:
        limits.append(f"--time-budget {cfg.time_budget:g} s")
    if cfg.max_steps is not None:
        limits.append(f"--max-steps {cfg.max_steps:,}")
    return f", bounded by {' and '.join(limits)}" if limits else ""


def describe_result(cfg: TrainConfig, model_cfg: ViTConfig, result: TrainResult, eval_set: str) -> str:
    """The run's ``done`` line in words: what it is, how accurate on what, how fast, how heavy, what stopped it."""
    on = "the test set" if eval_set == "test" else f"a held-out {eval_set.split(':', 1)[-1]} of the training set"
    full = result.stopped_by == "epochs"
    if full:
        stop = f"all {plural(cfg.epochs, 'epoch')}"
    elif result.stopped_by == "time_budget" and result.planned_steps:
        stop = (f"--time-budget {cfg.time_budget:g} s, its schedule fitted to {result.planned_steps:,} steps (what the "
                "budget buys, not a converged accuracy)")
    elif result.stopped_by in ("max_steps", "time_budget"):
        stop = f"{bound(cfg).removeprefix(', bounded by ')} (bounded: not a converged accuracy)"
    elif result.time_to_target is not None:
        stop = (f"reaching {cfg.target_acc:.2%} on it after {result.time_to_target:.2f} s of training (time_to_target, "
                f"checked ten times an epoch)")
    else:
        stop = result.stopped_by
    memory = MEMORY_KIND.get(result.peak_memory_source, result.peak_memory_source)
    return (f"**{cfg.variant}** on {cfg.dataset}: **{result.final_val_acc:.2%}** on {on}"
            f"{'' if full else ' after a bounded run'} (best epoch {result.best_val_acc:.2%}); "
            f"**{result.images_per_sec:,.0f} training images/s** "
            f"({result.steps:,} steps in {result.train_seconds:.1f} s, stopped by {stop}); peak memory "
            f"{result.peak_memory_mb:,.0f} MiB ({memory}); {result.param_count:,} parameters; "
            f"{result.infer_images_per_sec:,.0f} inference images/s.\n\n"
            f"Parts: {parts_line(model_cfg, cfg.variant)}. Step: {result.fast_path or 'eager'}; batch {cfg.batch_size}, "
            f"{cfg.precision}, lr {cfg.lr:g}, seed {cfg.seed}.")


def readable(metrics: dict[str, float]) -> dict[str, float]:
    """Each metric at the precision it carries, so the runs table shows 0.963 and 3,072.4, not 0.96299999 (a
    float32 read back) or 3072.35529: accuracies and losses to 5 significant digits, rates and MiB to 0.1,
    other figures to 6 digits; whole numbers (counts, parameters) as they are."""
    def one(name: str, v: float) -> float:
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")) or v.is_integer():
            return v
        if name.endswith(("per_sec", "_mb", "per_sec_mean", "per_sec_median")):
            return round(v, 1)
        digits = 5 if ("acc" in name or "loss" in name) else 6
        return float(f"{v:.{digits}g}")

    return {k: one(k.rsplit("/", 1)[-1], v) for k, v in metrics.items()}


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:12]


def log_datasets(splits: Splits) -> None:
    """The training and evaluation data as MLflow dataset inputs: name, a digest of the images and labels
    (so two runs on the same split show the same digest), the folder they were read from, and their role."""
    log_inputs(datasets(splits), contexts=["training", "evaluation"])


def datasets(splits: Splits) -> list:
    """The training and the evaluation split as MLflow datasets."""
    from mlflow.data.meta_dataset import MetaDataset

    info = splits.info
    if splits.digests is None:  # a suite's cells share their splits: hashed once
        train = (splits.train_images, splits.train_labels) if splits.resident else (splits.train_labels,)
        splits.digests = (_digest(*train), _digest(splits.eval_images, splits.eval_labels))
    train_digest, eval_digest = splits.digests
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "can be interpreted in multiple ways": a local folder
        if info.synthetic:
            from mlflow.data.code_dataset_source import CodeDatasetSource

            source = CodeDatasetSource({"generator": "vitbench synthetic images (random, fixed labels)"})
        else:
            from mlflow.data.dataset_source_registry import resolve_dataset_source

            source = resolve_dataset_source(str(splits.root.resolve()))
        return [MetaDataset(source, name=f"{info.name}:train", digest=train_digest),
                MetaDataset(source, name=f"{info.name}:{splits.eval_set}", digest=eval_digest)]


def log_trained_model(model, example: torch.Tensor, register: str | None = None) -> str:
    """The trained model as the run's MLflow logged model ``model`` (``runs:/RUN/model``): pickled with vitbench's
    source beside it, so that ``mlflow.pytorch.load_model`` loads it where vitbench is not installed and ``mlflow
    models serve`` serves it; its signature and input example from ``example`` (normalised evaluation images);
    ``register``: its name in the model registry. Returns its model id."""
    import copy
    from pathlib import Path

    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    import vitbench

    model.eval()
    with torch.no_grad():
        logits = model(example)
    x, y = example.cpu().numpy(), logits.float().cpu().numpy()
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # pickle's caution: the user's own model, loaded back
    # The requirements below are this process's own, so MLflow's check of them against the installed packages (as it
    # writes the model, and as it loads it back to try the input example) can find nothing; it costs a scan of every
    # installed package's files, seconds beside torch's CUDA wheels.
    from unittest import mock

    import mlflow.pyfunc
    from mlflow.utils import environment

    check = "warn_dependency_requirement_mismatches"
    with warnings.catch_warnings(), contextlib.ExitStack() as skip:
        for module in (m for m in (environment, mlflow.pyfunc) if hasattr(m, check)):
            skip.enter_context(mock.patch.object(module, check, lambda requirements: None))
        warnings.simplefilter("ignore")
        info = mlflow.pytorch.log_model(
            copy.deepcopy(model).cpu(), name="model", signature=infer_signature(x, y), input_example=x,
            serialization_format="pickle", code_paths=[str(Path(vitbench.__file__).parent)],
            pip_requirements=[f"torch>={torch.__version__.split('+')[0]}", "numpy"], registered_model_name=register)
    return info.model_id


def log_inputs(datasets: list, contexts: list[str], attempts: int = 5) -> None:
    """``mlflow.log_inputs``, again where another process logged the same dataset into the experiment at the same
    moment (a suite's workers starting their first runs together): MLflow's SQL store looks for the dataset, then
    inserts it, so the later insert breaks the table's unique key and the run failed; the next attempt finds the
    dataset and links it to the run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            mlflow.log_inputs(datasets, contexts=contexts, tags_list=[None] * len(datasets))
            return
        except MlflowException as e:
            duplicate = any(m in str(e) for m in ("UNIQUE constraint failed", "duplicate key value", "IntegrityError"))
            if not duplicate or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def see_line(tracking_uri: str, experiment_id: str, charts: bool = False) -> str:
    """One line telling where to look: the comparison view, and the command that serves it for a local store."""
    serve = "" if tracking_uri.startswith(("http://", "https://")) else \
        f"`mlflow ui --backend-store-uri {tracking_uri}`, then "
    return f"compare in the MLflow UI: {serve}{view_url(tracking_uri, experiment_id, charts)}"
