"""`vitbench sweep` on the CPU with tiny models: parent/child runs, resume, failures, interrupts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import optuna
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.conftest import REPO
from tests.helpers import sweep_args, sweep_runs
from vitbench.cli import app


def vitbench_storage(url: str):
    from vitbench.study import journal_storage

    return journal_storage(url)



def test_ctrl_c_kills_trial_and_parent_then_rerun_resumes(workdir, tiny_mnist, space):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "vitbench", *sweep_args(space, "--n-trials", "2")]
    args[args.index("--epochs") + 1] = "200"
    proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a trial's MLflow run exists
        time.sleep(1)
        try:
            trials = optuna.load_study(study_name="sdpa-mnist-val_acc", storage=storage).trials
        except Exception:
            continue
        if trials and "mlflow_run_id" in trials[0].user_attrs:
            break
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    (parent,), (child,) = sweep_runs(workdir)
    assert parent.info.status == "KILLED" and child.info.status == "KILLED"
    # Re-running finishes the study (shorter trials now), under the same parent.
    res = CliRunner().invoke(app, sweep_args(space, "--n-trials", "2"))
    assert res.exit_code == 0, res.output
    (parent2,), children = sweep_runs(workdir)
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    assert sum(c.info.status == "FINISHED" for c in children) == 2



def test_journal_storage_two_workers_survive_a_sigkill(workdir, tiny_mnist):
    """Optuna's journal file, two workers on this host; one SIGKILLed mid-trial: its trial is failed (its
    PID is gone), its MLflow run ended FAILED, its parameters retried, and the study ends at n_trials."""
    import psutil

    journal = f"journal:{workdir / 'optuna.journal'}"
    space = workdir / "space.yaml"
    space.write_text("lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "VITBENCH_DATA": str(tiny_mnist)}
    cmd = [sys.executable, "-m", "vitbench", *sweep_args(space, "--n-trials", "4", "--workers", "2", "--storage",
                                                         journal, "--pruner", "none", "--heartbeat", "2",
                                                         "--study-name", "j", "--epochs", "12", "--quiet")]
    coordinator = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
    victim_trials, deadline = None, time.time() + 240
    while time.time() < deadline and victim_trials is None:
        time.sleep(0.5)
        with contextlib.suppress(Exception):
            trials = optuna.load_study(study_name="j", storage=vitbench_storage(journal)).trials
            running = [t for t in trials if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs]
            workers = psutil.Process(coordinator.pid).children()
            if len(running) == 2 and len(workers) == 2:
                victim = workers[0]
                victim_trials = {t.number for t in running if t.user_attrs.get("worker.pid") == victim.pid}
                victim.send_signal(signal.SIGKILL)
    assert victim_trials, "never saw two running trials: " + (coordinator.kill() or "")
    out, _ = coordinator.communicate(timeout=400)
    assert coordinator.returncode == 0, out
    trials = optuna.load_study(study_name="j", storage=vitbench_storage(journal)).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 1, states
    (failed,) = [t for t in trials if t.state.name == "FAIL"]
    assert {failed.number} == victim_trials
    (retry,) = [t for t in trials if optuna.storages.RetryFailedTrialCallback.retried_trial_number(t) == failed.number]
    assert retry.state.name == "COMPLETE" and retry.params == failed.params
    fresh = [t.params["lr"] for t in trials if t.number != retry.number]
    assert len(set(fresh)) == len(fresh), "two workers suggested the same parameters"
    parents, children = sweep_runs(workdir)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert not [r for r in children if r.info.status == "RUNNING"]
    dead = MlflowClient().get_run(failed.user_attrs["mlflow_run_id"])
    assert dead.info.status == "FAILED" and "worker died" in dead.data.tags["error"]
    assert sum(r.info.status == "FINISHED" for r in children) == 4

