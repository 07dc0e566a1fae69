"""`vitbench suite --gpus N`: one worker process per GPU, here N CPU processes, claiming runs from the suite's
queue; two "hosts" (process groups with different host names) sharing one suite through PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
from mlflow.tracking import MlflowClient

from tests.conftest import REPO

SUITE = """
name: parallel
dataset: mnist
repeats: 1
train: {{epochs: {epochs}, batch_size: 64, device: cpu}}
model: {{depth: 1, dim: 32, heads: 2, mlp_dim: 64}}
grid:
  variant: [sdpa, vectorized-msa, simple-vit]
cells:
  - {{name: diverges, variant: sdpa, lr: 1.0e+30, warmup_epochs: 0}}
"""


def suite(workdir, data, epochs: int, *extra: str) -> subprocess.Popen:
    path = workdir / "parallel.yaml"
    path.write_text(SUITE.format(epochs=epochs))
    env = {**os.environ, "VITBENCH_DATA": str(data), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "vitbench", "suite", str(path), "--gpus", "2", "--device", "cpu",
                             "--progress-interval", "1", *extra], cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def runs(workdir):
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("parallel")
    return MlflowClient().search_runs([exp.experiment_id])


FIRST_RUN = """
import sys
from vitbench.runner import preload
preload()
before = set(sys.modules)
from vitbench.cells import Cell, Suite, run_cell
from vitbench.progress import Display, Every
cell = Cell("sdpa", {"variant": "sdpa", "epochs": 1, "batch_size": 64, "depth": 1, "dim": 32, "heads": 2,
                     "mlp_dim": 64, "device": "cpu", "max_steps": 3})
