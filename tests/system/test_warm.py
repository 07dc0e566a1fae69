"""`vitbench run` in a warm process (vitbench.warm): the same runs as in a process of their own, the caller's
terminal, Ctrl-C and exit code; the protocol's parts (status, stop, idle, busy) in-process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, write_tiny_mnist
from vitbench import warm

TINY = ["--depth", "1", "--dim", "32", "--heads", "2", "--mlp-dim", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def warm_env():
    """The environment of a caller that uses a warm process (on the CPU: VITBENCH_WARM=on), in a socket folder
    of its own; every warm process started under it is stopped at the end."""
    folder = tempfile.mkdtemp(prefix="vw", dir="/tmp")  # a Unix socket's path must stay under 108 bytes
    env = {**os.environ, "VITBENCH_WARM": "on", "VITBENCH_WARM_DIR": folder, "VITBENCH_WARM_IDLE": "300",
           "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    for name in ("MLFLOW_TRACKING_URI", "VITBENCH_DATA"):  # each run's store: mlflow.db in its own folder
        env.pop(name, None)
    yield env
    saved = dict(os.environ)
    os.environ["VITBENCH_WARM_DIR"] = folder
    try:
        for p in warm.status(stop=True):
            deadline = time.time() + 30
            while time.time() < deadline and Path(f"/proc/{p['pid']}").exists():
                time.sleep(0.1)
            if Path(f"/proc/{p['pid']}").exists():
                os.kill(p["pid"], signal.SIGKILL)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def vitbench(env: dict, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vitbench", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def only_run(folder: Path):
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "vitbench-mnist"]
    (run,) = client.search_runs([exp.experiment_id])
    return client, run


def wait_for_training(proc: subprocess.Popen) -> list[str]:
    lines: list[str] = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("epoch 1:"):
            return lines
    proc.kill()
    pytest.fail("the run never started: " + "".join(lines))


def status_in(env: dict, stop: bool = False) -> list[dict]:
    saved = os.environ.get("VITBENCH_WARM_DIR")
    os.environ["VITBENCH_WARM_DIR"] = env["VITBENCH_WARM_DIR"]
    try:
        return warm.status(stop=stop)
    finally:
        if saved is None:
            os.environ.pop("VITBENCH_WARM_DIR")
        else:
            os.environ["VITBENCH_WARM_DIR"] = saved


SUITE = """
name: kept
dataset: mnist
repeats: 1
train: {{epochs: {epochs}, batch_size: 16, device: cpu}}
model: {{depth: 1, dim: 32, heads: 2, mlp_dim: 64}}
grid:
  variant: [sdpa, vectorized-msa]
