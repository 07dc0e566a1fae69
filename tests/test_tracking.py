"""The record never lies about a run: secrets masked, an absent server named at once, dead runs ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.conftest import REPO, free_port, start_mlflow_server, stop_server
from tests.helpers import TINY, runs
from vitbench import tracking
from vitbench.cli import app


def test_passwords_are_masked_everywhere_they_could_show(monkeypatch):
    assert tracking.mask_secrets("postgresql+psycopg://ann:s3cr3t@db:5432/optuna and http://bob:pw@h:5000") == \
        "postgresql+psycopg://ann:***@db:5432/optuna and http://bob:***@h:5000"
    assert tracking.mask_secrets("sqlite:///mlflow.db http://host:5000") == "sqlite:///mlflow.db http://host:5000"
    monkeypatch.setattr(sys, "argv", ["vitbench", "sweep", "--storage", "postgresql+psycopg://ann:s3cr3t@db/optuna"])
    assert "s3cr3t" not in tracking.environment_tags()["command"]
    assert tracking.flatten({"storage": "postgresql://ann:s3cr3t@db/x"}) == {"storage": "postgresql://ann:***@db/x"}


def test_a_bad_storage_url_error_hides_its_password(workdir, tiny_mnist):
    res = CliRunner().invoke(app, ["sweep", "--storage", "postgresql+psycopg://ann:s3cr3t@127.0.0.1:1/optuna",
                                   "--workers", "2", "--n-trials", "1", *TINY])
    assert res.exit_code == 2 and "s3cr3t" not in res.output and "ann:***@" in res.stderr, res.output


def test_an_unreachable_server_is_one_line_within_seconds_before_any_data(workdir):
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["run", "--tracking-uri", "http://ann:s3cr3t@127.0.0.1:1", "--data-dir",
                                   str(workdir / "no-data-here"), *TINY])
    assert time.perf_counter() - t0 < 10
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "tracking server http://ann:***@127.0.0.1:1 is not reachable" in err, err
    assert "s3cr3t" not in res.output and "Traceback" not in res.output


def _run_object(host: str, pid: str, beat_ago: float | None, started_ago: float = 3600):
    now = time.time()
    tags = {"vitbench.host": host, "vitbench.pid": pid}
    if beat_ago is not None:
        tags["vitbench.heartbeat"] = f"{now - beat_ago:.0f}"
    return types.SimpleNamespace(data=types.SimpleNamespace(tags=tags),
                                 info=types.SimpleNamespace(start_time=int((now - started_ago) * 1000), run_id="r1"))


def test_orphan_rules():
    import socket

    here = socket.gethostname()
    assert tracking.orphan_reason(_run_object(here, str(os.getpid()), 5, started_ago=0)) is None  # this process
    # the same PID started after the run: another process that reused it
    assert "no longer runs" in tracking.orphan_reason(_run_object(here, str(os.getpid()), 5, started_ago=10 ** 7))
    assert "pid 999999999 on" in tracking.orphan_reason(_run_object(here, "999999999", 5))
    assert tracking.orphan_reason(_run_object("elsewhere", "12", 60)) is None
    stale = tracking.orphan_reason(_run_object("elsewhere", "12", tracking.HEARTBEAT_TIMEOUT + 60))
    assert "no heartbeat from elsewhere since" in stale and "the timeout is 15 min" in stale
    assert tracking.orphan_reason(types.SimpleNamespace(data=types.SimpleNamespace(tags={}), info=None)) is None


def test_a_sigkilled_run_is_ended_failed_by_the_next_command(workdir, tiny_mnist):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "vitbench", "run", "--epochs", "1000", "--batch-size", "16", *TINY],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not proc.stdout.readline().startswith("epoch 1:"):
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    (run,) = runs()
    assert run.info.status == "RUNNING"  # nothing closed it
    assert run.data.tags["vitbench.pid"] == str(proc.pid) and float(run.data.tags["vitbench.heartbeat"]) > 0
    res = CliRunner().invoke(app, ["report", "--experiment", "vitbench-mnist", "--out", str(workdir / "r")])
    assert res.exit_code == 2 and "none FINISHED" in res.stderr  # the only run was the killed one
    dead = MlflowClient().get_run(run.info.run_id)
    assert dead.info.status == "FAILED", dead.info.status
    assert dead.data.tags["error"].startswith(f"process gone: pid {proc.pid} on ") and "last heartbeat" in dead.data.tags["error"]
    # and a run that is alive is left alone: this process's own
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    with tracking.tracked_run(mlflow.get_experiment_by_name("vitbench-mnist").experiment_id, "alive") as rid:
        assert tracking.reap_orphans([mlflow.get_experiment_by_name("vitbench-mnist").experiment_id]) == []
        assert MlflowClient().get_run(rid).info.status == "RUNNING"
    assert MlflowClient().get_run(rid).info.status == "FINISHED"


@pytest.mark.parametrize("args", [["report", "--experiment", "x"], ["bench", "--variants", "sdpa"]])
def test_unreachable_server_for_other_commands(workdir, args):
    res = CliRunner().invoke(app, [*args, "--tracking-uri", "http://127.0.0.1:1"])
    assert res.exit_code == 2 and "is not reachable" in res.stderr, res.output


SECRET = "s3cr3t-pw"


def vitbench_process(cwd, *args: str) -> subprocess.CompletedProcess:
    """`vitbench ...` as a user runs it (its own process, its own stdout/stderr), output merged."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "vitbench", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_server_lost_mid_run_keeps_the_training_and_sync_sends_it(workdir, tiny_mnist):
    """The server dies after epoch 1 and comes back after the run: every point the run logged (each step's
    live metrics too) reaches it after `sync`, the next command does not take the finished run for a dead one,
    and the password in the tracking URL shows nowhere -- not in MLflow's own "View run" lines either."""
    port = free_port()
    uri = f"http://alice:{SECRET}@127.0.0.1:{port}"
    server = start_mlflow_server(f"sqlite:///{workdir / 'server.db'}", workdir / "artifacts", port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "vitbench", "run", "--epochs", "4", "--batch-size", "16",
                             "--tracking-uri", uri, "--quiet", "--live-every", "1", *TINY], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not (lines and lines[-1].startswith("epoch 1:")) and proc.poll() is None:
            lines.append(proc.stdout.readline())
        run_id = next(line.split()[-1] for line in lines if line.startswith("mlflow run "))
        stop_server(server)  # gone in the middle of the run
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        if server.poll() is None:
            stop_server(server)
    out = "".join(lines) + out
    assert proc.returncode == 0, out  # the training went on to the end
    assert "Traceback" not in out and "epoch 4:" in out and "done: sdpa" in out
    assert SECRET not in out and "alice:***@" in out, out
    lost = [line for line in out.splitlines() if " lost (" in line]
    assert len(lost) == 1 and f"vitbench sync {run_id}" in lost[0], out  # said once, with the command
    unsent = workdir / "checkpoints" / run_id / "unsent.jsonl"
    assert unsent.exists() and (workdir / "checkpoints" / run_id / "last.pt").exists()
    server = start_mlflow_server(f"sqlite:///{workdir / 'server.db'}", workdir / "artifacts", port)  # back
    try:
        mlflow.set_tracking_uri(uri)
        client = MlflowClient()
        # the next command opens the experiment: the run's process is gone, but its records wait to be sent
        res = vitbench_process(workdir, "report", "--experiment", "vitbench-mnist", "--tracking-uri", uri,
                               "--out", str(workdir / "r"))
        assert SECRET not in res.stdout + res.stderr
        assert client.get_run(run_id).info.status == "RUNNING" and "error" not in client.get_run(run_id).data.tags
        res = vitbench_process(workdir, "sync", run_id, "--tracking-uri", uri)
        assert res.returncode == 0 and "sent" in res.stdout, res.stdout + res.stderr
        assert SECRET not in res.stdout + res.stderr and "View run" in res.stdout  # MLflow's line, masked
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and "error" not in run.data.tags
        assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1, 2, 3, 4]
        assert run.data.metrics["steps"] == 4 * 32 and "final_eval" in run.data.tags
        live = sorted(m.step for m in client.get_metric_history(run_id, "live/train_loss"))
        assert live == list(range(1, 4 * 32 + 1)), live  # every step's point, before and after the loss
        arts = {a.path for d in ("plots", "checkpoint") for a in client.list_artifacts(run_id, d)}
        assert {"checkpoint/last.pt", "checkpoint/last.pt.sha256", "plots/learning_curves.png"} <= arts
        assert not unsent.exists() and unsent.with_name("sent.jsonl").exists()
    finally:
        stop_server(server)
        mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")


