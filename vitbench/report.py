"""`vitbench report`: tracked runs -> pandas -> seaborn plots -> REPORT.md, every number from MLflow."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from vitbench.errors import VitbenchError

NEEDED = ("final_val_acc", "train_seconds", "infer_images_per_sec", "peak_memory_mb", "param_count")


def load_runs(experiment: str, filter_string: str | None = None) -> tuple[str, pd.DataFrame]:
    """Runs of one experiment, or of several given comma-separated (labels then carry the suite)."""
    import mlflow

    ids = []
    for name in [e.strip() for e in experiment.split(",") if e.strip()]:
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            raise VitbenchError(f"no experiment named {name!r} in the tracking store")
        ids.append(exp.experiment_id)
    try:
        runs = mlflow.search_runs(ids, filter_string=filter_string or "", max_results=50000)
    except Exception as e:
        raise VitbenchError(f"bad --filter {filter_string!r}: {str(e).splitlines()[0][:200]}") from None
    if runs.empty:
        raise VitbenchError(f"experiment {experiment!r} has no runs{' matching the filter' if filter_string else ''}")
    if len(ids) > 1 and "tags.suite.cell" in runs:
        runs["tags.suite.cell"] = runs["tags.suite"].fillna("") + ": " + runs["tags.suite.cell"].fillna("")
    return ",".join(ids), runs


def of_kind(runs: pd.DataFrame, *kinds: str) -> pd.DataFrame:
    """Runs whose ``kind`` tag is one of ``kinds`` ("" = untagged: a plain `vitbench run`)."""
    kind = runs["tags.kind"].fillna("") if "tags.kind" in runs else pd.Series("", index=runs.index)
    return runs[kind.isin(kinds)]


def label_of(row: pd.Series) -> str:
    v = row.get("tags.suite.cell")
    if isinstance(v, str) and v:
        return v
    v, recipe = row.get("tags.variant"), row.get("tags.recipe")
    if isinstance(v, str) and v:
        return f"{v} [{recipe}]" if isinstance(recipe, str) and recipe else v
    return str(row.get("tags.mlflow.runName", row["run_id"]))


# Options that do not change what is measured: runs differing only in these are repeats of one cell.
NOT_CONFIG = {"seed", "device", "data_dir", "num_workers", "max_steps", "time_budget"}


def config_labels(t: pd.DataFrame) -> pd.Series:
    """``label_of``, plus the options that differ where runs sharing a label were configured differently,
    so that only repeats (other seeds) are averaged together."""
    base = t.apply(label_of, axis=1)
    cols = [c for c in t.columns if c.startswith(("params.train.", "params.model."))
            and c.split(".")[-1] not in NOT_CONFIG]
    labels = base.copy()
    for _, idx in base.groupby(base).groups.items():
        sub = t.loc[idx, cols].astype(str)
        differing = [c for c in cols if sub[c].nunique() > 1]
        if differing:
            extra = [", ".join(f"{c.split('.')[-1]}={r[c]}" for c in differing) for _, r in sub.iterrows()]
            labels[idx] = base[idx] + " (" + pd.Series(extra, index=idx) + ")"
    return labels


def training_runs(runs: pd.DataFrame) -> pd.DataFrame:
    have = [c for c in (f"metrics.{m}" for m in NEEDED) if c in runs]
    if len(have) < len(NEEDED):
        return runs.iloc[0:0]
    t = of_kind(runs[runs["status"] == "FINISHED"].dropna(subset=have), "", "suite-run", "sweep-trial").copy()
    t["label"] = config_labels(t) if len(t) else t.apply(label_of, axis=1)
    t["train_images_per_sec"] = t.get("metrics.train_images_per_sec")
    return t


def histories(run_ids: list[str], labels: dict[str, str]) -> pd.DataFrame:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    rows = []
    for rid in run_ids:
        per_step: dict[int, dict] = {}
        for key in ("val_acc", "train_seconds_cum"):
            for m in client.get_metric_history(rid, key):
                per_step.setdefault(m.step, {})[key] = m.value
        for step, vals in per_step.items():
            rows.append({"run_id": rid, "label": labels[rid], "epoch": step, **vals})
    return pd.DataFrame(rows)


def time_to_target(hist: pd.DataFrame, target: float) -> dict[str, float]:
    """Per run: training seconds until val_acc first reached ``target`` (NaN if never)."""
    out = {}
    for rid, h in hist.groupby("run_id"):
        hit = h.sort_values("epoch")
        hit = hit[hit["val_acc"] >= target]
        out[rid] = float(hit["train_seconds_cum"].iloc[0]) if len(hit) and "train_seconds_cum" in hit else float("nan")
    return out


def summary_table(t: pd.DataFrame, ttt: dict[str, float]) -> pd.DataFrame:
    t = t.assign(time_to_target=t["run_id"].map(ttt))
    g = t.groupby("label", sort=False)
    table = pd.DataFrame({
        "n": g.size(),
        "val_acc_mean": g["metrics.final_val_acc"].mean(),
        "val_acc_std": g["metrics.final_val_acc"].std(ddof=1).fillna(0.0),
        "train_img_per_s": g["train_images_per_sec"].mean(),
        "infer_img_per_s": g["metrics.infer_images_per_sec"].mean(),
        "peak_memory_mb": g["metrics.peak_memory_mb"].mean(),
        "params": g["metrics.param_count"].mean(),
        "train_seconds": g["metrics.train_seconds"].mean(),
        "time_to_target_s": g["time_to_target"].median(),
    })
    return table.sort_values("val_acc_mean", ascending=False)


def pareto(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not beaten on both x and y (higher is better on both)."""
    p = points.sort_values(x, ascending=False)
    best, keep = -float("inf"), []
    for _, r in p.iterrows():
        if r[y] > best:
            keep.append(r)
            best = r[y]
    return pd.DataFrame(keep)


