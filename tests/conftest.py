"""Fixtures: tiny datasets written in the real on-disk formats, real MNIST when ../shared has it,
and an isolated working directory (so mlflow.db / mlruns / checkpoints land in tmp)."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "datasets" / "MNIST" / "raw"


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """IDX format of the MNIST family: magic (0, 0, uint8=0x08, ndim), big-endian dims, raw bytes."""
    data = tensor.to(torch.uint8).contiguous()
    header = struct.pack(">BBBB", 0, 0, 0x08, data.ndim) + struct.pack(f">{data.ndim}I", *data.shape)
    path.write_bytes(header + data.numpy().tobytes())


def learnable_images(n: int, seed: int, shape=(1, 28, 28), classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images whose class sets their brightness (every patch sees it) and lights one block."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    c, h, w = shape
    level = (labels * (200 // classes)).view(n, 1, 1, 1)
    images = level + torch.randint(0, 40, (n, c, h, w), generator=g)
    for i, y in enumerate(labels.tolist()):
        r, col = divmod(y % 16, 4)
        images[i, :, r * (h // 4):(r + 1) * (h // 4), col * (w // 4):(col + 1) * (w // 4)] = 255
    return images.clamp(0, 255).to(torch.uint8), labels


def write_tiny_mnist(root: Path, folder: str = "MNIST", n_train: int = 512, n_test: int = 256) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        x, y = learnable_images(n, seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", x[:, 0])
        write_idx(raw / f"{split}-labels-idx1-ubyte", y)
    return root


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VITBENCH_DATA", raising=False)
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()
    return tmp_path


@pytest.fixture
def tiny_mnist(workdir) -> Path:
    return write_tiny_mnist(workdir / "data")


@pytest.fixture(scope="session")
def real_mnist(tmp_path_factory) -> Path:
    """Real MNIST from ../shared/datasets (as .gz: vitbench decompresses them itself)."""
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"real MNIST not found at {SHARED_MNIST}")
    root = tmp_path_factory.mktemp("mnist")
    (root / "MNIST" / "raw").mkdir(parents=True)
    for f in SHARED_MNIST.glob("*.gz"):
        shutil.copy(f, root / "MNIST" / "raw" / f.name)
    return root


def gz(path: Path) -> None:
    with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
