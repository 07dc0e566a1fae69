from __future__ import annotations

import csv
import math

import mlflow
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.helpers import BENCH_TINY
from vitbench.cli import app

TIMM_KEYS = ["model", "param_count", "train_samples_per_sec", "train_step_time", "train_batch_size",
             "infer_samples_per_sec", "infer_step_time", "infer_batch_size"]


OURS = ["train_step_time_p10", "train_step_time_p90", "train_peak_memory_mb", "infer_peak_memory_mb",
        "train_tflops", "infer_tflops", "gflops_per_image_fwd", "train_requested_batch_size", "tokens"]



def test_bench_csv_and_mlflow_run(workdir):
    out = workdir / "bench.csv"
    res = CliRunner().invoke(app, ["bench", "--variants", "sdpa,vectorized-msa", "--batch-sizes", "2,4",
                                   "--out", str(out), *BENCH_TINY])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and {r["model"] for r in rows} == {"sdpa", "vectorized-msa"}
    for r in rows:
        for k in TIMM_KEYS + OURS:
            assert k in r, k
        for k in ("train_samples_per_sec", "train_step_time", "train_step_time_p10", "train_step_time_p90",
                  "infer_samples_per_sec", "train_peak_memory_mb", "train_tflops", "gflops_per_image_fwd",
                  "param_count"):
            v = float(r[k])
            assert v > 0 and math.isfinite(v), (k, v)
        assert float(r["train_step_time_p10"]) <= float(r["train_step_time"]) <= float(r["train_step_time_p90"])
        assert r["train_error"] == "" and r["train_batch_size"] == r["train_requested_batch_size"]
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    found = MlflowClient().search_runs([mlflow.get_experiment_by_name("vitbench-bench").experiment_id])
    (run,) = [r for r in found if r.data.tags["kind"] == "bench"]
    assert run.info.status == "FINISHED" and "4 cells" in run.data.tags["mlflow.note.content"]
    arts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    assert {"bench.csv", "bench.json", "bench_table.json"} <= arts
    # one nested run per cell, its figures under the same names in every cell: the compare view lines them up
    cells = [r for r in found if r.data.tags["kind"] == "bench-cell"]
    assert len(cells) == 4 and {c.data.tags["mlflow.parentRunId"] for c in cells} == {run.info.run_id}
    assert {(c.data.params["model"], c.data.params["batch_size"]) for c in cells} == \
        {(m, b) for m in ("sdpa", "vectorized-msa") for b in ("2", "4")}
    for c in cells:
        assert c.info.status == "FINISHED" and c.data.metrics["train_samples_per_sec"] > 0
        assert {"train_step_time", "train_peak_memory_mb", "infer_samples_per_sec", "param_count"} <= set(c.data.metrics)
        assert "img/s" in c.data.tags["mlflow.note.content"]



def test_one_invocation_covers_several_presets_compiled(workdir):
    out = workdir / "bench.csv"
    res = CliRunner().invoke(app, ["bench", "--variants", "sdpa", "--preset", "mnist,cifar10", "--compile",
                                   "--mode", "train", "--batch-sizes", "2", "--out", str(out), *BENCH_TINY])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert [(r["img_size"], r["tokens"], r["train_compiled"]) for r in rows] == [("28", "17", "True"), ("32", "65", "True")]
    assert all(float(r["train_samples_per_sec"]) > 0 and r["train_error"] == "" for r in rows)
    assert "compile)" in res.output  # the table's title says so

