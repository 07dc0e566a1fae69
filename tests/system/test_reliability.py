"""Nothing lost, nothing leaked: corrupt checkpoints, a full disk, first commands racing on a new store, paths
that reach outside where they should, and bad files -- each a one-line error, nothing half-written.
(A server lost mid-run and the password in a tracking URL: tests/system/test_tracking.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.helpers import TINY, invoke, one_line_error, runs


@pytest.fixture
def tiny_disk(workdir):
    """A 64 KiB filesystem (tmpfs), too small for a checkpoint of the tiny model."""
    mount = workdir / "tiny-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)



def test_a_full_disk_is_one_line_a_failed_run_and_no_partial_file(workdir, tiny_mnist, tiny_disk):
    res = invoke("run", "--epochs", "2", "--batch-size", "64", "--checkpoint-dir", str(tiny_disk), "--quiet", *TINY)
    err = one_line_error(res, "disk full: could not write checkpoint")
    assert str(tiny_disk) in err and "No space left on device" in err, err
    (run,) = runs()
    assert run.info.status == "FAILED" and "disk full" in run.data.tags["error"]
    # what was recorded before the checkpoint stays recorded: the first epoch's metrics
    assert [m.step for m in MlflowClient().get_metric_history(run.info.run_id, "val_acc")] == [1]
    assert not [p for p in tiny_disk.rglob("*") if p.name.endswith(".tmp")]



def test_first_commands_started_together_on_a_new_store_all_succeed(workdir):
    """MLflow's schema migration raced itself: `table _alembic_tmp_experiments already exists`."""
    start = time.time() + 15  # after every interpreter has imported vitbench and MLflow
    code = ("import sys, time\nfrom vitbench.tracking import connect, get_experiment_id\n"
            f"while time.time() < {start}: time.sleep(0.001)\n"
            "connect(); print(get_experiment_id('vitbench-mnist'))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=workdir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert len({o.strip().splitlines()[-1] for o in outs}) == 1, outs  # one experiment, the same for all

