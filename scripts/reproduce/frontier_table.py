"""The tables and plots of results/frontier.md from their stores: python3 frontier_table.py EXPERIMENT PNG URI [URI ...].
Per recipe (or variant, for runs without one; with the options its candidates at one budget change) and budget:
the seeds' median accuracy (test, or held out where the runs held some out) and range, the steps taken and fitted,
the training seconds used, whether the GPU slowed down; the plot shows each seed's run and the medians."""

import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

experiment, png, uris = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = []
for uri in uris:
    mlflow.set_tracking_uri(uri)
    for r in mlflow.search_runs(experiment_names=[experiment], output_format="list"):
        if r.info.status == "FINISHED":
            m = r.data.metrics
            rows.append({"recipe": r.data.tags.get("recipe", r.data.tags.get("variant", "-")),
                         "budget": float(r.data.params["train.time_budget"]), "acc": m["final_val_acc"],
                         "steps": m["steps"], "planned": m.get("budget_planned_steps"), "seconds": m["train_seconds"],
                         "throttled": r.data.tags.get("gpu_throttled", ""),
                         "held_out": float(r.data.params.get("train.val_split", 0)) > 0, "params": r.data.params})
if not rows:
    sys.exit(f"no finished run in the experiment {experiment} of {', '.join(uris)}")
for recipe in {row["recipe"] for row in rows}:  # candidates of one recipe at one budget: told apart by their options
    mine = [row for row in rows if row["recipe"] == recipe]
    keys = {k for row in mine for k in row["params"]} - {"train.seed"}
    varying = sorted({k for k in keys for b in {row["budget"] for row in mine}
                      if len({row["params"].get(k) for row in mine if row["budget"] == b}) > 1})
    for row in mine:
        row["recipe"] = " ".join([recipe, *(f"{k.split('.', 1)[1]}={row['params'].get(k)}" for k in varying)])
scored = "held-out" if all(r["held_out"] for r in rows) else "test" if not any(r["held_out"] for r in rows) else "mixed"
by_budget = defaultdict(list)
for row in rows:
    by_budget[row["recipe"], row["budget"]].append(row)
print(f"| recipe | budget (s) | seeds | {scored} accuracy, median (range) | steps taken / fitted (median) "
      "| training s used (max) | GPU slowed down |")
print("|---|---:|---:|---|---:|---:|---|")
for (recipe, budget), rs in sorted(by_budget.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    acc = [r["acc"] for r in rs]
    planned = [r["planned"] for r in rs if r["planned"]]  # none where the budget ended before the first fit
    slowed = sum(r["throttled"] not in ("", "no") for r in rs)  # "no", or the line saying how
    fitted = f"{statistics.median(planned):,.0f}" if planned else "-"
    print(f"| {recipe} | {budget:g} | {len(rs)} | {statistics.median(acc):.2%} ({min(acc):.2%}-{max(acc):.2%}) | "
          f"{statistics.median(r['steps'] for r in rs):,.0f} / {fitted} | {max(r['seconds'] for r in rs):.2f} | "
          f"{f'{slowed} of {len(rs)}' if slowed else 'no'} |")

df = pd.DataFrame(rows)
sns.set_theme(style="whitegrid", context="notebook")
fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
sns.scatterplot(data=df, x="budget", y="acc", hue="recipe", alpha=0.4, s=25, legend=False, ax=ax)
med = df.groupby(["recipe", "budget"])["acc"].median().reset_index()
sns.lineplot(data=med, x="budget", y="acc", hue="recipe", marker="o", ax=ax)  # the medians; dots: each seed
budgets = sorted(df["budget"].unique())
ax.set(xscale="log", xlabel="time budget, training seconds (log)", ylabel=f"MNIST {scored} accuracy (fraction)",
       title="schedule fitted to --time-budget (dots: seeds, lines: medians)")
ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
ax.minorticks_off()
fig.savefig(png, dpi=120)
