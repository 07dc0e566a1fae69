"""Where a suite's time went, per store: python3 scaling_cells.py URI [URI ...]. For each store: the runs on each
worker (tag suite.gpu, else the host), the first run's start and the last run's end (seconds from the experiment's
creation), and per run the time outside training in a kept worker: the run's own wall time less its training and
warm-up seconds, plus the gap before the worker's next run."""

import statistics
import sys
from collections import defaultdict

import mlflow
from mlflow.tracking import MlflowClient

for uri in sys.argv[1:]:
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name("attention")
    runs = [r for r in MlflowClient().search_runs([exp.experiment_id]) if r.data.tags.get("kind") == "suite-run"]
    t0 = exp.creation_time / 1000
    by_worker = defaultdict(list)
    for r in runs:
        by_worker[(r.data.tags.get("vitbench.host", ""), r.data.tags.get("suite.gpu", "-"))].append(r)
    outside = []
    for worker, rs in sorted(by_worker.items()):
        rs.sort(key=lambda r: r.info.start_time)
        for a, b in zip(rs, rs[1:] + [None], strict=True):
            own = (a.info.end_time - a.info.start_time) / 1000 - a.data.metrics["train_seconds"] \
                - a.data.metrics.get("warmup_seconds", 0.0)
            gap = (b.info.start_time - a.info.end_time) / 1000 if b else 0.0
            outside.append(own + gap)
        print(f"{uri} {worker}: {len(rs)} runs, {rs[0].info.start_time / 1000 - t0:.1f} -> "
              f"{rs[-1].info.end_time / 1000 - t0:.1f} s")
    print(f"{uri}: {len(runs)} runs; outside training per run in a kept worker: median "
          f"{statistics.median(outside):.2f} s, max {max(outside):.2f} s (first runs of a worker included)")
