"""Suites, reports and inspect on the CPU: the report's numbers must be the runs' numbers."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.conftest import REPO
from vitbench.cells import load_suite
from vitbench.cli import app

QUICK = REPO / "experiments" / "quick.yaml"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name", ["attention", "patchify", "positions", "loaders", "tutorials", "precision", "quick",
                                  "fp8", "fp8_10s", "fp8_strong"])
def test_shipped_suites_load(name):
    suite = load_suite(REPO / "experiments" / f"{name}.yaml")
    assert suite.cells and suite.repeats >= 1


def test_suite_then_report(workdir, tiny_mnist):
    res = invoke("suite", QUICK, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "4 run(s) made" in res.output
    res = invoke("suite", QUICK, "--device", "cpu")  # everything FINISHED: nothing to do
    assert res.exit_code == 0 and "0 run(s) made" in res.output and "skip" in res.output
    res = invoke("report", "--experiment", "quick", "--out", workdir / "rep", "--target", "0.2")
    assert res.exit_code == 0, res.output
    report = (workdir / "rep" / "REPORT.md").read_text()
    pngs = sorted((workdir / "rep").glob("*.png"))
    assert len(pngs) >= 4 and not (workdir / "rep" / "learning_curves.png").exists()  # 2 epochs: two dots, no curve
    for p in pngs:
        assert f"]({p.name})" in report
    assert "## Conditions" in report and "torch" in report
    # on a CPU: the processor where the GPU would be named, and the process's RSS neither compared nor unlabelled
    assert ", none, torch" not in report and "CPU " in report.split("\n")[2] and "excludes none" not in report
    assert "peak memory not compared (on the CPU" in report and "(process RSS, CPU)" in report
    # The table's numbers are the runs' numbers.
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["quick"])
    (report_run,) = runs[runs["tags.kind"] == "report"]["run_id"]  # the report, beside the runs it judges
    arts = {a.path for a in MlflowClient().list_artifacts(report_run)}
    assert {"REPORT.md", "summary.csv"} <= arts and any(a.endswith(".png") for a in arts)
    assert "REPORT.md" in runs.set_index("run_id").loc[report_run, "tags.mlflow.note.content"]
    runs = runs[runs["tags.kind"] == "suite-run"]
    summary = pd.read_csv(workdir / "rep" / "summary.csv", index_col=0)
    for cell, g in runs.groupby("tags.suite.cell"):
        row = summary.loc[cell]
        assert row["n"] == len(g) == 2
        assert row["val_acc_mean"] == pytest.approx(g["metrics.final_val_acc"].mean(), rel=1e-12)
        assert row["val_acc_std"] == pytest.approx(g["metrics.final_val_acc"].std(ddof=1), rel=1e-9, abs=1e-15)
        assert row["infer_img_per_s"] == pytest.approx(g["metrics.infer_images_per_sec"].mean(), rel=1e-12)
        assert row["params"] == g["metrics.param_count"].mean()
        assert f"{row['val_acc_mean']:.4f} ± {row['val_acc_std']:.4f}" in report
        for rid in g["run_id"]:
            assert rid in report
    # Seeds differ between repeats.
    assert sorted(runs["params.train.seed"].unique()) == ["0", "1"]


def test_report_averages_only_repeats_of_one_configuration(workdir, tiny_mnist):
    common = ["run", "--epochs", "1", "--max-steps", "2", "--batch-size", "32", "--depth", "1", "--heads", "2",
              "--mlp-dim", "64", "--device", "cpu", "--experiment", "mixed"]
    for dim, seed in ((32, 0), (32, 1), (16, 0)):
        assert invoke(*common, "--dim", dim, "--seed", seed).exit_code == 0
    res = invoke("report", "--experiment", "mixed", "--out", workdir / "m")
    assert res.exit_code == 0, res.output
    summary = pd.read_csv(workdir / "m" / "summary.csv", index_col=0)
    assert summary.loc["sdpa (dim=32)", "n"] == 2 and summary.loc["sdpa (dim=16)", "n"] == 1, summary


@pytest.mark.e2e
def test_report_with_bench_runs_shows_token_scaling(workdir):
    res = invoke("bench", "--variants", "sdpa", "--image-sizes", "28,56", "--batch-sizes", "2", "--depth", "1",
                 "--dim", "32", "--heads", "2", "--mlp-dim", "64", "--device", "cpu", "--repeats", "2", "--warmup", "1")
    assert res.exit_code == 0, res.output
    res = invoke("report", "--experiment", "vitbench-bench", "--out", workdir / "b")
    assert res.exit_code == 0, res.output
    assert (workdir / "b" / "token_scaling.png").exists()
    assert "## Bench" in (workdir / "b" / "REPORT.md").read_text()


def test_report_errors_are_one_line(workdir, tiny_mnist):
    res = invoke("report", "--experiment", "nothing-here")
    assert res.exit_code == 2 and "no experiment named" in res.stderr
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.create_experiment("empty", artifact_location=(workdir / "mlruns").as_uri())
    res = invoke("report", "--experiment", "empty")
    assert res.exit_code == 2 and "has no runs" in res.stderr
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("empty").experiment_id):
        mlflow.log_metric("something_else", 1.0)
    res = invoke("report", "--experiment", "empty")
    assert res.exit_code == 2 and "none FINISHED with the metrics" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_suite_takes_a_recipe_under_its_own_options(workdir):
    """`recipe:` gives a suite what `run --recipe` gives a run, the suite's options on top; a grid axis or a cell may
    name its own recipe, and `when` may match on it."""
    from dataclasses import replace

    from vitbench.cells import cell_configs
    from vitbench.options import Options, configs
    from vitbench.recipes import recipe_options

    f = workdir / "s.yaml"
    f.write_text("recipe: mnist-10s\ndataset: mnist\ntrain: {epochs: 2}\n"
                 "grid: {recipe: [mnist-10s, mnist-fast], attention: [sdpa]}\n"
                 "cells: [{name: mine, lr: 3.0e-3}]\n"
                 "when: [{match: {recipe: mnist-fast}, set: {batch_size: 128}}]\n")
    suite = load_suite(f)
    got = {c.name: (c.recipe, cell_configs(c, 1)) for c in suite.cells}

    def expected(recipe: str, **own) -> tuple:
        o = recipe_options(recipe).then(Options(dataset="mnist", epochs=2, **own))
        return configs(replace(o, seed=(o.seed or 0) + 1))

    assert got["recipe=mnist-10s,attention=sdpa"] == ("mnist-10s", expected("mnist-10s", attention="sdpa"))
    assert got["recipe=mnist-fast,attention=sdpa"] == ("mnist-fast",
                                                      expected("mnist-fast", attention="sdpa", batch_size=128))
    assert got["mine"] == ("mnist-10s", expected("mnist-10s", lr=3.0e-3))
    cfg, model_cfg = got["mine"][1]
    assert (cfg.epochs, model_cfg.patch_drop, model_cfg.dim, model_cfg.pool) == (2, 0.25, 128, "mean")  # suite, 10s
    shipped = load_suite(REPO / "experiments" / "fp8_10s.yaml")
    assert [cell_configs(c, 0) for c in shipped.cells] == [
        configs(recipe_options("mnist-10s").then(Options(dataset="mnist", variant="sdpa", precision=p)))
        for p in ("bf16", "fp8")]

    f.write_text("recipe: mnist-1s\ngrid: {attention: [sdpa]}\n")
    res = invoke("suite", f)
    assert res.exit_code == 2 and "unknown recipe 'mnist-1s'; valid: mnist-10s, mnist-fast, mnist-strong" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_suites_recipe_is_tagged_on_its_runs(workdir, tiny_mnist):
    f = workdir / "r.yaml"
    f.write_text("name: rec\nrecipe: mnist-fast\ndataset: mnist\n"
                 "train: {epochs: 1, max_steps: 2, batch_size: 32, compile: false, precision: fp32}\n"
                 "model: {depth: 1, dim: 32, heads: 2, mlp_dim: 64, attention: sdpa}\ngrid: {pool: [cls]}\n")
    res = invoke("suite", f, "--device", "cpu", "--data-dir", tiny_mnist)
    assert res.exit_code == 0, res.output
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = MlflowClient().search_runs([mlflow.get_experiment_by_name("rec").experiment_id])
    assert run.data.tags["recipe"] == "mnist-fast" and run.data.params["train.lr"] == "0.01"  # the recipe's lr
    assert run.data.params["train.warmup_epochs"] == "0.5" and run.data.params["train.batch_size"] == "32"


def test_bad_suite_file(workdir):
    bad = workdir / "bad.yaml"
    bad.write_text("grid: {attention: [sdpa, flash9]}\n")
    res = invoke("suite", bad)
    assert res.exit_code == 2 and "valid: naive, vectorized" in res.stderr
    bad.write_text("grid: {learning_rate: [1]}\n")
    assert "'learning_rate' is not an option" in invoke("suite", bad).stderr


def test_inspect_writes_attention_maps(workdir, tiny_mnist):
    res = invoke("run", "--variant", "simple-vit", "--epochs", "1", "--depth", "2", "--dim", "32", "--heads", "2",
                 "--mlp-dim", "64", "--device", "cpu")
    assert res.exit_code == 0, res.output
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = MlflowClient().search_runs([mlflow.get_experiment_by_name("vitbench-mnist").experiment_id])
    res = invoke("inspect", run.info.run_id, "--out", workdir / "insp", "--images", "3")
    assert res.exit_code == 0, res.output
    for f in ("attention_maps.png", "predictions.png", "confusion_matrix.png"):
        assert (workdir / "insp" / f).stat().st_size > 1000
    arts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "inspect")}
    assert "inspect/attention_maps.png" in arts
    from vitbench.inspect_run import load_run

    assert load_run(run.info.run_id, None, "checkpoints", None)[3] == ""  # trained all its epochs
    res = invoke("run", "--variant", "simple-vit", "--epochs", "1", "--max-steps", "3", "--depth", "1", "--dim", "32",
                 "--heads", "2", "--mlp-dim", "64", "--device", "cpu", "--run-name", "short")
    assert res.exit_code == 0, res.output
    (short,) = [r for r in MlflowClient().search_runs([run.info.experiment_id]) if r.info.run_name == "short"]
    note = load_run(short.info.run_id, None, "checkpoints", None)[3]  # in every plot's title
    assert note == " -- stopped by max_steps after 3 steps: not a trained model"


def test_rollout_rows_are_distributions():
    import torch

    from vitbench import create_model
    from vitbench.inspect_run import attention_maps, rollout

    for variant in ("sdpa", "naive-msa"):
        model = create_model(variant, depth=2)
        maps = attention_maps(model, torch.randn(2, 1, 28, 28))
        assert len(maps) == 2 and maps[0].shape == (2, 4, 17, 17)
        r = rollout(maps)
        torch.testing.assert_close(r.sum(-1), torch.ones(2, 17))
    # every attention implementation sees the same maps
    a, b = (create_model("sdpa", attention=i, depth=1) for i in ("sdpa", "naive"))
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 28, 28)
    torch.testing.assert_close(attention_maps(a, x)[0], attention_maps(b, x)[0])


def test_a_cell_of_one_run_shows_no_spread():
    from vitbench.report import _fmt_table

    table = pd.DataFrame({"n": [1, 3], "val_acc_mean": [0.9, 0.95], "val_acc_std": [0.0, 0.01],
                          "train_img_per_s": [100.0, 200.0], "train_img_per_s_std": [0.0, 5.0],
                          "infer_img_per_s": [1.0, 1.0], "peak_memory_mb": [10.0, 10.0], "memory_source": ["", ""],
                          "params": [1, 1], "train_seconds": [1.0, 1.0], "time_to_target_s": [1.0, 1.0]},
                         index=["one", "three"])
    text = _fmt_table(table, bounded=False)
    assert "0.9000 (n = 1)" in text and "± 0.0000" not in text and "0.9500 ± 0.0100" in text
