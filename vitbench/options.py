"""One typed path from what a user gives to the configs a run trains with.

Every source of options -- `run`'s and `sweep`'s flags, a recipe, a suite cell, a sweep trial, a resumed run --
makes an ``Options`` (None: not given) and turns it into ``TrainConfig`` + ``ViTConfig`` here, each field passed
by its own keyword, so ``--attention`` can be followed from the CLI to ``ViTConfig.attention`` by reading or by a
tool. Defaults are the configs' own: TrainConfig's, then the variant's parts and the dataset's preset sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from vitbench.data import DatasetInfo, get_dataset_info
from vitbench.errors import VitbenchError, check_field_types
from vitbench.models import ViTConfig, resolve_config
from vitbench.models.registry import get_preset
from vitbench.train import TrainConfig


@dataclass(frozen=True)
class Options:
    """Everything one run can be given. ``variant``, ``dataset``: what is trained on what; ``preset``: the size
    (the dataset's own when None); the rest are TrainConfig's and ViTConfig's fields of the same names."""

    variant: str = "sdpa"
    dataset: str = "mnist"
    preset: str | None = None
    # TrainConfig
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    ema: float | None = None
    augment: str | None = None
    grad_clip: float | None = None
    optimizer: str | None = None
    scheduler: str | None = None
    precision: str | None = None
    compile: bool | None = None
    compile_mode: str | None = None
    cuda_graph: bool | None = None
    seed: int | None = None
    device: str | None = None
    loader: str | None = None
    val_split: float | None = None
    max_steps: int | None = None
    time_budget: float | None = None
    eval_batch_size: int | None = None
    num_workers: int | None = None
    data_dir: str | None = None
    # ViTConfig
    attention: str | None = None
    patchify: str | None = None
    mlp: str | None = None
    pos_embed: str | None = None
    pool: str | None = None
    norm: str | None = None
    image_size: int | None = None
    in_chans: int | None = None
    num_classes: int | None = None
    patch_size: int | None = None
    dim: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_dim: int | None = None
    dropout: float | None = None
    patch_drop: float | None = None
    qkv_bias: bool | None = None

    def __post_init__(self) -> None:
        check_field_types(self)  # a YAML file's `batch_size: "eight"`: one line naming it

    @classmethod
    def read(cls, values: Mapping, where: str, settable: tuple[str, ...] | None = None) -> Options:
        """Options from a mapping (a recipe's, a suite cell's, a sweep trial's): unknown names and wrong types
        are one line naming ``where``; ``settable`` limits which names it may give."""
        check_names(values, where, settable)
        try:
            return cls(**values)
        except VitbenchError as e:
            raise VitbenchError(f"{where}: {e}") from None

    def given(self) -> dict:
        """The options that were given (not None), by name."""
        return given(**{f.name: getattr(self, f.name) for f in fields(self)})

    def then(self, later: Options) -> Options:
        """These options with every option ``later`` gives on top (a recipe, then the command line's flags)."""
        return replace(self, **later.given())


OPTION_NAMES = tuple(f.name for f in fields(Options))
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("variant", "dataset"))
MODEL_OPTIONS = tuple(f.name for f in fields(ViTConfig))


def check_names(values: Mapping, where: str, settable: tuple[str, ...] | None = None) -> None:
    """Every name in ``values`` is an option (of ``settable``, default all): else one line naming ``where``."""
    settable = settable or OPTION_NAMES
    bad = [k for k in values if k not in settable]
    if bad:
        raise VitbenchError(f"{where}: {bad[0]!r} is not an option; valid: {', '.join(settable)}")


def given(**values) -> dict:
    """The keyword arguments that are not None: unset options fall through to the config's defaults."""
    return {k: v for k, v in values.items() if v is not None}


