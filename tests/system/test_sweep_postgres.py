"""Three worker processes share one study in a real PostgreSQL server; one is SIGKILLed mid-trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import psutil
from mlflow.tracking import MlflowClient

from tests.conftest import REPO


def test_three_workers_survive_a_sigkill(workdir, tiny_mnist, postgres):
    storage, tracking = f"{postgres}/optuna", f"{postgres}/mlflow"
    space = workdir / "space.yaml"
    space.write_text("lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true",
           "OMP_NUM_THREADS": "1"}  # three workers on a 2-core CI machine: one thread each
    cmd = [sys.executable, "-m", "vitbench", "sweep", "--variant", "sdpa", "--dataset", "mnist", "--space", str(space),
           "--n-trials", "6", "--workers", "3", "--storage", storage, "--tracking-uri", tracking, "--pruner", "none",
           "--heartbeat", "2", "--study-name", "pg", "--epochs", "25", "--batch-size", "64", "--depth", "1",
           "--dim", "32", "--heads", "2", "--mlp-dim", "64", "--device", "cpu"]
    coordinator = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
    killed_trial = None
    deadline = time.time() + 300
    while time.time() < deadline and killed_trial is None:
        time.sleep(0.5)
        try:
            trials = optuna.load_study(study_name="pg", storage=storage).trials
        except Exception:
            continue
        running = [t for t in trials if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs]
        workers = psutil.Process(coordinator.pid).children()
        if len(running) >= 3 and len(workers) == 3:  # every worker is mid-trial
            victim = workers[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            time.sleep(0.2)
            # which trial was that worker's? the one whose heartbeat now stops: found at the end
            killed_trial = {t.number for t in running}
    assert killed_trial, "never saw three running trials: " + (coordinator.kill() or "")
    out, _ = coordinator.communicate(timeout=400)
    assert coordinator.returncode == 0, out
    trials = optuna.load_study(study_name="pg", storage=storage).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 6, states
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and failed[0].number in killed_trial, states
    retried = [t for t in trials if optuna.storages.RetryFailedTrialCallback.retried_trial_number(t) == failed[0].number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == failed[0].params
    mlflow.set_tracking_uri(tracking)
    exp = mlflow.get_experiment_by_name("vitbench-sweep-mnist")
    runs = MlflowClient().search_runs([exp.experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    dead = MlflowClient().get_run(failed[0].user_attrs["mlflow_run_id"])
    assert dead.info.status == "FAILED" and "heartbeat" in dead.data.tags["error"]
    parent = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert sum(r.info.status == "FINISHED" for r in runs if r.data.tags.get("kind") == "sweep-trial") == 6