"""


def suite_runs(folder: Path) -> list:
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "kept"]
    return sorted(client.search_runs([exp.experiment_id]), key=lambda r: r.data.tags["suite.cell"])


def worker_pids(runs) -> set[int]:
    return {int(re.search(r"pid (\d+)", r.data.tags["process"])[1]) for r in runs}



def test_runs_in_the_warm_process_as_in_a_process_of_their_own(warm_env, tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    command = ["run", "--epochs", "2", "--batch-size", "32", "--data-dir", str(data), *TINY]
    folders = {name: tmp_path / name for name in ("first", "second")}
    for f in folders.values():
        f.mkdir()
    # no warm process yet: the first command runs in its own process and starts one alongside
    first = vitbench(warm_env, folders["first"], *command)
    assert "vitbench: starting a warm process (pid" in first.stderr, first.stderr
    ready = vitbench(warm_env, tmp_path, "warm", "--start")
    assert ready.returncode == 0 and ready.stdout.startswith("pid "), ready.stdout + ready.stderr
    pid = int(ready.stdout.split()[1].rstrip(":"))
    # before its first command it rehearsed a tiny run into a throwaway store: store set-up, kernels, plots
    assert "rehearsal run: exit code 0" in Path(ready.stdout.split("log ")[1].strip()).read_text()
    second = vitbench(warm_env, folders["second"], *command)
    for res in (first, second):
        assert res.returncode == 0, res.stdout + res.stderr
        assert "done: sdpa on mnist" in res.stdout and "Traceback" not in res.stderr
    assert "since vitbench was imported" in first.stdout
    # the warm process's output reached the caller's own stdout, and its run the caller's working directory
    assert "since the warm process took the command" in second.stdout and "warm process" not in second.stderr

    (own_client, own), (client, served) = only_run(folders["first"]), only_run(folders["second"])
    assert own.data.tags["process"].startswith("own (pid ") and str(pid) not in own.data.tags["process"]
    tag = re.fullmatch(r"warm \(pid (\d+), command (\d+)\)", served.data.tags["process"])
    assert tag and int(tag[1]) == pid, served.data.tags["process"]
    # same seed, same data, same hyperparameters: the same numbers, in whichever process
    assert served.info.status == "FINISHED"
    assert served.data.metrics["final_val_acc"] == own.data.metrics["final_val_acc"]
    for metric in ("train_loss", "val_loss"):
        ours = [m.value for m in client.get_metric_history(served.info.run_id, metric)]
        theirs = [m.value for m in own_client.get_metric_history(own.info.run_id, metric)]
        assert len(ours) == 2 and ours == pytest.approx(theirs, rel=1e-6), metric

    # bad input: the one-line error and exit code of a process of its own, nothing recorded
    bad = vitbench(warm_env, folders["second"], "run", "--variant", "nope", *TINY)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error: unknown variant 'nope'") and len(bad.stderr.strip().splitlines()) == 1
    status = vitbench(warm_env, tmp_path, "warm")
    assert f"pid {pid}: idle for" in status.stdout and f"{int(tag[2]) + 1} command(s) served" in status.stdout



def test_ctrl_c_and_a_vanished_caller_end_the_run_killed(warm_env, tmp_path):
    assert vitbench(warm_env, tmp_path, "warm", "--start").returncode == 0
    data = write_tiny_mnist(tmp_path / "data")
    command = [sys.executable, "-m", "vitbench", "run", "--epochs", "1000", "--batch-size", "16", "--data-dir",
               str(data), *TINY]
    for name, how in (("ctrl-c", signal.SIGINT), ("vanished", signal.SIGKILL)):
        folder = tmp_path / name
        folder.mkdir()
        proc = subprocess.Popen(command, cwd=folder, env=warm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        lines = wait_for_training(proc)
        time.sleep(0.5)
        proc.send_signal(how)
        out, _ = proc.communicate(timeout=120)
        client, run = only_run(folder)
        if how == signal.SIGINT:
            assert proc.returncode == 130, "".join(lines) + out
            assert "Traceback" not in out and f"run {run.info.run_id} was ended KILLED" in out
        deadline = time.time() + 60  # a vanished caller: the warm process notices the closed socket
        while time.time() < deadline and run.info.status == "RUNNING":
            time.sleep(0.2)
            run = client.get_run(run.info.run_id)
        assert run.info.status == "KILLED"
        assert (folder / "checkpoints" / run.info.run_id / "last.pt").exists()
        assert run.data.tags["process"].startswith("warm")
    # the warm process took both and goes on serving
    assert any(p["served"] >= 2 for p in status_in(warm_env))



def test_a_bad_vitbench_warm_value_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "VITBENCH_WARM": "sometimes", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "vitbench", "run"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and res.stderr == "error: VITBENCH_WARM must be auto, on or off, got 'sometimes'\n"



def test_a_suite_in_a_warm_process_runs_on_worker_processes_that_end_with_it(warm_env, tmp_path):
    """`suite --gpus 2` in the warm process starts two worker processes with the caller's folder and data, as a
    suite in a process of its own does; they compute the same numbers each time and end with the command; Ctrl-C
    ends their runs KILLED."""
    ready = vitbench(warm_env, tmp_path, "warm", "--start")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    warm_pid = int(ready.stdout.split()[1].rstrip(":"))
    folders = {name: tmp_path / name for name in ("first", "second", "ctrl-c")}
    for name, f in folders.items():
        write_tiny_mnist(f / "data")
        (f / "kept.yaml").write_text(SUITE.format(epochs=1000 if name == "ctrl-c" else 1))
    command = ["suite", "kept.yaml", "--gpus", "2", "--device", "cpu", "--data-dir", "data"]

    first = vitbench(warm_env, folders["first"], *command)
    shutil.rmtree(folders["first"] / "data")  # read from the caller's folder, never from the last one
    second = vitbench(warm_env, folders["second"], *command)
    for res in (first, second):
        assert res.returncode == 0 and "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
        assert "since the warm process took the command" in res.stdout
        assert "2 runs on 2 worker processes (cpu0, cpu1)\n" in res.stdout
        assert re.search(r"^\[cpu0\] wall [\d.]+ s since the coordinator started it: process start", res.stdout, re.M)
    ran, again = suite_runs(folders["first"]), suite_runs(folders["second"])
    assert [r.info.status for r in ran + again] == ["FINISHED"] * 4
    assert all(r.data.tags["process"].startswith("own (pid ") for r in ran + again)
    pids = worker_pids(ran) | worker_pids(again)
    assert warm_pid not in pids and not [p for p in pids if Path(f"/proc/{p}").exists()]  # gone with the command
    for a, b in zip(ran, again, strict=True):  # same seed, same data, same hyperparameters: the same numbers
        assert a.data.tags["suite.cell"] == b.data.tags["suite.cell"]
        assert b.data.metrics["final_val_acc"] == a.data.metrics["final_val_acc"]
        assert b.data.metrics["train_loss"] == pytest.approx(a.data.metrics["train_loss"], rel=1e-6)

    # Ctrl-C at the caller: both runs end KILLED, the workers leave
    proc = subprocess.Popen([sys.executable, "-m", "vitbench", *command], cwd=folders["ctrl-c"], env=warm_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.time() + 120
    while time.time() < deadline and not all(f"[{g}] kept: variant=" in "".join(lines) for g in ("cpu0", "cpu1")):
        lines.append(proc.stdout.readline())  # both runs begun: the store exists (never opened while it is made)
    while time.time() < deadline and [r.info.status for r in suite_runs(folders["ctrl-c"])] != ["RUNNING"] * 2:
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out = "".join(lines) + proc.communicate(timeout=180)[0]
    assert proc.returncode == 130 and "Traceback" not in out, out
    assert "interrupted: 2 run(s) in progress ended KILLED" in out
    assert [r.info.status for r in suite_runs(folders["ctrl-c"])] == ["KILLED"] * 2
    assert not [p for p in worker_pids(suite_runs(folders["ctrl-c"])) if Path(f"/proc/{p}").exists()]


