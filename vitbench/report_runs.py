"""A report's numbers where people compare runs: one summary run per compared cell, nested under the experiment's
'report' run, its metrics the cell's mean, 95 % interval and number of repeats of each headline metric, so that the
MLflow runs table and its charts show the intervals that REPORT.md states."""

from __future__ import annotations

import time

import pandas as pd

from vitbench.stats import mean_interval

HEADLINE = {"final_val_acc": "acc", "train_images_per_sec_mean": "thr", "peak_memory_mb": "mem"}  # metric: column


def cell_metrics(g: pd.DataFrame) -> dict[str, float]:
    """``<metric>_mean``, ``_ci_low``, ``_ci_high`` of each headline metric over a cell's runs, and ``n``."""
    out: dict[str, float] = {"n": float(len(g))}
    for name, col in HEADLINE.items():
        mean, low, high = mean_interval([float(v) for v in g[col].dropna()])
        out |= {f"{name}_mean": mean, f"{name}_ci_low": low, f"{name}_ci_high": high}
    return {k: v for k, v in out.items() if v == v}


def log_cell_summaries(report_run_id: str, experiment_id: str, t: pd.DataFrame) -> list[str]:
    """The summary runs of the cells of ``t`` (the experiment's training runs) under the report run, in place of the
    previous report's; their ids."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for old in client.search_runs([experiment_id], "tags.kind = 'report-cell'", max_results=5000):
        if old.data.tags.get("mlflow.parentRunId") == report_run_id:
            client.delete_run(old.info.run_id)
    made, now = [], int(time.time() * 1000)
    for label, g in t.groupby("label", sort=False):
        rid = client.create_run(experiment_id, run_name=f"cell: {label}"[:250], tags={
            "mlflow.parentRunId": report_run_id, "kind": "report-cell"}).info.run_id
        client.log_batch(rid, metrics=[Metric(k, v, now, 0) for k, v in cell_metrics(g).items()],
                         tags=[RunTag("report.cell", str(label)[:5000])])
        client.set_terminated(rid, "FINISHED")
        made.append(rid)
    return made