def make_plots(t: pd.DataFrame, table: pd.DataFrame, hist: pd.DataFrame, out: Path, title: str) -> list[Path]:
    from vitbench import plots  # sets the Agg backend and the seaborn theme

    plt, sns = plots.plt, plots.sns
    made = []
    # accuracy vs throughput with the Pareto front
    fig, ax = plt.subplots(figsize=(12, 5.5))
    sns.scatterplot(data=t, x="train_images_per_sec", y="metrics.final_val_acc", hue="label", s=70, ax=ax)
    front = pareto(table.reset_index(), "train_img_per_s", "val_acc_mean")
    ax.plot(front["train_img_per_s"], front["val_acc_mean"], "k--", lw=1, label="Pareto front (means)")
    ax.set(xscale="log", xlabel="training throughput (images/s, log scale)", ylabel="final accuracy (fraction)",
           title=f"{title.replace(',', ' + ')}: accuracy vs throughput")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    made.append(plots.save(fig, out / "accuracy_vs_throughput.png"))
    # throughput and memory bars with error bars (sd over repeats)
    for metric, unit, name in (("train_images_per_sec", "images/s", "train_throughput"),
                               ("metrics.infer_images_per_sec", "images/s", "infer_throughput"),
                               ("metrics.peak_memory_mb", "MiB", "peak_memory")):
        fig, ax = plt.subplots(figsize=(8, 0.6 + 0.45 * t["label"].nunique()))
        sns.barplot(data=t, y="label", x=metric, errorbar="sd", order=list(table.index), ax=ax, color="steelblue")
        ax.set(xlabel=unit + (" (log scale)" if "throughput" in name else ""), ylabel="",
               xscale="log" if "throughput" in name else "linear",
               title=f"{title}: {name.replace('_', ' ')} (mean ± sd over repeats)")
        made.append(plots.save(fig, out / f"{name}.png"))
    # learning curves: against epoch and against training seconds
    if not hist.empty:
        fig, axes = plt.subplots(1, 2, figsize=(14, 6))
        sns.lineplot(data=hist, x="epoch", y="val_acc", hue="label", errorbar="sd", marker="o", ax=axes[0])
        axes[0].legend(fontsize=6, loc="lower right")
        axes[0].set(xlabel="epoch", ylabel="accuracy (fraction)", title="accuracy by epoch (mean ± sd)")
        if "train_seconds_cum" in hist:
            sns.lineplot(data=hist, x="train_seconds_cum", y="val_acc", hue="label", units="run_id",
                         estimator=None, marker="o", ax=axes[1], legend=False)
            axes[1].set(xscale="log", xlabel="training seconds (log scale)", ylabel="accuracy (fraction)",
                        title="accuracy by wall-clock training time")
        fig.suptitle(title)
        made.append(plots.save(fig, out / "learning_curves.png"))
    return made


