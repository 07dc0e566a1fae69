"""Suites, reports and inspect on the CPU: the report's numbers must be the runs' numbers."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.helpers import invoke

QUICK = REPO / "experiments" / "quick.yaml"



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
    # one summary run per cell under the report run: the cell's mean, 95 % interval and n, where people compare
    cells = runs[runs["tags.kind"] == "report-cell"]
    assert len(cells) == 2 and set(cells["tags.mlflow.parentRunId"]) == {report_run}
    trained = runs[runs["tags.kind"] == "suite-run"]
    for _, c in cells.iterrows():
        mine = trained[trained["tags.suite.cell"] == c["tags.report.cell"]]
        assert c["metrics.n"] == len(mine) == 2
        assert c["metrics.final_val_acc_mean"] == pytest.approx(mine["metrics.final_val_acc"].mean(), rel=1e-6)
        assert c["metrics.final_val_acc_ci_low"] <= c["metrics.final_val_acc_mean"] <= c["metrics.final_val_acc_ci_high"]
    assert invoke("report", "--experiment", "quick", "--out", workdir / "rep", "--target", "0.2").exit_code == 0
    again = mlflow.search_runs(experiment_names=["quick"], filter_string="tags.kind = 'report-cell'")
    assert len(again) == 2  # a later report replaces them
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
    assert res.exit_code == 2 and "no tracking store at" in res.stderr and not (workdir / "mlflow.db").exists()
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.create_experiment("empty", artifact_location=(workdir / "mlruns").as_uri())
    res = invoke("report", "--experiment", "nothing-here")
    assert res.exit_code == 2 and "no experiment named" in res.stderr
    res = invoke("report", "--experiment", "empty")
    assert res.exit_code == 2 and "has no runs" in res.stderr
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("empty").experiment_id):
        mlflow.log_metric("something_else", 1.0)
    res = invoke("report", "--experiment", "empty")
    assert res.exit_code == 2 and "none FINISHED with the metrics" in res.stderr
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



def test_set_overrides_every_cell_and_a_rerun_under_other_values_is_not_skipped(workdir, tiny_mnist):
    """`suite FILE --set KEY=VALUE`: over every cell's own options (numbers read as numbers), tagged on the runs; the
    same overrides again skip what FINISHED, others run anew; an unknown option is one line."""
    f = workdir / "s.yaml"
    f.write_text("name: sets\ndataset: mnist\ntrain: {epochs: 1, max_steps: 2, batch_size: 32}\n"
                 "model: {depth: 1, dim: 32, heads: 2, mlp_dim: 64}\ngrid: {attention: [sdpa, vectorized]}\n")
    args = ("suite", f, "--device", "cpu", "--data-dir", tiny_mnist)
    res = invoke(*args, "--set", "max_steps=1", "--set", "lr=1e-3")
    assert res.exit_code == 0 and "2 run(s) made" in res.output, res.output
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name("sets").experiment_id])
    assert {r.data.params["model.attention"] for r in runs} == {"sdpa", "vectorized"}
    assert all(r.data.params["train.max_steps"] == "1" and r.data.params["train.lr"] == "0.001" for r in runs)
    assert all(r.data.tags["suite.set"] == "lr=0.001,max_steps=1" for r in runs)
    assert "0 run(s) made" in invoke(*args, "--set", "max_steps=1", "--set", "lr=1e-3").output
    assert "2 run(s) made" in invoke(*args).output  # the suite's own values: not the runs made under --set
    res = invoke(*args, "--set", "epoch=1")
    assert res.exit_code == 2 and "--set: 'epoch' is not an option" in res.output



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




def test_a_timm_model_trains_by_name_beside_a_vitbench_variant_and_the_report_compares_them(workdir, tiny_mnist):
    """`variant: timm:NAME` in a suite (and `run --variant timm:NAME`): timm's model at the dataset's shape (a ViT
    cut into the preset's patches, or the cell's, not timm's 16 px that 28 px do not hold), trained and recorded as
    vitbench's own are; the report compares them; what cannot apply is one line."""
    pytest.importorskip("timm")
    from tests.helpers import refused

    f = workdir / "t.yaml"
    f.write_text("name: with-timm\ndataset: mnist\ntrain: {epochs: 1, max_steps: 3, batch_size: 32}\ncells:\n"
                 "  - {name: ours, variant: sdpa, depth: 1, dim: 32, heads: 2, mlp_dim: 64}\n"
                 "  - {name: theirs, variant: 'timm:test_resnet'}\n"
                 "  - {name: their-vit, variant: 'timm:test_vit', patch_size: 4}\n")
    res = invoke("suite", f, "--device", "cpu", "--data-dir", tiny_mnist)
    assert res.exit_code == 0 and "3 run(s) made" in res.output, res.output
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    by = {r.data.tags["suite.cell"]: r for r in MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("with-timm").experiment_id])}
    theirs = by["theirs"]
    assert theirs.data.params["train.variant"] == "timm:test_resnet" and "model.attention" not in theirs.data.params
    assert theirs.data.params["model.image_size"] == "28" and theirs.data.metrics["param_count"] == 373_370
    assert "model.patch_size" not in theirs.data.params  # a CNN cuts no patches
    vit = by["their-vit"]
    assert vit.data.params["model.patch_size"] == "4" and "patch 4" in vit.data.tags["mlflow.note.content"]
    assert set(theirs.data.metrics) >= set(by["ours"].data.metrics) - {"final_val_images"}
    res = invoke("report", "--experiment", "with-timm", "--out", workdir / "rep")
    assert res.exit_code == 0, res.output
    report = (workdir / "rep" / "REPORT.md").read_text()
    assert "timm:test_resnet" in report and "sdpa" in report
    refused("run", "--variant", "timm:test_convnext", "--device", "cpu", needle="does not take 28x28x1 images")
    refused("run", "--variant", "timm:test_resnet", "--dim", "32", needle="is a part or size of vitbench's ViT")
    refused("run", "--variant", "timm:test_resnet", "--patch-size", "4", needle="timm:test_resnet cuts no patches")
