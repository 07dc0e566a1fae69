from __future__ import annotations

import csv

import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import BENCH_TINY
from vitbench.cli import app


def test_mfu_is_achieved_over_the_device_peak_and_blank_where_unknown(workdir):

    from vitbench.bench import mfu
    from vitbench.gpus import peak_tflops

    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4 and peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") == 19.5 and peak_tflops("NVIDIA H200", "bf16") == 989.4
    assert peak_tflops("Some Future GPU", "bf16") is None
    assert mfu(100.0, torch.device("cpu"), "bf16") != mfu(100.0, torch.device("cpu"), "bf16")  # NaN on a CPU
    out = workdir / "b.csv"
    res = CliRunner().invoke(app, ["bench", "--variants", "sdpa", "--batch-sizes", "2", "--out", str(out), *BENCH_TINY])
    assert res.exit_code == 0, res.output
    (row,) = list(csv.DictReader(out.open()))
    assert row["train_mfu"] == "" and float(row["train_tflops"]) > 0  # blank, not 'nan', for a CPU



def test_timm_names_carry_timm_meanings(workdir):
    """A CSV that merges with timm's benchmark.py results: param_count in millions, *_img_size, samples/s over the
    total time of the timed steps; the median step beside it under names of our own."""
    out = workdir / "b.csv"
    res = CliRunner().invoke(app, ["bench", "--variants", "sdpa", "--batch-sizes", "4", "--out", str(out), *BENCH_TINY])
    assert res.exit_code == 0, res.output
    (row,) = list(csv.DictReader(out.open()))
    assert float(row["param_count"]) == round(int(row["param_count_exact"]) / 1e6, 2)
    assert row["train_img_size"] == row["infer_img_size"] == "28"
    for mode in ("train", "infer"):
        assert float(row[f"{mode}_samples_per_sec"]) == pytest.approx(4 * 1000 / float(row[f"{mode}_step_time"]))
        assert float(row[f"{mode}_samples_per_sec_median"]) == pytest.approx(
            4 * 1000 / float(row[f"{mode}_step_time_median"]))



def test_any_timm_model_is_a_peer(workdir):
    """--peers timm:NAME builds that model with timm.create_model at the preset's shape; a wrong name is one line."""
    import timm

    out = workdir / "b.csv"
    res = CliRunner().invoke(app, ["bench", "--variants", "sdpa", "--peers", "timm:resnet18", "--batch-sizes", "2",
                                   "--mode", "train", "--out", str(out), *BENCH_TINY])
    assert res.exit_code == 0, res.output
    rows = {r["model"]: r for r in csv.DictReader(out.open())}
    expected = sum(p.numel() for p in timm.create_model("resnet18", num_classes=10, in_chans=1).parameters())
    assert int(rows["timm:resnet18"]["param_count_exact"]) == expected
    assert float(rows["timm:resnet18"]["train_samples_per_sec"]) > 0
    res = CliRunner().invoke(app, ["bench", "--variants", "sdpa", "--peers", "timm:resnet_nope", *BENCH_TINY])
    assert res.exit_code == 2 and "timm has no model 'resnet_nope'" in res.stderr, res.output



def test_detail_times_forward_backward_and_update_apart(workdir):
    """timm's --detail columns, in timm's meaning (mean ms) with medians beside; fp16 autocast runs on the CPU too."""
    out = workdir / "detail.csv"
    res = CliRunner().invoke(app, ["bench", "--variants", "sdpa", "--batch-sizes", "4", "--mode", "train", "--detail",
                                   "--precision", "fp16", "--out", str(out), *BENCH_TINY])
    assert res.exit_code == 0, res.output
    (row,) = list(csv.DictReader(out.open()))
    phases = [float(row[f"train_{p}_time"]) for p in ("fwd", "bwd", "opt")]
    assert all(t > 0 for t in phases) and all(float(row[f"train_{p}_time_median"]) > 0 for p in ("fwd", "bwd", "opt"))
    assert row["precision"] == "fp16" and "fwd/bwd/opt ms" in res.output
    plain = workdir / "plain.csv"
    assert CliRunner().invoke(app, ["bench", "--variants", "sdpa", "--batch-sizes", "4", "--mode", "train",
                                    "--out", str(plain), *BENCH_TINY]).exit_code == 0
    assert "train_fwd_time" not in next(csv.DictReader(plain.open()))  # only when asked



def test_a_profiled_cell_keeps_its_trace_and_breakdown_in_its_mlflow_run(workdir):
    """`bench --profile 2`: each cell's nested run holds profile/<mode>/trace.json and breakdown.csv, and the step's
    ms by kind of kernel as metrics beside its timings; `report` on the bench alone says where each cell's step goes."""
    import mlflow
    from mlflow.tracking import MlflowClient

    res = CliRunner().invoke(app, ["bench", "--variants", "sdpa", "--attention", "sdpa,vectorized", "--batch-sizes", "2",
                                   "--mode", "train", "--profile", "2", *BENCH_TINY])
    assert res.exit_code == 0, res.output
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    cells = mlflow.search_runs(experiment_names=["vitbench-bench"], filter_string="tags.kind = 'bench-cell'",
                               output_format="list")
    assert len(cells) == 2
    for cell in cells:
        arts = {a.path for a in MlflowClient().list_artifacts(cell.info.run_id, "profile/train")}
        assert arts == {"profile/train/trace.json", "profile/train/breakdown.csv"}
        assert cell.data.metrics["train_prof_matmul_ms"] > 0 and "train_prof_other_ms" in cell.data.metrics
    res = CliRunner().invoke(app, ["report", "--experiment", "vitbench-bench", "--out", str(workdir / "rep")])
    assert res.exit_code == 0, res.output
    text = (workdir / "rep" / "REPORT.md").read_text()
    assert "## Where the step goes (bench cells)" in text and "## Where the step goes (training runs)" not in text
    assert "- sdpa[vectorized" in text and "ms profiled)." in text, text