def bench_plots(runs: pd.DataFrame, out: Path, title: str) -> tuple[list[Path], pd.DataFrame | None]:
    """Token-scaling plots from the CSV of each bench run in the experiment."""
    import mlflow

    from vitbench import plots

    frames = []
    for rid in of_kind(runs, "bench")["run_id"]:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="bench.csv")
        except Exception:
            continue
        df = pd.read_csv(path)
        df["bench_run"] = rid
        frames.append(df)
    if not frames:
        return [], None
    df = pd.concat(frames, ignore_index=True)
    made = []
    if df["tokens"].nunique() > 1 and "train_step_time" in df:
        fig, axes = plots.plt.subplots(1, 2, figsize=(12, 4.5))
        ok = df.dropna(subset=["train_step_time"])
        plots.sns.lineplot(data=ok, x="tokens", y="train_step_time", hue="model", marker="o", ax=axes[0])
        plots.sns.lineplot(data=ok, x="tokens", y="train_peak_memory_mb", hue="model", marker="o", ax=axes[1],
                           legend=False)
        axes[0].set(xscale="log", yscale="log", xlabel="tokens per image", ylabel="train step time (ms, median)",
                    title="time vs tokens")
        axes[1].set(xscale="log", yscale="log", xlabel="tokens per image", ylabel="peak memory (MiB)",
                    title="memory vs tokens")
        fig.suptitle(f"{title}: token scaling")
        made.append(plots.save(fig, out / "token_scaling.png"))
    return made, df


def sweep_artifacts(runs: pd.DataFrame, out: Path) -> list[Path]:
    import mlflow

    made = []
    for rid in of_kind(runs, "sweep")["run_id"]:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = Path(mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="sweep", dst_path=tmp))
            except Exception:
                continue
            for f in sorted(local.glob("*.png")):
                dest = out / f"sweep_{rid[:8]}_{f.name}"
                shutil.copy(f, dest)
                made.append(dest)
    return made


def _fmt_table(table: pd.DataFrame) -> str:
    t = table.copy()
    t.insert(1, "accuracy (mean ± sd)", [f"{m:.4f} ± {s:.4f}" for m, s in zip(t.pop("val_acc_mean"), t.pop("val_acc_std"), strict=True)])
    t["train_img_per_s"] = t["train_img_per_s"].map(lambda v: f"{v:,.0f}")
    t["infer_img_per_s"] = t["infer_img_per_s"].map(lambda v: f"{v:,.0f}")
    t["peak_memory_mb"] = t["peak_memory_mb"].map(lambda v: f"{v:,.0f}")
    t["params"] = t["params"].map(lambda v: f"{v:,.0f}")
    t["train_seconds"] = t["train_seconds"].map(lambda v: f"{v:.2f}")
    t["time_to_target_s"] = t["time_to_target_s"].map(lambda v: "never" if v != v else f"{v:.2f}")
    t.columns = ["n", "accuracy (mean ± sd)", "train images/s", "infer images/s", "peak memory (MiB)", "parameters",
                 "train seconds", "time to target (s, median)"]
    return t.to_markdown()


