"""`vitbench run` end to end on the CPU: what lands in MLflow, resume, interrupts, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO
from tests.helpers import TINY, invoke, runs


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_run_killed_with_checkpoint(workdir, tiny_mnist, sig):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "vitbench", "run", "--variant", "sdpa", "--epochs", "1000",
                             "--batch-size", "16", *TINY], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it is training
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("epoch 1:"):
            break
    else:
        proc.kill()
        pytest.fail("run never started: " + "".join(lines))
    time.sleep(0.5)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + out
    assert "Traceback" not in out
    (run,) = runs()
    assert run.info.status == "KILLED"
    ckpt = workdir / "checkpoints" / run.info.run_id / "last.pt"
    steps = torch.load(ckpt, weights_only=True)["position"]["global_step"]
    assert ckpt.exists() and steps >= 32
    # what it did up to the stop is kept: time, steps, images, throughput, and a quick validation pass
    m, tags = run.data.metrics, run.data.tags
    assert m["steps"] == steps and m["images_seen"] == steps * 16 and m["train_seconds"] > 0
    # rates are stored to 0.1 img/s, train_seconds to 6 digits (mlflow_ui.readable)
    assert m["train_images_per_sec_mean"] == pytest.approx(m["images_seen"] / m["train_seconds"], rel=1e-4, abs=0.06)
    assert 0 <= m["final_val_acc"] <= 1 and m["final_val_images"] == 256  # the tiny test set fits in 5 s
    assert tags["stopped_by"] == "interrupt" and tags["final_eval"] == "test: all 256 images"



def test_compiled_step_trains_like_the_eager_one(workdir, tiny_mnist):
    """The fast path's step function, compiled (on CUDA it is also captured in a graph), runs on the CPU
    and computes what the eager step computes."""
    for flag in ("--no-compile", "--compile"):
        res = invoke("run", flag, "--epochs", "1", "--max-steps", "4", "--batch-size", "32", "--lr", "3e-3", *TINY)
        assert res.exit_code == 0, res.output
        assert ("compiling (torch.compile" in res.output) == (flag == "--compile")
    by = {r.data.params["train.compile"]: r for r in runs()}
    assert "compile" in by["True"].data.tags["fast_path"] and "compile" not in by["False"].data.tags["fast_path"]
    eager, compiled = by["False"].data.metrics, by["True"].data.metrics
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-3)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-3)



def test_every_new_trainer_reuses_the_compiled_step():
    """A suite or a sweep builds a Trainer per run in one process. Each must reuse the compiled step, not
    compile it anew: torch stops compiling a function after 8 versions and runs it eagerly from then on
    (a suite's ninth run trained 2.2x slower on an H100 before this was fixed)."""
    from torch._dynamo.utils import counters

    from vitbench.config import TrainConfig
    from vitbench.options import Options, model_config
    from vitbench.train import Trainer

    model_cfg = model_config(Options(dim=16, depth=1, heads=2, mlp_dim=32))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    graphs = []
    for seed in range(10):
        cfg = TrainConfig(compile=True, device="cpu", batch_size=8, seed=seed, precision="bf16")
        Trainer(cfg, model_cfg, steps_per_epoch=10, log=lambda s: None).step(x, y)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[1:] == [graphs[0]] * 9, graphs



def test_recipes_ship_in_the_wheel(tmp_path):
    """`pip install .` (not editable) brings the recipes: the wheel is built, installed into a folder of its own
    and imported from there first (its dependencies, torch among them, from this interpreter's environment,
    a virtual environment's too), and lists and loads them there."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("vitbench-*.whl")
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import vitbench, vitbench.recipes as r; print(vitbench.__file__); "
            "print(sorted(r.load_recipes())); print(r.recipe_options('mnist-budget', budget=300).dim)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(target)})
    assert out.returncode == 0, out.stderr
    where, names, dim = out.stdout.splitlines()[-3:]
    assert where.startswith(str(target)), where  # the installed copy, not the checkout
    assert names == "['mnist-10s', 'mnist-budget', 'mnist-fast', 'mnist-strong']" and dim == "128"  # its tiers too




def test_the_logged_model_loads_in_a_fresh_process_and_predicts_as_the_trained_one(workdir, tiny_mnist):
    """`mlflow.pytorch.load_model("runs:/RUN/model")` in a process of its own (vitbench's source travels with the
    model) gives the predictions of the weights the run evaluated."""
    import numpy as np

    from vitbench.inspect_run import load_run

    assert invoke("run", "--epochs", "1", "--variant", "naive-msa", *TINY).exit_code == 0
    (run,) = runs()
    model = load_run(run.info.run_id, None, "checkpoints", None)[0]
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    np.save(workdir / "x.npy", x.numpy())
    code = ("import sys, mlflow, numpy, torch\n"
            f"mlflow.set_tracking_uri('sqlite:///{workdir / 'mlflow.db'}')\n"
            f"m = mlflow.pytorch.load_model('runs:/{run.info.run_id}/model')\n"
            "with torch.no_grad():\n"
            "    numpy.save('y.npy', m(torch.from_numpy(numpy.load('x.npy'))).numpy())\n")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(np.load(workdir / "y.npy")), model(x))
