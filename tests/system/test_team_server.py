"""A team's setup end to end: a real PostgreSQL server, a real `mlflow server` on it with proxied artifacts,
and every command pointed at it -- with a password in every URI that must never show."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import mlflow
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, free_port, start_mlflow_server, stop_server

SECRET = "s3cr3t-team-pw"


TINY = ["--depth", "1", "--dim", "32", "--heads", "2", "--mlp-dim", "64", "--device", "cpu", "--quiet"]


def vitbench(cwd, env, *args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "vitbench", *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert SECRET not in out, out
    return out



def test_every_command_against_a_team_server(workdir, tiny_mnist, postgres, tmp_path_factory):
    # trust auth: the password travels in every URI (as a team's would) without being needed to log in
    pg = postgres.replace("vitbench@", f"vitbench:{SECRET}@")
    port = free_port()
    server = start_mlflow_server(f"{pg}/mlflow", workdir / "server-artifacts", port)
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true",
           "VITBENCH_DATA": str(tiny_mnist)}
    try:
        out = vitbench(workdir, env, "run", "--epochs", "1", "--batch-size", "64", *TINY)
        run_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("mlflow run "))
        vitbench(workdir, env, "suite", str(REPO / "experiments" / "quick.yaml"), "--repeats", "1", "--device", "cpu",
                 "--quiet")
        vitbench(workdir, env, "sweep", "--n-trials", "2", "--epochs", "1", "--storage", f"{pg}/optuna", *TINY)
        vitbench(workdir, env, "report", "--experiment", "vitbench-mnist,quick", "--out", str(workdir / "rep"))
        vitbench(workdir, env, "inspect", run_id, "--out", str(workdir / "insp"), "--images", "2")
        fresh = tmp_path_factory.mktemp("fresh")  # another member's empty directory: the checkpoint comes back
        vitbench(fresh, env, "run", "--resume", run_id, "--epochs", "2")
        assert not (fresh / "checkpoints" / run_id / "unsent.jsonl").exists()
        mlflow.set_tracking_uri(uri)
        client = MlflowClient()
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1, 2]
        arts = {a.path for d in ("plots", "checkpoint", "inspect") for a in client.list_artifacts(run_id, d)}
        assert {"checkpoint/last.pt", "plots/learning_curves.png", "inspect/attention_maps.png"} <= arts
        assert list((workdir / "server-artifacts").rglob("last.pt"))  # stored by the server, proxied
        everything = []
        for exp in client.search_experiments():
            for r in client.search_runs([exp.experiment_id]):
                assert r.info.status == "FINISHED", (r.info.run_name, r.info.status)
                everything += [*r.data.params.values(), *r.data.tags.values()]
        assert len(everything) > 100 and not [v for v in everything if SECRET in v]
        sweep_parent = [v for v in everything if v.startswith("postgresql+psycopg://vitbench:***@")]
        assert sweep_parent, "the sweep's storage is recorded, masked"
        for f in (workdir / "rep").glob("*.md"):
            assert SECRET not in f.read_text()
    finally:
        stop_server(server)
        shutil.rmtree(workdir / "server-artifacts", ignore_errors=True)

