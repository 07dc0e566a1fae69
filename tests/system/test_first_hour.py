"""What a first hour on a laptop can trust: busy machines flagged, a broken torch/torchvision pair named, one axis
at a time in rankings, sweeps that keep the test set out of tuning, numbers readable at a glance."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO
from tests.helpers import TINY

RUN = ["run", "--epochs", "1", "--batch-size", "64", "--loader", "gpu", *TINY]



def test_a_torch_torchvision_pair_that_does_not_work_is_one_line(workdir, tiny_mnist):
    """A CPU torch beside a CUDA torchvision: importing torchvision fails in torch's operator registry."""
    fake = workdir / "fake"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    (fake / "torchvision-0.99.0.dist-info").mkdir()
    (fake / "torchvision-0.99.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\n"
                                                                   "Version: 0.99.0\n")
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{REPO}", "VITBENCH_DATA": str(tiny_mnist)}
    out = subprocess.run([sys.executable, "-m", "vitbench", *RUN], cwd=workdir, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    import torch

    assert line.startswith(f"error: torchvision 0.99.0 does not work with torch {torch.__version__} (")
    assert "operator torchvision::nms does not exist" in line and "pip install --force-reinstall torch torchvision" in line

