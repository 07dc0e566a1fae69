"""The table and plot of results/frontier.md from its stores: python3 frontier_table.py PNG URI [URI ...]. Per
budget: the seeds' median test accuracy and range, the steps the schedule was fitted to, the training seconds used,
whether the GPU slowed down; the plot shows each seed's run and the medians against the budget."""

import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

png, uris = sys.argv[1], sys.argv[2:]
rows = []
for uri in uris:
    mlflow.set_tracking_uri(uri)
    for r in mlflow.search_runs(experiment_names=["frontier"], output_format="list"):
        if r.info.status == "FINISHED":
            m = r.data.metrics
            rows.append({"budget": float(r.data.params["train.time_budget"]), "acc": m["final_val_acc"],
                         "steps": m["steps"], "planned": m.get("budget_planned_steps"), "seconds": m["train_seconds"],
                         "throttled": r.data.tags.get("gpu_throttled", "")})
if not rows:
    sys.exit(f"no finished run in the experiment frontier of {', '.join(uris)}")
by_budget = defaultdict(list)
for row in rows:
    by_budget[row["budget"]].append(row)
print("| budget (s) | seeds | test accuracy, median (range) | steps taken / fitted (median) | training s used (max) "
      "| GPU slowed down |")
print("|---:|---:|---|---:|---:|---|")
for budget, rs in sorted(by_budget.items()):
    acc = [r["acc"] for r in rs]
    planned = [r["planned"] for r in rs if r["planned"]]  # none where the budget ended before the first fit
    slowed = sum(r["throttled"] not in ("", "no") for r in rs)  # "no", or the line saying how
    fitted = f"{statistics.median(planned):,.0f}" if planned else "-"
    print(f"| {budget:g} | {len(rs)} | {statistics.median(acc):.2%} ({min(acc):.2%}-{max(acc):.2%}) | "
          f"{statistics.median(r['steps'] for r in rs):,.0f} / {fitted} | {max(r['seconds'] for r in rs):.2f} | "
          f"{f'{slowed} of {len(rs)}' if slowed else 'no'} |")

df = pd.DataFrame(rows)
sns.set_theme(style="whitegrid", context="notebook")
fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
sns.scatterplot(data=df, x="budget", y="acc", color="0.6", s=25, label="each seed", ax=ax)
med = df.groupby("budget")["acc"].median().reset_index()
sns.lineplot(data=med, x="budget", y="acc", marker="o", label="median", ax=ax)
ax.set(xscale="log", xlabel="time budget, training seconds (log)", ylabel="MNIST test accuracy (fraction)",
       title="run --recipe mnist-fast --time-budget T, schedule fitted to T")
fig.savefig(png, dpi=120)
