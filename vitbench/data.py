"""Datasets through torchvision, and two loaders that draw the same samples in the same order.

``dataloader`` is the tutorials' pipeline (torch DataLoader, per-image PIL -> tensor transforms);
``gpu`` keeps the whole dataset as one uint8 tensor on the device, draws batches by index and
augments on the device. Both take their sample order from ``epoch_order(seed, epoch)``.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Sampler, Subset

from vitbench import names
from vitbench.distributed import rank
from vitbench.errors import VitbenchError, require_torchvision
from vitbench.splits import DatasetInfo, Splits, split_indices  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from vitbench.config import TrainConfig

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte")
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "MNIST", "mnist", 10, (0.1307,), (0.3081,), "none", 2, "MNIST/raw", _IDX,
                         idx_files=True),
    "fashion-mnist": DatasetInfo("fashion-mnist", "FashionMNIST", "mnist", 10, (0.2860,), (0.3530,), "none", 2,
                                 "FashionMNIST/raw", _IDX, idx_files=True,
                                 classes=("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                          "Sneaker", "Bag", "Boot")),
    "cifar10": DatasetInfo("cifar10", "CIFAR10", "cifar10", 10, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), "crop-flip", 4, "cifar-10-batches-py",
                           tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"), (3, 32, 32),
                           classes=("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "cifar100": DatasetInfo("cifar100", "CIFAR100", "cifar10", 100, (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), "crop-flip", 4, "cifar-100-python", ("train", "test", "meta"),
                            (3, 32, 32)),
}

_HOWTO = {
    "mnist": "copy the four IDX files (plain or .gz) there",
    "fashion-mnist": "copy the four IDX files (plain or .gz) there, e.g. from Debian's dataset-fashion-mnist "
                     "(/usr/share/datasets/fashion-mnist)",
    "cifar10": "unpack cifar-10-python.tar.gz (www.cs.toronto.edu/~kriz/cifar.html) into the data root",
    "cifar100": "unpack cifar-100-python.tar.gz (www.cs.toronto.edu/~kriz/cifar.html) into the data root",
}


DATASET_NAMES = (*DATASETS, "synthetic", "imagefolder:PATH")


def get_dataset_info(name: str, shape: tuple[int, int, int] | None = None, num_classes: int | None = None
                     ) -> DatasetInfo:
    """A torchvision dataset's fixed description; for ``synthetic`` and ``imagefolder:PATH`` the image
    shape (and, synthetic, the classes) come from the model's preset: ``shape``, ``num_classes``."""
    from vitbench import images

    if name == "synthetic":
        return images.synthetic_info(shape, num_classes)
    if name.startswith("imagefolder:"):
        return images.folder_info(name, shape)
    if name not in DATASETS:
        raise VitbenchError(f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    return DATASETS[name]


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $VITBENCH_DATA, else ./data."""
    return Path(data_dir or os.environ.get("VITBENCH_DATA") or "data")


def _gunzip_idx(folder: Path, files: tuple[str, ...]) -> None:
    """MNIST-family files are often shipped as .gz only; torchvision reads them uncompressed. Each caller writes
    its own uniquely named part file and moves it into place whole, so processes started together (a suite's
    workers, data-parallel ranks) never read or replace each other's half-written file."""
    for f in files:
        raw, gz = folder / f, folder / f"{f}.gz"
        if not raw.exists() and gz.exists():
            fd, tmp = tempfile.mkstemp(prefix=f"{f}.", suffix=".part", dir=folder)
            try:
                with gzip.open(gz, "rb") as src, os.fdopen(fd, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, raw)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)


def loader_kind(requested: str, device_type: str, world: int) -> str:
    """``gpu`` (the whole split in memory, batches drawn on the device) or ``dataloader`` (torch's, per image):
    as asked, else the device-resident one on CUDA and for data-parallel ranks. Decided here, once."""
    if requested != "auto":
        return requested
    return "gpu" if device_type == "cuda" or world > 1 else "dataloader"