suite = Suite(name="first", path=None, cells=[cell], repeats=1)
assert run_cell(suite, cell, 0, "cpu", sys.argv[1], None, Display("off", log=print), Every(), print)
print("IMPORTED", " ".join(sorted(set(sys.modules) - before)))
"""



def test_two_workers_share_the_cells_and_a_failure_fails_only_itself(workdir, tiny_mnist):
    proc = suite(workdir, tiny_mnist, 1)
    out = proc.communicate(timeout=400)[0]
    assert proc.returncode == 2, out
    assert "4 runs on 2 worker processes (cpu0, cpu1)" in out and "run 4/4" in out and "ETA" in out
    assert "1 run(s) failed (diverges#0); 3 made" in out and "Traceback" not in out
    done = runs(workdir)
    status = {r.data.tags["suite.cell"]: r.info.status for r in done}
    assert status == {"variant=sdpa": "FINISHED", "variant=vectorized-msa": "FINISHED",
                      "variant=simple-vit": "FINISHED", "diverges": "FAILED"}
    assert {r.data.tags["suite.gpu"] for r in done} == {"cpu0", "cpu1"}  # both workers took runs
    shared = str(max(1, (os.cpu_count() or 1) // 2))  # the host's cores shared between the two workers
    assert {r.data.tags["torch_threads"] for r in done} == {shared}
    proc = suite(workdir, tiny_mnist, 1)  # a re-run retries only what did not finish
    out = proc.communicate(timeout=400)[0]
    assert out.count("already FINISHED") == 3 and "worker processes" not in out and "1 run(s) failed" in out



def test_ctrl_c_ends_every_worker_s_run_killed(workdir, tiny_mnist):
    proc = suite(workdir, tiny_mnist, 1000, "--cells", "variant=sdpa,variant=simple-vit")
    deadline, seen = time.time() + 240, ""
    while time.time() < deadline and seen.count("img/s ->") < 2:  # both runs past their first steps
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out = seen + proc.communicate(timeout=240)[0]
    assert proc.returncode == 130, out
    assert "interrupted: 2 run(s) in progress ended KILLED" in out and "Traceback" not in out
    killed = runs(workdir)
    assert [r.info.status for r in killed] == ["KILLED", "KILLED"]
    for r in killed:
        assert (workdir / "checkpoints" / r.info.run_id / "last.pt").exists()



def test_runs_are_failed_not_lost_when_every_worker_dies(workdir, tiny_mnist):
    import pytest

    from vitbench.cells import load_suite
    from vitbench.errors import VitbenchError
    from vitbench.progress import Display
    from vitbench.suite import run_suite

    path = workdir / "parallel.yaml"
    path.write_text(SUITE.format(epochs=1))
    s = load_suite(path)
    path.unlink()  # the workers cannot read the suite: each dies before its first run
    lines: list[str] = []
    with pytest.raises(VitbenchError, match=r"4 run\(s\) failed"):
        run_suite(s, gpus=["cpu0", "cpu1"], device="cpu", data_dir=str(tiny_mnist),
                  display=Display("off", log=lines.append), argv=["suite", str(path), "--device", "cpu"])
    assert sum("not run:" in line for line in lines) == 4



def test_gpus_torch_cannot_use_give_cpu_workers_and_each_says_where_its_time_went(workdir, tiny_mnist):
    """CUDA_VISIBLE_DEVICES names GPUs this torch cannot use: the suite runs on CPU workers, as ``resolve_gpus``
    says. At the end, where the wall time went: the coordinator's, then each worker's from when it was started."""
    import re

    path = workdir / "parallel.yaml"
    path.write_text(SUITE.format(epochs=1))
    env = {**os.environ, "VITBENCH_DATA": str(tiny_mnist), "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "3,5"}
    proc = subprocess.run([sys.executable, "-m", "vitbench", "suite", str(path), "--gpus", "2", "--cells",
                           "variant=sdpa,variant=simple-vit"], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 runs on 2 worker processes (cpu0, cpu1)" in proc.stdout and "Traceback" not in proc.stderr
    done = runs(workdir)
    assert [r.info.status for r in done] == ["FINISHED"] * 2
    assert {r.data.tags["suite.gpu"] for r in done} <= {"cpu0", "cpu1"}
    total = float(re.search(r"^wall ([\d.]+) s since vitbench was imported: imports [\d.]+, store [\d.]+, "
                            r"the workers' runs [\d.]+", proc.stdout, re.M)[1])
    for gpu in ("cpu0", "cpu1"):
        line = re.search(rf"^\[{gpu}\] wall ([\d.]+) s since the coordinator started it: (.*)$", proc.stdout, re.M)
        assert line, proc.stdout
        phases = dict(re.findall(r"([a-z][a-z ,/-]*?) ([\d.]+)(?:, |$)", line[2]))
        assert {"process start", "imports", "other"} <= phases.keys(), line[0]  # other >= 0: no phase counted twice
        assert 0 < float(phases["process start"]) < float(line[1]) <= total  # started after the coordinator
    trained = [ln for ln in proc.stdout.splitlines() if ln.startswith("[cpu") and " wall " in ln and "training" in ln]
    assert trained  # the worker that ran a run says how long it trained



def test_a_worker_imports_before_its_first_run_what_that_run_would(workdir, tiny_mnist):
    """``preload`` (a worker's start, while the coordinator opens the store) imports what a process's first run
    imported on first use, seconds of it on the GPU host (results/scaling.md): MLflow's database store, the
    notebook MLflow looks for, torch's compiler. A run after it imports none of them."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", FIRST_RUN, str(tiny_mnist)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    imported = proc.stdout.split("IMPORTED", 1)[1].split()
    heavy = ("torch._dynamo", "torch._inductor", "IPython", "mlflow.store.tracking.sqlalchemy_store")
    assert not [m for m in imported if m.startswith(heavy)], imported



HOSTS = """
name: hosts
dataset: mnist
repeats: 1
train: {epochs: 1000, time_budget: 4, batch_size: 64, device: cpu}
model: {depth: 1, dim: 32, heads: 2, mlp_dim: 64}
grid:
  lr: [1.0e-3, 2.0e-3, 3.0e-3, 4.0e-3]
"""


def test_two_hosts_share_a_suite_and_one_killed_midway_loses_no_run(workdir, tiny_mnist, postgres):
    """Two "hosts" (process groups with other host names) run the same `suite` command on one PostgreSQL: each
    claims runs from the queue; host b SIGKILLed midway (coordinator and workers) leaves runs RUNNING, which go
    back to the queue when its heartbeats stop; host a, started meanwhile, runs them, and every cell ends with
    exactly one FINISHED run, which host a's report covers."""
    import psutil

    (workdir / "hosts.yaml").write_text(HOSTS)
    storage, tracking = f"{postgres}/optuna", f"{postgres}/mlflow"

    def host(name: str) -> subprocess.Popen:
        env = {**os.environ, "VITBENCH_DATA": str(tiny_mnist), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
               "VITBENCH_HOST": name}
        return subprocess.Popen([sys.executable, "-m", "vitbench", "suite", "hosts.yaml", "--gpus", "2", "--device",
                                 "cpu", "--storage", storage, "--tracking-uri", tracking, "--heartbeat", "2"],
                                cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    b = host("host-b")  # b first: it takes runs before a starts, and dies while it trains one
    b_seen, deadline = "", time.time() + 180
    while time.time() < deadline and "repeat 0 (seed" not in b_seen:  # one of b's runs has begun
        b_seen += b.stdout.readline()
    assert "repeat 0 (seed" in b_seen, b_seen
    a = host("host-a")
    mlflow.set_tracking_uri(tracking)
    while time.time() < deadline and not mlflow.search_runs(  # b's run is under way (its training 4 s)
            filter_string="tags.`vitbench.host` = 'host-b' and attributes.status = 'RUNNING'",
            search_all_experiments=True, output_format="list"):
        time.sleep(0.2)
    for p in [*psutil.Process(b.pid).children(recursive=True), psutil.Process(b.pid)]:
        p.kill()  # the whole host at once
    b.wait()
    out = a.communicate(timeout=400)[0]
    assert a.returncode == 0, out
    exp = mlflow.get_experiment_by_name("hosts")
    done = MlflowClient().search_runs([exp.experiment_id])
    finished = [r.data.tags["suite.cell"] for r in done if r.info.status == "FINISHED"]
    assert sorted(finished) == sorted(f"lr={lr}" for lr in ("0.001", "0.002", "0.003", "0.004"))
    killed = [(r.data.tags.get("vitbench.host"), r.info.status, r.data.tags.get("suite.cell"),
               r.data.tags.get("optuna.trial"), r.data.tags.get("error")) for r in done if r.info.status != "FINISHED"]
    assert killed and {h for h, *_ in killed} == {"host-b"}, (killed, out[-3000:])
    assert {s for _, s, *_ in killed} == {"FAILED"}, killed  # ended by host a as its worker's heartbeat stopped
    from vitbench.report import build_report

    build_report("hosts", workdir / "report", None, tracking, 0.98, log=lambda s: None)
    report = (workdir / "report" / "REPORT.md").read_text()
    assert all(cell in report for cell in finished), report
