"""The record never lies about a run: secrets masked, an absent server named at once, dead runs ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.conftest import REPO, free_port, start_mlflow_server, stop_server
from tests.helpers import TINY, runs
from vitbench import liveness, tracking
from vitbench.cli import app

SECRET = "s3cr3t-pw"


def vitbench_process(cwd, *args: str) -> subprocess.CompletedProcess:
    """`vitbench ...` as a user runs it (its own process, its own stdout/stderr), output merged."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "vitbench", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)



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
        assert liveness.reap_orphans([mlflow.get_experiment_by_name("vitbench-mnist").experiment_id]) == []
        assert MlflowClient().get_run(rid).info.status == "RUNNING"
    assert MlflowClient().get_run(rid).info.status == "FINISHED"



def test_a_server_lost_mid_run_keeps_the_training_and_sync_sends_it(workdir, tiny_mnist):
    """The server dies after epoch 1 and comes back after the run: every point the run logged (every 4th step's
    live metrics too) reaches it after `sync`, the next command does not take the finished run for a dead one,
    and the password in the tracking URL shows nowhere -- not in MLflow's own "View run" lines either."""
    port = free_port()
    uri = f"http://alice:{SECRET}@127.0.0.1:{port}"
    server = start_mlflow_server(f"sqlite:///{workdir / 'server.db'}", workdir / "artifacts", port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "vitbench", "run", "--epochs", "4", "--batch-size", "16",
                             "--tracking-uri", uri, "--quiet", "--live-every", "4", *TINY], cwd=workdir, env=env,
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
        assert live == list(range(4, 4 * 32 + 1, 4)), live  # every 4th step's point, before and after the loss
        arts = {a.path for d in ("plots", "checkpoint") for a in client.list_artifacts(run_id, d)}
        assert {"checkpoint/last.pt", "checkpoint/last.pt.sha256", "plots/learning_curves.png"} <= arts
        assert not unsent.exists() and unsent.with_name("sent.jsonl").exists()
    finally:
        stop_server(server)
        mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")