def test_sync_corrects_a_run_the_reaper_ended_while_its_records_waited(workdir, tiny_mnist):
    """Another host's reaper cannot see the outbox: it ends the run FAILED 'process gone'. `sync` then
    leaves the run's true record: FINISHED, without that error."""
    from vitbench.outbox import sync

    res = CliRunner().invoke(app, ["run", "--epochs", "1", "--max-steps", "3", "--quiet", *TINY])
    assert res.exit_code == 0, res.output
    (run,) = runs()
    rid = run.info.run_id
    client = MlflowClient()
    client.set_tag(rid, "error", "process gone: no heartbeat from elsewhere since ...")
    client.set_terminated(rid, "FAILED")
    unsent = workdir / "checkpoints" / rid / "unsent.jsonl"
    unsent.write_text('{"metrics": {"late": 1.0}, "step": 3, "time": 1}\n{"end": "FINISHED", "time": 2}\n')
    assert sync(rid, workdir / "checkpoints", log=lambda s: None) == 2
    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags and run.data.metrics["late"] == 1.0


def test_a_dataset_logged_by_another_process_at_the_same_moment_does_not_fail_the_run(workdir, monkeypatch):
    """A suite's workers start their first runs together and log the same dataset into one experiment: MLflow's SQL
    store looks for it, then inserts it, so one insert broke the unique key and its run FAILED (seen with three
    workers on the CPU). Its error, once, before the real call: the dataset is linked to the run all the same;
    any other error is raised at once."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.exceptions import MlflowException

    from vitbench import mlflow_ui

    real, calls = mlflow.log_inputs, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                  "datasets.name, datasets.digest")
        return real(*args, **kwargs)

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    source = resolve_dataset_source(str(workdir))
    datasets = [MetaDataset(source, name="MNIST:train", digest="abc"), MetaDataset(source, name="MNIST:test",
                                                                                    digest="def")]
    monkeypatch.setattr(mlflow, "log_inputs", racing)
    with mlflow.start_run() as run:
        mlflow_ui.log_inputs(datasets, contexts=["training", "evaluation"])
    logged = MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert len(calls) == 2 and sorted(d.dataset.name for d in logged) == ["MNIST:test", "MNIST:train"]

    def refused(*args, **kwargs):
        calls.append(1)
        raise MlflowException("the store is read-only")

    calls.clear()
    monkeypatch.setattr(mlflow, "log_inputs", refused)
    with mlflow.start_run(), pytest.raises(MlflowException, match="read-only"):
        mlflow_ui.log_inputs(datasets, contexts=["training", "evaluation"])
    assert len(calls) == 1
