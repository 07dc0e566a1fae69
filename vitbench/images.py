"""Datasets at any preset's shape: synthetic images (throughput only) and a user's own images.

``synthetic``: random uint8 images with fixed random labels (generator seed 0, the same for every
run), so a ViT-S/16 step can be timed without a dataset; its accuracy means nothing and is marked so.
``imagefolder:PATH``: torchvision's ``ImageFolder`` (PATH/<class>/<image>, or PATH/train/<class>/...
with PATH/val or PATH/test beside it), resized to the preset's image size. Decoded once into one
uint8 tensor when it fits in memory (the device-resident loader), streamed from disk when it does not.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vitbench.errors import VitbenchError, require_torchvision
from vitbench.splits import DatasetInfo, Splits, split_indices

SYNTHETIC_TRAIN, SYNTHETIC_EVAL = 8192, 1024
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_VAL_SPLIT = 0.1  # an ImageFolder without a val/ or test/ folder holds this much of itself out
RESIDENT_SHARE = 0.4  # decode into memory when the images take at most this share of free (device) memory


def synthetic_info(shape: tuple[int, int, int] | None, num_classes: int | None) -> DatasetInfo:
    shape = tuple(shape or (1, 28, 28))
    c = shape[0]
    return DatasetInfo("synthetic", "", "mnist", num_classes or 10, (0.5,) * c, (0.25,) * c, "none", 0, "", (),
                       shape, synthetic=True)


def synthetic_splits(info: DatasetInfo) -> Splits:
    g = torch.Generator().manual_seed(0)
    shape = info.image_shape

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
        return x, torch.randint(0, info.num_classes, (n,), generator=g)

    (x, y), (xe, ye) = draw(SYNTHETIC_TRAIN), draw(SYNTHETIC_EVAL)
    return Splits(info, Path("."), x, y, xe, ye, "synthetic")


def _roots(path: Path) -> tuple[Path, Path | None, str]:
    """(training folder, evaluation folder or None, its name) of an ImageFolder tree."""
    if (path / "train").is_dir():
        for name in ("val", "test"):
            if (path / name).is_dir():
                return path / "train", path / name, name
        return path / "train", None, ""
    return path, None, ""


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def folder_preset(name: str) -> tuple[str, str]:
    """The preset an image folder's own images call for, and why: grayscale images of up to 32 pixels take the
    digits' preset (28x28x1), colour ones of up to 64 pixels CIFAR's (32x32x3), larger ones ViT-Ti/16's (224)."""
    path = Path(name.split(":", 1)[1]).expanduser()
    train_root, _, _ = _roots(path) if path.is_dir() else (path, None, "")
    first = next((f for d in sorted(train_root.iterdir()) if d.is_dir() for f in sorted(d.iterdir())
                  if f.suffix.lower() in IMAGE_SUFFIXES), None) if train_root.is_dir() else None
    if first is None:
        return "vit-ti16", "no image found to look at"
    from PIL import Image

    try:
        with Image.open(first) as im:
            (w, h), gray = im.size, im.mode in ("1", "L", "I", "I;16", "F")
    except Exception:
        return "vit-ti16", f"{first} could not be read"
    kind = "grayscale" if gray else "colour"
    if gray and max(w, h) <= 32:
        preset = "mnist"
    elif max(w, h) <= 64:
        preset = "cifar10"
    else:
        preset = "vit-ti16"
    return preset, f"{w}x{h} {kind} images (e.g. {first.name})"


