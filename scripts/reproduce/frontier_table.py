"""The table of results/frontier.md from its store: python3 frontier_table.py URI. Per budget: the seeds' median test
accuracy and range, the steps the schedule was fitted to, the training seconds used."""

import statistics
import sys
from collections import defaultdict

import mlflow

mlflow.set_tracking_uri(sys.argv[1])
by_budget = defaultdict(list)
for r in mlflow.search_runs(experiment_names=["frontier"], output_format="list"):
    if r.info.status == "FINISHED":
        by_budget[float(r.data.params["train.time_budget"])].append(r.data.metrics)
print("| budget (s) | seeds | test accuracy, median (range) | fitted steps (median) | training s used (max) |")
print("|---:|---:|---|---:|---:|")
for budget, ms in sorted(by_budget.items()):
    acc = [m["final_val_acc"] for m in ms]
    print(f"| {budget:g} | {len(ms)} | {statistics.median(acc):.2%} ({min(acc):.2%}-{max(acc):.2%}) | "
          f"{statistics.median(m.get('budget_planned_steps', float('nan')) for m in ms):,.0f} | "
          f"{max(m['train_seconds'] for m in ms):.2f} |")
