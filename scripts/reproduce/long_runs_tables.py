"""The tables of results/long_runs.md from its store (scripts/reproduce/long_runs.sh calls this):
    python3 scripts/reproduce/long_runs_tables.py runs URI EXPERIMENT   # status, metrics and tags of each run
    python3 scripts/reproduce/long_runs_tables.py live URI              # throughput with and without live metrics
"""

import statistics
import sys

import mlflow


def runs(experiment: str) -> None:
    for r in mlflow.search_runs(experiment_names=[experiment], output_format="list", order_by=["start_time"]):
        keep = ("train_seconds", "steps", "images_seen", "train_images_per_sec_mean", "final_val_acc", "final_val_images")
        m = {k: round(v, 4) for k, v in r.data.metrics.items() if k in keep}
        live = sorted(k for k in r.data.metrics if k.startswith("live/"))
        t = {k: r.data.tags.get(k) for k in ("stopped_by", "final_eval")}
        print(r.info.run_name, r.info.status, m, t, "live metrics:", live)


def live() -> None:
    print("| configuration | live metrics | train images/s (mean over the run), per seed | median | live points |")
    print("|---|---|---|---:|---:|")
    for exp in ("live-sdpa-off", "live-sdpa-10s", "live-sdpa-100", "live-fast-off", "live-fast-50"):
        found = mlflow.search_runs(experiment_names=[exp], output_format="list", order_by=["start_time"])
        rates = [r.data.metrics["train_images_per_sec_mean"] for r in found]
        client = mlflow.tracking.MlflowClient()
        points = [len(client.get_metric_history(r.info.run_id, "live/train_loss")) for r in found]
        cfg, every = exp.split("-", 1)[1].rsplit("-", 1)
        print(f"| {'sdpa default' if cfg == 'sdpa' else 'recipe mnist-fast'} | {every} | "
              f"{', '.join(f'{x:,.0f}' for x in rates)} | {statistics.median(rates):,.0f} | {points} |")


if __name__ == "__main__":
    mlflow.set_tracking_uri(sys.argv[2])
    runs(sys.argv[3]) if sys.argv[1] == "runs" else live()
