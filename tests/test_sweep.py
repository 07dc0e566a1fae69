"""`vitbench sweep` on the CPU with tiny models: parent/child runs, resume, failures, interrupts."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.conftest import REPO
from vitbench.cli import app

TINY = ["--depth", "1", "--dim", "32", "--heads", "2", "--mlp-dim", "64", "--device", "cpu"]
SPACE = """
lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
batch_size: {type: categorical, choices: [32, 64]}
"""


@pytest.fixture
def space(workdir):
    path = workdir / "space.yaml"
    path.write_text(SPACE)
    return path


def sweep_args(space, *extra: str) -> list[str]:
    return ["sweep", "--variant", "sdpa", "--dataset", "mnist", "--space", str(space), "--epochs", "2", *TINY, *extra]


def sweep_runs(workdir, uri=None):
    mlflow.set_tracking_uri(uri or f"sqlite:///{workdir / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("vitbench-sweep-mnist")
    runs = MlflowClient().search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("kind") == "sweep-trial"]
    return parents, children


def test_sweep_parent_children_and_resume(workdir, tiny_mnist, space):
    res = CliRunner().invoke(app, sweep_args(space, "--n-trials", "4", "--live-every", "2"))
    assert res.exit_code == 0, res.output
    assert "best trial" in res.output
    assert re.search(r"trial 0: lr=[^:]*: [\d,]+ img/s -> \d+ epochs? \([\d,]+ steps\) ~", res.output), res.output  # per trial
    assert re.search(r"study .*: trial \d+/\d+ \(\d+%\) \| ETA", res.output), res.output
    (parent,), children = sweep_runs(workdir)
    assert len(children) == 4 and parent.info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == [0, 1, 2, 3]
    for c in children:
        assert c.info.status == "FINISHED" and "val_acc" in c.data.metrics and "train.lr" in c.data.params
    hist = MlflowClient().get_metric_history(children[0].info.run_id, "val_acc")
    assert [h.step for h in hist] == [1, 2]
    assert {"study_name", "storage", "space", "n_trials"} <= set(parent.data.params)
    assert "best.lr" in parent.data.params and "best_val_acc" in parent.data.metrics
    # named by what they tried, the parent describing the study, Optuna's objective named
    assert all(re.fullmatch(rf"trial {c.data.tags['optuna.trial']}: lr=\S+ batch_size=\d+", c.info.run_name)
               for c in children), [c.info.run_name for c in children]
    assert "Best: trial" in parent.data.tags["mlflow.note.content"] and "maximize val_acc" in parent.data.tags[
        "mlflow.note.content"]
    import optuna

    study = optuna.load_study(study_name="sdpa-mnist-val_acc", storage=f"sqlite:///{workdir / 'optuna.db'}")
    assert study.metric_names == ["val_acc"]
    arts = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/optimization_history.png", "sweep/param_importances.png", "sweep/parallel_coordinate.png"} <= arts
    # The same command again: the study already has its 4 trials.
    res = CliRunner().invoke(app, sweep_args(space, "--n-trials", "4"))
    assert res.exit_code == 0 and "4 of 4 trials done" in res.output
    parents, children = sweep_runs(workdir)
    assert len(parents) == 1 and len(children) == 4
    # Asking for 5 adds exactly one.
    assert CliRunner().invoke(app, sweep_args(space, "--n-trials", "5")).exit_code == 0
    assert len(sweep_runs(workdir)[1]) == 5


def test_oom_and_nan_trials_are_recorded_and_the_sweep_completes(workdir, tiny_mnist, space, monkeypatch):
    import vitbench.runner as runner

    real_train = runner.train

    def train_with_oom(cfg, *a, **k):
        if cfg.lr == pytest.approx(0.00123):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_train(cfg, *a, **k)

    monkeypatch.setattr(runner, "train", train_with_oom)
    study = optuna.create_study(study_name="faults", storage=f"sqlite:///{workdir / 'optuna.db'}", direction="maximize")
    study.enqueue_trial({"lr": 0.00123, "batch_size": 32})  # forced OOM
    study.enqueue_trial({"lr": 1.0e30, "batch_size": 32})  # a real NaN loss
    study.enqueue_trial({"lr": 3.0e-3, "batch_size": 32})  # a healthy one
    # ...but 1e30 lies outside the space: widen it for this study
    (workdir / "space.yaml").write_text(SPACE.replace("high: 1.0e-2", "high: 1.0e31"))
    res = CliRunner().invoke(app, sweep_args(space, "--n-trials", "3", "--study-name", "faults", "--warmup-epochs", "0"))
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="faults", storage=f"sqlite:///{workdir / 'optuna.db'}").trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED", "COMPLETE"]
    assert "out of memory" in trials[0].user_attrs["prune_reason"]
    assert "NaN" in trials[1].user_attrs["prune_reason"]
    _, children = sweep_runs(workdir)
    by_trial = {c.data.tags["optuna.trial"]: c for c in children}
    assert by_trial["0"].info.status == "FAILED" and "OutOfMemoryError" in by_trial["0"].data.tags["error"]
    assert by_trial["1"].info.status == "FAILED" and "NaN" in by_trial["1"].data.tags["error"]
    assert by_trial["2"].info.status == "FINISHED"


def test_multi_objective_gives_a_pareto_front(workdir, tiny_mnist, space):
    res = CliRunner().invoke(app, sweep_args(space, "--n-trials", "3", "--objective", "val_acc,train_images_per_sec"))
    assert res.exit_code == 0, res.output
    assert "cannot prune multi-objective" in res.output and "Pareto front" in res.output
    (parent,), _ = sweep_runs(workdir)
    arts = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/pareto_front.png", "sweep/pareto_front.csv"} <= arts


@pytest.mark.parametrize("content,needle", [
    ("lr: [1, 2", "not valid YAML"),
    ("learning_rate: {type: float, low: 1, high: 2}", "not a searchable option"),
    ("lr: {type: float, low: 0, high: 1, log: true}", "0 < low"),
    ("pool: {type: categorical, choices: []}", "non-empty list"),
])
def test_bad_space_file_is_one_line(workdir, content, needle):
    bad = workdir / "bad.yaml"
    bad.write_text(content)
    res = CliRunner().invoke(app, ["sweep", "--space", str(bad), "--device", "cpu"])
    assert res.exit_code == 2 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output


def test_sqlite_refuses_several_workers(workdir, tiny_mnist, space):
    res = CliRunner().invoke(app, sweep_args(space, "--workers", "2"))
    assert res.exit_code == 2 and "postgresql" in res.stderr and "journal:" in res.stderr


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


def vitbench_storage(url: str):
    from vitbench.sweep import journal_storage

    return journal_storage(url)