def folder_info(name: str, shape: tuple[int, int, int] | None) -> DatasetInfo:
    layout = "PATH/<class>/<image> (or PATH/train/<class>/<image> with PATH/val/<class>/<image>)"
    if not name.split(":", 1)[1].strip():
        raise VitbenchError(f"imagefolder: needs a folder, imagefolder:PATH with {layout}")
    path = Path(name.split(":", 1)[1]).expanduser()
    if not path.is_dir():
        raise VitbenchError(f"imagefolder: {path} is not a folder; expected {layout}")
    check_tree(path)
    train_root, _, _ = _roots(path)
    classes = sorted(d.name for d in train_root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise VitbenchError(f"imagefolder: {train_root} has {len(classes)} class folder(s), needs at least 2; "
                            f"expected {layout}")
    shape = tuple(shape or (3, 224, 224))
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if shape[0] == 3 else ((0.5,) * shape[0], (0.25,) * shape[0])
    return DatasetInfo(name, "ImageFolder", "vit-ti16", len(classes), mean, std, "crop-flip",
                       max(1, shape[1] // 8), str(path), tuple(classes), shape, classes=tuple(classes))


def check_tree(path: Path) -> None:
    """An image folder is read as a plain tree: a linked folder inside it (which could lead out of the tree, or
    back into it, for ever: torchvision's ImageFolder follows links) is one line naming it."""
    for here, folders, _ in os.walk(path, followlinks=False):
        for name in folders:
            if os.path.islink(os.path.join(here, name)):
                raise VitbenchError(f"imagefolder: {os.path.join(here, name)} is a link to a folder; give a plain "
                                    "tree of folders (copy or bind-mount what it points to)")


def open_folder(info: DatasetInfo, train: bool, steps: list):
    """The ImageFolder of the training (or evaluation) images, resized to the preset, then ``steps``."""
    torchvision = require_torchvision()
    import torchvision.transforms as T

    train_root, eval_root, _ = _roots(Path(info.folder))
    root = train_root if train or eval_root is None else eval_root
    c, h, w = info.image_shape
    first = [T.Grayscale(c)] if c != 3 else []
    try:
        ds = torchvision.datasets.ImageFolder(str(root), transform=T.Compose([*first, T.Resize((h, w)), *steps]),
                                              loader=read_image)
    except (FileNotFoundError, RuntimeError) as e:
        raise VitbenchError(f"imagefolder {root}: {str(e).splitlines()[0][:200]}") from None
    if list(ds.classes) != list(info.files):
        raise VitbenchError(f"imagefolder: {root} has classes {ds.classes[:5]}..., the training folder "
                            f"{list(info.files)[:5]}...; both need the same class folders")
    return ds


def read_image(path: str):
    """An image file as an RGB PIL image; one that cannot be read is one line naming it."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except Exception as e:  # PIL.UnidentifiedImageError, a truncated file, OSError
        raise unreadable(path, e) from None


def unreadable(path: str, e: Exception) -> VitbenchError:
    return VitbenchError(f"imagefolder: cannot read image {path}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''}")


def check_images(paths: list[str], limit: int = 200_000) -> None:
    """Open every image's header before a run starts (cheap: a few seconds for 100,000 files), so a file that
    is no image fails the command at once, not a run half-way; folders larger than ``limit`` are left to the
    loader, which names a bad file when it meets it."""
    from PIL import Image

    for path in paths[:limit]:
        try:
            with Image.open(path) as im:
                im.size  # noqa: B018 -- the header was parsed
        except Exception as e:
            raise unreadable(path, e) from None


def decode(ds, index: torch.Tensor | None = None) -> torch.Tensor:
    """The dataset's images (those of ``index``) as one (N, C, H, W) uint8 tensor."""
    from torch.utils.data import DataLoader, Subset

    if index is not None:
        ds = Subset(ds, index.tolist())
    workers = min(8, os.cpu_count() or 1)
    try:
        batches = [x for x, _ in DataLoader(ds, batch_size=256, num_workers=workers if len(ds) > 1024 else 0)]
    except VitbenchError as e:  # from a worker process: its message ends with the original one
        raise VitbenchError(str(e).strip().splitlines()[-1].split("VitbenchError: ")[-1]) from None
    return torch.cat(batches) if batches else torch.empty(0, dtype=torch.uint8)


def resident_budget() -> float:
    """Bytes of images that may be held in memory: a share of free GPU memory, or of RAM on the CPU."""
    if torch.cuda.is_available():
        return RESIDENT_SHARE * torch.cuda.mem_get_info()[0]
    return RESIDENT_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def folder_splits(info: DatasetInfo, val_split: float, seed: int, resident: bool) -> Splits:
    require_torchvision()
    import torchvision.transforms as T

    _, eval_root, eval_name = _roots(Path(info.folder))
    as_u8 = [T.PILToTensor()]
    train_ds = open_folder(info, True, as_u8)
    labels = torch.as_tensor(train_ds.targets, dtype=torch.int64)
    if eval_root is not None:
        eval_ds = open_folder(info, False, as_u8)
        eval_labels = torch.as_tensor(eval_ds.targets, dtype=torch.int64)
        tr = va = None
        eval_set = eval_name
    else:
        tr, va = split_indices(len(labels), val_split or DEFAULT_VAL_SPLIT, seed)
        eval_ds, eval_labels, eval_set = train_ds, labels[va], f"val:{val_split or DEFAULT_VAL_SPLIT:g}"
    train_labels = labels if tr is None else labels[tr]
    n = len(labels) + (len(eval_labels) if eval_root is not None else 0)
    if resident and n * torch.Size(info.image_shape).numel() <= resident_budget():
        x = decode(train_ds)
        xe = decode(eval_ds) if eval_root is not None else x[va]
        return Splits(info, Path(info.folder), x if tr is None else x[tr], train_labels, xe, eval_labels,
                      eval_set, tr, va)
    # Streamed: per batch from disk by the DataLoader; the first evaluation images for the prediction grid.
    check_images([p for p, _ in train_ds.samples] + ([p for p, _ in eval_ds.samples] if eval_root is not None else []))
    first = va[:32] if va is not None else torch.arange(min(32, len(eval_labels)))
    empty = torch.empty(0, *info.image_shape, dtype=torch.uint8)
    return Splits(info, Path(info.folder), empty, train_labels, decode(eval_ds, first), eval_labels, eval_set,
                  tr, va, resident=False)
