"""The MLflow UI answers "which variant is faster, lighter and as accurate" in a real browser: a store written by
a tiny suite, sweep, bench and report, served by `mlflow server`, opened in headless Chromium (Debian's
chromium; .ci/run installs it). What the page renders is checked, not what the store holds."""

from __future__ import annotations

import shutil
import subprocess

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import free_port, start_mlflow_server, stop_server
from tests.helpers import TINY, invoke

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


SUITE = """name: ui
description: Two attention implementations on tiny MNIST, for the MLflow UI test.
dataset: mnist
repeats: 2
train: {epochs: 1, batch_size: 64}
model: {depth: 1, dim: 32, heads: 2, mlp_dim: 64}
grid: {attention: [sdpa, vectorized]}
"""


SPACE = "lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n"


def text(page: str) -> str:
    """What a reader sees of a page: its text, spaces collapsed."""
    import re

    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def rendered(url: str, until: str = "") -> str:
    """The page's DOM after its scripts ran (the MLflow UI is a single-page app); up to three tries for a page that
    should show ``until`` (charts draw after the runs load, later on a busy machine)."""
    for budget in (20000, 40000, 60000):
        out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                              "--window-size=3200,1200",  # wide: the runs grid renders only the columns in view
                              f"--virtual-time-budget={budget}", url], capture_output=True, text=True, timeout=180)
        if until in out.stdout:
            break
    return out.stdout



@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_mlflow_ui_shows_descriptions_datasets_and_aligned_cells(workdir, tiny_mnist):
    """A suite's shared view groups its runs by cell and opens on charts that answer the question; the report run's
    description is its verdict, rendered on its page."""
    (workdir / "ui.yaml").write_text(SUITE)
    (workdir / "space.yaml").write_text(SPACE)
    data = ["--data-dir", str(tiny_mnist)]
    assert invoke("suite", "ui.yaml", "--device", "cpu", *data).exit_code == 0
    res = invoke("sweep", "--n-trials", "2", "--epochs", "1", "--space", "space.yaml", "--experiment", "ui",
                 "--storage", f"sqlite:///{workdir / 'optuna.db'}", *TINY, *data)
    assert res.exit_code == 0, res.output
    res = invoke("bench", "--variants", "sdpa", "--attention", "sdpa,vectorized", "--batch-sizes", "4",
                 "--warmup", "1", "--repeats", "2", "--device", "cpu", "--depth", "1",
                 "--dim", "32", "--heads", "2", "--mlp-dim", "64")
    assert res.exit_code == 0, res.output
    assert invoke("report", "--experiment", "ui").exit_code == 0

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("ui")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the training runs
    assert exp.tags["mlflow.note.content"].startswith("Two attention implementations")
    runs = {r.info.run_name: r for r in MlflowClient().search_runs([exp.experiment_id])}
    trials = [n for n in runs if n.startswith("trial ")]
    assert len(trials) == 2 and all("lr=" in n for n in trials), list(runs)
    cell = next(r for r in runs.values() if r.data.tags.get("suite.cell") == "attention=vectorized")
    bench_exp = mlflow.get_experiment_by_name("vitbench-bench")
    cells = [r for r in MlflowClient().search_runs([bench_exp.experiment_id]) if r.data.tags["kind"] == "bench-cell"]
    assert {c.data.params["attention"] for c in cells} == {"sdpa", "vectorized"}

    port = free_port()
    server = start_mlflow_server(f"sqlite:///{workdir / 'mlflow.db'}", workdir / "mlruns", port)
    try:
        base = f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}"
        page = rendered(f"{base}/runs")  # nested runs (trials, bench cells) fold under their parents
        for name in (cell.info.run_name, "sweep-", "report"):
            assert name in page, name
        assert "mnist:train" in page  # the Dataset column
        # the comparison's columns, opened from the view vitbench shares on the experiment (`run` prints the link)
        page = rendered(f"{base}/runs?viewStateShareKey=vitbench")
        for column in ("final_val_acc", "train_images_per_sec_mean", "peak_memory_mb", "param_count", "part.attention"):
            assert column in page, column
        assert "Group by: suite.cell" in text(page) and "Group: attention=vectorized 2" in text(page)  # mean of 2
        page = text(rendered(f"{base}/runs?viewStateShareKey=vitbench&compareRunsMode=CHART", until="vs. final_val_acc"))
        assert "faster, lighter, as accurate?" in page and "train_images_per_sec_mean vs. final_val_acc" in page
        report = next(r for r in runs.values() if r.info.run_name == "report")
        verdict = report.data.tags["mlflow.note.content"].split("**Answer:**")[1].split("(")[0].strip()
        assert verdict.replace("**", "") in text(rendered(f"{base}/runs/{report.info.run_id}")), verdict
        page = rendered(f"{base}/runs/{cell.info.run_id}")
        assert "training images/s" in page and "on the test set" in page  # its description, rendered
        assert "mnist:train" in page  # its datasets (the evaluation set behind "+1")
        trial = runs[trials[0]]
        page = rendered(f"{base}/runs/{trial.info.run_id}")
        assert trials[0] in page and "training images/s" in page
        bench = f"http://127.0.0.1:{port}/#/experiments/{bench_exp.experiment_id}"
        page = rendered(f"{bench}/runs?viewStateShareKey=vitbench")  # the bench run, its cells' columns
        assert "bench-2-cells" in page and "train_samples_per_sec" in page and "train_peak_memory_mb" in page
        page = rendered(f"{bench}/runs/{cells[0].info.run_id}")
        assert cells[0].info.run_name in page and "img/s" in page
    finally:
        stop_server(server)

