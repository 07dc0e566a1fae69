"""What a dataset is and what a run trains and evaluates on: the description every loader reads
(``DatasetInfo``), the splits themselves (``Splits``) and the seeded held-out split. A floor below
``vitbench.data`` (torchvision's datasets) and ``vitbench.images`` (synthetic images and image folders), which
both build them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from vitbench.errors import VitbenchError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    torchvision_class: str
    preset: str  # model size preset of the registry
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str  # training augmentation by default: none | crop | crop-flip
    crop_padding: int  # zero padding of the random crop, pixels per side
    folder: str  # where torchvision looks, under the data root (an ImageFolder: its path)
    files: tuple[str, ...]
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) of the images a model sees
    synthetic: bool = False  # random images with fixed random labels: throughput only
    classes: tuple[str, ...] = ()  # the class names of the plots; () -> "0", "1", ...
    idx_files: bool = False  # the MNIST family's IDX files, which may also be given gzipped

    @property
    def class_names(self) -> list[str]:
        return list(self.classes) or [str(i) for i in range(self.num_classes)]


def split_indices(n: int, val_split: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of (train, held-out validation) within the official training set."""
    if not 0.0 < val_split < 1.0:
        raise VitbenchError(f"--val-split must be in (0, 1), got {val_split}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    n_val = max(1, int(round(n * val_split)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


@dataclass
class Splits:
    """What a run trains and evaluates on; ``eval_set`` is recorded with every run."""

    info: DatasetInfo
    root: Path
    train_images: torch.Tensor  # (N, C, H, W) uint8, CPU
    train_labels: torch.Tensor
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    eval_set: str  # "test" (official) or "val:<fraction>" (held out of the training set)
    train_index: torch.Tensor | None = None  # into the torchvision train set (val split), for DataLoader
    eval_index: torch.Tensor | None = None
    resident: bool = True  # False: an ImageFolder too large for memory; images are read from disk per batch
    digests: tuple[str, str] | None = field(default=None, compare=False)  # of train and eval (MLflow datasets)
