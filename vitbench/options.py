"""One typed path from what a user gives to the configs a run trains with.

Every source of options -- `run`'s and `sweep`'s flags, a recipe, a suite cell, a sweep trial, a resumed run --
makes an ``Options`` (None: not given; declared in vitbench.config) and turns it into ``TrainConfig`` + ``ViTConfig``
here, field by field of the same name. Defaults are the configs' own: TrainConfig's, then the variant's parts and the
dataset's preset sizes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vitbench.config import MODEL_OPTIONS, TRAIN_OPTIONS, Options, TrainConfig, ViTConfig
from vitbench.data import DatasetInfo, get_dataset_info
from vitbench.errors import VitbenchError
from vitbench.models import resolve_config
from vitbench.models.registry import get_preset
from vitbench.names import is_timm
from vitbench.peers import TIMM_SHAPE, check_timm


def given(**values) -> dict:
    """The keyword arguments that are not None: unset options fall through to the config's defaults."""
    return {k: v for k, v in values.items() if v is not None}


def named(o: Options) -> Options:
    """``o`` naming a variant and a dataset: TrainConfig's defaults where it names none."""
    return replace(o, variant=o.variant or TrainConfig.variant, dataset=o.dataset or TrainConfig.dataset)


def train_config(o: Options) -> TrainConfig:
    """The training configuration ``o`` asks for, TrainConfig's defaults where it says nothing."""
    o = named(o)
    return TrainConfig(variant=o.variant, dataset=o.dataset, **given(**{n: getattr(o, n) for n in TRAIN_OPTIONS}))


def model_config(o: Options) -> ViTConfig:
    """The variant's parts at the preset's sizes (the dataset's preset unless ``o.preset``), with the dataset's
    image shape and classes, then every model option ``o`` gives."""
    o = named(o)
    variant = o.variant
    if is_timm(variant):  # timm's model as timm builds it: the dataset's shape, a patch size, no part or size of ours
        if given_ := [n for n in MODEL_OPTIONS if getattr(o, n) is not None and n not in TIMM_SHAPE]:
            raise VitbenchError(f"--{given_[0].replace('_', '-')} is a part or size of vitbench's ViT; {variant} is "
                                "timm's model as timm builds it")
        variant = "sdpa"  # for the image shape and classes its config records
    info, preset = shaped(o.dataset, o.preset)
    c, h, _ = info.image_shape
    for name, asked, has in (("image_size", o.image_size, h), ("in_chans", o.in_chans, c),
                             ("num_classes", o.num_classes, info.num_classes)):
        if asked not in (None, has):
            raise VitbenchError(f"{o.dataset} has {name} {has}, but {asked} was asked for")
    cfg = resolve_config(variant, preset, **{**{n: getattr(o, n) for n in MODEL_OPTIONS}, "image_size": h,
                                               "in_chans": c, "num_classes": info.num_classes})
    if is_timm(o.variant) and o.patch_size is not None and "patch_size" not in check_timm(o.variant, cfg):
        raise VitbenchError(f"--patch-size: {o.variant} cuts no patches (it has no patch size of its own)")
    return cfg


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