def open_dataset(name: str, root: Path, train: bool, transform=None, download: bool = True):
    """The torchvision dataset; missing or unreadable files become one-line VitbenchErrors."""
    torchvision = require_torchvision()

    info = get_dataset_info(name)
    folder = root / info.folder
    cls = getattr(torchvision.datasets, info.torchvision_class)
    if info.idx_files and folder.is_dir():
        try:
            _gunzip_idx(folder, info.files)
        except (OSError, EOFError) as e:
            raise VitbenchError(f"could not decompress {name} files in {folder}: {e}") from None
    present = [f for f in info.files if (folder / f).exists()]
    try:
        return cls(str(root), train=train, transform=transform, download=download and not present)
    except Exception as e:  # torchvision raises RuntimeError, URLError, ValueError, pickle errors...
        if len(present) == len(info.files):  # every file is there, yet unreadable
            raise VitbenchError(
                f"could not read {name} from {folder} ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                f"a file may be truncated or corrupt: delete it and download again"
            ) from None
        raise VitbenchError(
            f"{name} not found and could not be downloaded: expected {', '.join(info.files)} in {folder}; "
            f"{_HOWTO[name]}, or pass --data-dir / set VITBENCH_DATA"
        ) from None


def load_tensors(name: str, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The split as (N, C, H, W) uint8 images and (N,) int64 labels: read by torchvision the first time, then
    from a decoded copy beside the files (``vitbench-decoded/``), kept while the files' sizes and times stay
    the same; saves importing torchvision and parsing the files on every run. A read-only folder keeps none."""
    info = get_dataset_info(name)
    folder = root / info.folder
    decoded = folder / "vitbench-decoded" / f"{'train' if train else 'test'}.pt"
    source = _source_key(folder, info.files)
    if source and decoded.exists():
        try:
            kept = torch.load(decoded, weights_only=True)
            if kept["source"] == source:
                return kept["images"], kept["labels"]
        except Exception:  # unreadable or from another version: read the files again
            pass
    images, labels = _read_tensors(name, root, train)
    source = _source_key(folder, info.files)  # after a download or decompression
    with contextlib.suppress(OSError):
        decoded.parent.mkdir(exist_ok=True)
        part = decoded.with_suffix(f".{os.getpid()}.part")
        torch.save({"source": source, "images": images, "labels": labels}, part)
        part.replace(decoded)
    return images, labels


def _source_key(folder: Path, names) -> list[list]:
    """What the decoded copy was made from: each file's name, size and modification time."""
    files = [folder / f for f in names]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]


def _read_tensors(name: str, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ds = open_dataset(name, root, train)
    try:
        data, labels = ds.data, ds.targets
        images = torch.as_tensor(data)
        images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)  # -> (N, C, H, W)
        labels = torch.as_tensor(labels, dtype=torch.int64)
    except Exception as e:
        raise VitbenchError(f"could not read {name}: {e}") from None
    if images.shape[1:] != get_dataset_info(name).image_shape or len(images) != len(labels):
        raise VitbenchError(f"{name} files are malformed: images {tuple(images.shape)}, labels {len(labels)}")
    return images.contiguous(), labels


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a function of (seed, epoch) alone, for every loader and variant."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def seed_picks_split(info: DatasetInfo, val_split: float) -> bool:
    """Does ``load_splits`` draw a held-out split with the seed: asked for, or an ImageFolder without a
    val/test folder (10 % by default)?"""
    return bool(val_split) or info.torchvision_class == "ImageFolder"


def load_splits(name: str, data_dir: str | None = None, val_split: float = 0.0, seed: int = 0,
                info: DatasetInfo | None = None, resident: bool = True) -> Splits:
    """Train and evaluation images; ``info`` describes a synthetic or ImageFolder dataset (its shape);
    ``resident=False`` lets an ImageFolder be streamed from disk instead of decoded into memory."""
    from vitbench import images

    info, root = info or get_dataset_info(name), data_root(data_dir)
    if info.synthetic:
        return images.synthetic_splits(info)
    if info.torchvision_class == "ImageFolder":
        return images.folder_splits(info, val_split, seed, resident)
    x, y = load_tensors(name, root, train=True)
    if val_split:
        tr, va = split_indices(len(x), val_split, seed)
        return Splits(info, root, x[tr], y[tr], x[va], y[va], f"val:{val_split:g}", tr, va)
    xt, yt = load_tensors(name, root, train=False)
    return Splits(info, root, x, y, xt, yt, "test")


def first_batch(loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Epoch 0's first batch of a loader (its generator closed at once, so a DataLoader's iterator is let go)."""
    batches = loader.batches(0)
    try:
        return next(batches)
    finally:
        batches.close()


def mean_std(info: DatasetInfo, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's per-channel mean and std on ``device``, shaped to normalise (B, C, H, W) batches."""
    return tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (info.mean, info.std))


def normalize(images_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images_u8.float() / 255.0 - mean) / std  # (B, C, H, W) float32


AUGMENTS = names.AUGMENTS
AFFINE_DEGREES, AFFINE_SCALE = 10.0, (0.9, 1.1)  # "affine": rotation, zoom, and the crop's shifts