def build_report(experiment: str, out: str | Path | None = None, filter_string: str | None = None,
                 tracking_uri: str | None = None, target: float = 0.98,
                 log: Callable[[str], None] = print, note: str | None = None) -> Path:
    from vitbench.tracking import connect

    connect(tracking_uri)
    exp_id, runs = load_runs(experiment, filter_string)
    out = Path(out or Path("results") / experiment.replace(",", "+"))
    out.mkdir(parents=True, exist_ok=True)
    t = training_runs(runs)
    bench_files, bench_df = bench_plots(runs, out, experiment)
    if t.empty and bench_df is None:
        raise VitbenchError(f"experiment {experiment!r} has {len(runs)} run(s) but none FINISHED with the metrics "
                            f"a report needs ({', '.join(NEEDED)}) and no bench run")
    lines = [f"# {experiment}", "",
             f"Generated by `vitbench report --experiment {experiment}` on "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from {len(runs)} MLflow run(s) "
             f"(experiment id {exp_id}). Every number below is read from those runs.", ""]
    plots_made: list[Path] = []
    if not t.empty:
        hist = histories(list(t["run_id"]), dict(zip(t["run_id"], t["label"], strict=True)))
        ttt = time_to_target(hist, target) if not hist.empty else {}
        table = summary_table(t, ttt)
        table.to_csv(out / "summary.csv")
        plots_made += make_plots(t, table, hist, out, experiment)
        lines += ["## Summary", "",
                  f"Per cell, over its repeats (own seed each): final accuracy on the evaluation set "
                  f"({', '.join(sorted(t.get('tags.eval_set', pd.Series(['?'])).dropna().unique()))}), "
                  "training throughput of the last epoch, inference throughput, peak memory, training seconds "
                  "(training steps only: no compilation/capture/warm-up, no evaluation), and the training time to "
                  f"reach {target:.1%} accuracy.", "", _fmt_table(table), ""]
    lines += ["## Plots", ""]
    for p in plots_made + bench_files + sweep_artifacts(runs, out):
        lines += [f"![{p.stem.replace('_', ' ')}]({p.name})", ""]
    if bench_df is not None:
        cols = [c for c in ("model", "tokens", "train_batch_size", "precision", "train_samples_per_sec", "train_step_time",
                            "train_step_time_p10", "train_step_time_p90", "train_peak_memory_mb") if c in bench_df]
        lines += ["## Bench", "", bench_df[cols].round(2).to_markdown(index=False), ""]
    if note:
        lines += ["## Notes", "", note, ""]
    lines += ["## Conditions", "", conditions(runs).to_markdown(index=False), ""]
    report = out / "REPORT.md"
    report.write_text("\n".join(lines))
    log(f"wrote {report} with {len(plots_made) + len(bench_files)} plots")
    return report


def conditions(runs: pd.DataFrame) -> pd.DataFrame:
    cols = {"run_id": "run id", "tags.mlflow.runName": "run", "tags.gpu": "GPU", "tags.driver_version": "driver",
            "tags.torch_version": "torch", "tags.cuda_version": "CUDA", "tags.vitbench_version": "vitbench",
            "tags.git_commit": "commit", "start_time": "date (UTC)", "status": "status", "tags.command": "command"}
    c = runs[[k for k in cols if k in runs]].rename(columns=cols).copy()
    if "date (UTC)" in c:
        c["date (UTC)"] = pd.to_datetime(c["date (UTC)"]).dt.strftime("%Y-%m-%d %H:%M")
    if "commit" in c:
        c["commit"] = c["commit"].fillna("").str[:12]
    if "command" in c:
        c["command"] = c["command"].fillna("").map(lambda s: f"`{s}`" if s else "")
    return c
