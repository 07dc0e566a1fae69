"""What many tests share: the tiny model's flags, the CLI in-process, the runs of an experiment, image folders."""

from __future__ import annotations

from pathlib import Path

import mlflow
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from vitbench.cli import app

TINY = ["--depth", "1", "--dim", "32", "--heads", "2", "--mlp-dim", "64", "--device", "cpu"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def runs(experiment: str = "vitbench-mnist", uri: str | None = None):
    mlflow.set_tracking_uri(uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name(experiment)
    return [] if exp is None else MlflowClient().search_runs([exp.experiment_id])


def write_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 20) -> Path:
    """PNG and JPEG files of assorted sizes, one colour per class (so a model can tell them apart)."""
    g = torch.Generator().manual_seed(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = 24 + 8 * (i % 3), 20 + 6 * (i % 4)
            pixels = torch.randint(0, 60, (h, w, 3), generator=g, dtype=torch.uint8)
            pixels[..., k] += 180
            Image.fromarray(pixels.numpy()).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root