def train_config(o: Options) -> TrainConfig:
    """The training configuration ``o`` asks for, TrainConfig's defaults where it says nothing."""
    return TrainConfig(variant=o.variant, dataset=o.dataset, **given(
        epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, weight_decay=o.weight_decay, warmup_epochs=o.warmup_epochs,
        label_smoothing=o.label_smoothing, ema=o.ema, augment=o.augment, grad_clip=o.grad_clip,
        optimizer=o.optimizer, scheduler=o.scheduler, precision=o.precision, compile=o.compile,
        compile_mode=o.compile_mode, cuda_graph=o.cuda_graph, seed=o.seed, device=o.device, loader=o.loader, val_split=o.val_split,
        max_steps=o.max_steps, time_budget=o.time_budget, eval_batch_size=o.eval_batch_size,
        num_workers=o.num_workers, data_dir=o.data_dir))


def model_config(o: Options) -> ViTConfig:
    """The variant's parts at the preset's sizes (the dataset's preset unless ``o.preset``), with the dataset's
    image shape and classes, then every model option ``o`` gives."""
    info, preset = shaped(o.dataset, o.preset)
    c, h, _ = info.image_shape
    for name, asked, has in (("image_size", o.image_size, h), ("in_chans", o.in_chans, c),
                             ("num_classes", o.num_classes, info.num_classes)):
        if asked not in (None, has):
            raise VitbenchError(f"{o.dataset} has {name} {has}, but {asked} was asked for")
    return resolve_config(
        o.variant, preset, attention=o.attention, patchify=o.patchify, mlp=o.mlp, pos_embed=o.pos_embed, pool=o.pool,
        norm=o.norm, patch_size=o.patch_size, dim=o.dim, depth=o.depth, heads=o.heads, mlp_dim=o.mlp_dim,
        dropout=o.dropout, patch_drop=o.patch_drop, qkv_bias=o.qkv_bias, image_size=h, in_chans=c,
        num_classes=info.num_classes)


def configs(o: Options) -> tuple[TrainConfig, ViTConfig]:
    """Both configs, validated: bad input fails here, before anything is loaded or written."""
    return train_config(o), model_config(o)


def resumed(checkpoint: dict, o: Options) -> tuple[TrainConfig, ViTConfig]:
    """The configs saved in a checkpoint, with what a resume may change: ``epochs``, ``device``, ``data_dir``
    when given, and the stopping bounds ``max_steps`` / ``time_budget`` (not given: none)."""
    cfg = replace(TrainConfig.from_dict(checkpoint["train_config"]), max_steps=o.max_steps,
                  time_budget=o.time_budget, **given(epochs=o.epochs, device=o.device, data_dir=o.data_dir))
    return cfg, ViTConfig(**checkpoint["model_config"])


def shaped(dataset: str, preset: str | None = None) -> tuple[DatasetInfo, str]:
    """The dataset's description and the preset its model takes: the dataset's own preset unless one is
    given; a synthetic or ImageFolder dataset takes its image shape (synthetic: its classes) from it."""
    info = get_dataset_info(dataset)
    if preset is None and info.torchvision_class == "ImageFolder":
        from vitbench.images import folder_preset

        preset = folder_preset(dataset)[0]  # from the images' size and colour
    preset = preset or info.preset
    p = get_preset(preset)
    if info.synthetic or info.torchvision_class == "ImageFolder":
        info = get_dataset_info(dataset, (p["in_chans"], p["image_size"], p["image_size"]), p["num_classes"])
    return info, preset


def dataset_for(dataset: str, model_cfg: ViTConfig) -> DatasetInfo:
    """The dataset as ``model_cfg`` sees it; a torchvision dataset's fixed shape must match the model."""
    shape = (model_cfg.in_chans, model_cfg.image_size, model_cfg.image_size)
    info = get_dataset_info(dataset, shape, model_cfg.num_classes)
    if shape != info.image_shape:
        raise VitbenchError(f"model input {shape} does not match {dataset} images {info.image_shape}")
    return info


def default_experiment(dataset: str) -> str:
    """vitbench-mnist, vitbench-synthetic, vitbench-imagefolder-<folder name>."""
    if dataset.startswith("imagefolder:"):
        return f"vitbench-imagefolder-{Path(dataset.split(':', 1)[1]).expanduser().resolve().name}"
    return f"vitbench-{dataset}"