def resolve_augment(augment: str | None, info: DatasetInfo) -> str:
    """``None`` / "auto": the dataset's default (crop-flip for CIFAR, none for the digits)."""
    augment = info.augment if augment in (None, "auto") else augment
    if augment not in AUGMENTS:
        raise VitbenchError(f"unknown augment {augment!r}; valid: auto, {', '.join(AUGMENTS)}")
    return augment


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True,
                     whole: int | None = None, part: slice = slice(None)) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch and (``flip``) random horizontal flip, on x's device.
    With ``whole``, x is the ``part`` of a batch of that size: the draws are made for the whole batch and
    x gets its part of them, as a data-parallel rank gets its share of the single-process batch."""
    B, C, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p), zero-filled
    draws = torch.randint(0, 2 * pad + 1, (3, whole or B), device=x.device, generator=generator)
    oy, ox, flips = draws[:, part]
    rows = (oy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    out = padded[torch.arange(B, device=x.device)[:, None, None, None],
                 torch.arange(C, device=x.device)[None, :, None, None], rows, cols]  # (B, C, H, W)
    return torch.where((flips % 2 == 1)[:, None, None, None], out.flip(3), out) if flip else out


def random_affine(x: torch.Tensor, generator: torch.Generator, shift: int = 2, degrees: float = AFFINE_DEGREES,
                  scale: tuple[float, float] = AFFINE_SCALE, whole: int | None = None,
                  part: slice = slice(None)) -> torch.Tensor:
    """Per-sample random rotation (uniform in +-``degrees``), zoom (uniform in ``scale``) and whole-pixel
    shift (uniform in +-``shift``) about the image centre, bilinear, black outside: torchvision's
    ``RandomAffine(degrees, translate=(shift/W, shift/H), scale, interpolation=BILINEAR)``, on x's device.
    Returns float pixels on x's scale. ``whole`` and ``part`` as for ``random_crop_flip``."""
    B, C, H, W = x.shape
    u = torch.rand((4, whole or B), device=x.device, generator=generator)[:, part]
    angle = torch.deg2rad((2 * u[0] - 1) * degrees)
    zoom = scale[0] + u[1] * (scale[1] - scale[0])
    shifts = torch.round((2 * u[2:] - 1) * shift)  # pixels: (dx, dy)
    # affine_grid maps output to input coordinates (in [-1, 1]): the inverse of shift . zoom . rotation
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    tx, ty = 2 * shifts[0] / W, 2 * shifts[1] / H
    theta = torch.stack([torch.stack([cos, sin, -(cos * tx + sin * ty)], 1),
                         torch.stack([-sin, cos, sin * tx - cos * ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, [B, C, H, W], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class DeviceLoader:
    """The whole split as one uint8 tensor on ``device``; batches are drawn by index.

    Training batches are shuffled by ``epoch_order`` and the last partial batch is dropped (static
    shapes); augmentation randomness is seeded per (seed, step), so a resumed run sees the same.
    ``shard`` (rank, world size): a data-parallel rank's loader yields its 1/world of each batch of
    ``batch_size`` (the global batch), so the ranks together see what one process would.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo, batch_size: int,
                 device: torch.device, train: bool, seed: int = 0, augment: str | None = None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size, self.device, self.train, self.seed = batch_size, device, train, seed
        rank, world = shard if train else (0, 1)
        share = batch_size // world
        self.part = slice(rank * share, (rank + 1) * share)
        self.augment = resolve_augment(augment, info) if train else "none"
        self.pad = info.crop_padding
        self.mean, self.std = mean_std(info, device)
        self.generator = torch.Generator(device=device)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = epoch_order(n, self.seed, epoch).to(self.device) if self.train else None
        for step in range(start, len(self)):
            sl = slice(step * self.batch_size, (step + 1) * self.batch_size)
            idx = order[sl][self.part] if order is not None else sl
            x = self.images[idx]
            if self.augment != "none":  # on the raw pixels, so the padding is black as in torchvision
                self.generator.manual_seed(self.seed * 1_000_003 + epoch * 100_003 + step)
                if self.augment == "affine":
                    x = random_affine(x, self.generator, self.pad, whole=self.batch_size, part=self.part)
                else:
                    x = random_crop_flip(x, self.generator, self.pad, flip=self.augment == "crop-flip",
                                         whole=self.batch_size, part=self.part)
            yield normalize(x, self.mean, self.std), self.labels[idx]


class EpochSampler(Sampler[int]):
    """``epoch_order`` for a torch DataLoader, so both loaders visit samples in the same order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        self.epoch, self.start = epoch, start_sample

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.n, self.seed, self.epoch)[self.start :].tolist())

    def __len__(self) -> int:
        return self.n - self.start


class TorchLoader:
    """The tutorials' pipeline: torchvision dataset, per-image transforms, torch DataLoader."""

    def __init__(self, splits: Splits, batch_size: int, device: torch.device, train: bool, seed: int = 0,
                 num_workers: int = 0, augment: str | None = None) -> None:
        require_torchvision()
        import torchvision.transforms as T

        info = splits.info
        augment = resolve_augment(augment, info) if train else "none"
        steps = [T.ToTensor(), T.Normalize(info.mean, info.std)]
        if augment == "crop-flip":
            steps.insert(0, T.RandomHorizontalFlip())
        if augment == "affine":
            H, W = info.image_shape[1:]
            pad = info.crop_padding
            steps.insert(0, T.RandomAffine(AFFINE_DEGREES, translate=(pad / W, pad / H), scale=AFFINE_SCALE,
                                           interpolation=T.InterpolationMode.BILINEAR))
        elif augment != "none":
            steps.insert(0, T.RandomCrop(info.image_shape[1], padding=info.crop_padding))
        official_train = train or splits.eval_index is not None  # a held-out split comes from the train set
        if info.torchvision_class == "ImageFolder":
            from vitbench.images import open_folder

            ds = open_folder(info, official_train, steps)
        else:
            ds = open_dataset(info.name, splits.root, official_train, transform=T.Compose(steps))
        index = splits.train_index if train else splits.eval_index
        if index is not None:
            ds = Subset(ds, index.tolist())
        self.dataset, self.batch_size, self.device, self.train = ds, batch_size, device, train
        self.sampler = EpochSampler(len(ds), seed) if train else None
        batch_sampler = BatchSampler(self.sampler, batch_size, drop_last=True) if train else None
        batching = {"batch_sampler": batch_sampler} if train else {"batch_size": batch_size}
        self.loader = DataLoader(ds, **batching, num_workers=num_workers, pin_memory=device.type == "cuda",
                                 persistent_workers=num_workers > 0)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch, start * self.batch_size)
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


@dataclass(frozen=True)
class RunContext:
    """What a run's options come to on this machine, worked out once (``runner.run_context``) and handed down: the
    device, the data-parallel ranks, the loader asked for or chosen for them, the dataset as the model sees it, and
    whether the parts are the naive loops (never compiled or captured; evaluated through their batched twin)."""

    device: torch.device
    world: int
    loader: str  # gpu | dataloader
    info: DatasetInfo
    eager_only: bool


def make_loaders(cfg: TrainConfig, splits: Splits, ctx: RunContext):
    """(loader kind, training loader, evaluation loader) for a run's splits: the context's loader, unless the data
    allows only one (synthetic images live in memory; an ImageFolder too large for it is read from disk)."""
    device, loader = ctx.device, ctx.loader
    forced = "gpu" if splits.info.synthetic else None if splits.resident else "dataloader"
    if forced is not None:
        if cfg.loader not in ("auto", forced):
            raise VitbenchError(f"--loader {cfg.loader} does not apply to {splits.info.name}: "
                                f"{'synthetic images live in memory' if splits.info.synthetic else 'it is read from disk'}")
        loader = forced
    if loader == "dataloader" and ctx.world > 1:  # a DataLoader would give every rank the whole batch
        raise VitbenchError(f"--gpus N needs {splits.info.name} in memory on every rank; it does not fit "
                            "(train on one GPU, or on a smaller --preset)")
    if loader == "gpu":
        train = DeviceLoader(splits.train_images, splits.train_labels, splits.info, cfg.batch_size, device,
                             train=True, seed=cfg.seed, augment=cfg.augment, shard=(rank(), ctx.world))
    else:
        train = TorchLoader(splits, cfg.batch_size, device, True, cfg.seed, cfg.num_workers, cfg.augment)
    # Evaluation is not the timed training: on the CPU it reads the images from memory where they are there (a
    # DataLoader's per-image transforms took longer than the model's forward over MNIST's test set)
    if loader == "gpu" or (splits.resident and device.type == "cpu"):
        evaluation = DeviceLoader(splits.eval_images, splits.eval_labels, splits.info, cfg.eval_batch_size,
                                  device, train=False)
    else:
        evaluation = TorchLoader(splits, cfg.eval_batch_size, device, False, cfg.seed, cfg.num_workers)
    return loader, train, evaluation
