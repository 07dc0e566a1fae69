"""What many tests share: the tiny model's flags, the CLI in-process, the runs of an experiment, image folders."""

from __future__ import annotations

import os
import time
from pathlib import Path

import mlflow
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from vitbench import conditions
from vitbench.cli import app
from vitbench.models.attention import Attention

TINY = ["--depth", "1", "--dim", "32", "--heads", "2", "--mlp-dim", "64", "--device", "cpu"]


BENCH_TINY = [*TINY, "--warmup", "1", "--repeats", "3"]
SPACE = """
lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
batch_size: {type: categorical, choices: [32, 64]}
"""


def busy_machine(monkeypatch) -> None:
    """Other processes take every core while we measure; this process gets a tenth of one."""
    cores = os.cpu_count() or 1
    monkeypatch.setattr(conditions, "cpu_seconds", lambda: (cores * time.perf_counter(), 0.1 * time.perf_counter()))


def quiet_machine(monkeypatch) -> None:
    """No other process runs (the test suite's own parallel workers would make any real machine look busy)."""
    monkeypatch.setattr(conditions, "cpu_seconds", lambda: (time.perf_counter(), time.perf_counter()))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(res, needle: str) -> str:
    """A refusal as the docs promise it: exit 2, one line on stderr that says ``needle``, no traceback."""
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert "Traceback" not in res.output
    return err


def refused(*args, needle: str) -> str:
    """The command is refused as the docs promise (``one_line_error``)."""
    return one_line_error(invoke(*args), needle)


def sweep_args(space, *extra: str) -> list[str]:
    return ["sweep", "--variant", "sdpa", "--dataset", "mnist", "--space", str(space), "--epochs", "2", *TINY, *extra]


def sweep_runs(workdir, uri=None):
    """The sweep's parent runs and its trials' runs."""
    mlflow.set_tracking_uri(uri or f"sqlite:///{workdir / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("vitbench-sweep-mnist")
    found = MlflowClient().search_runs([exp.experiment_id])
    parents = [r for r in found if r.data.tags.get("kind") == "sweep"]
    children = [r for r in found if r.data.tags.get("kind") == "sweep-trial"]
    return parents, children


class EinsumAttention(Attention):
    """A new attention as a user would add one: a subclass and its ATTENTION entry (tests/unit, integration)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.split_heads(x)
        w = torch.einsum("bhqd,bhkd->bhqk", q, k).mul(self.head_dim**-0.5).softmax(-1)
        return self.proj_drop(self.proj(torch.einsum("bhqk,bhkd->bqhd", w, v).reshape(B, N, D)))


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
