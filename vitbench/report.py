"""`vitbench report`: tracked runs -> pandas -> seaborn plots -> REPORT.md, every number from MLflow."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from vitbench import report_profile, verdicts
from vitbench.errors import VitbenchError, write_error
from vitbench.report_runs import log_cell_summaries

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
    from vitbench.liveness import reap_orphans

    reap_orphans(ids)  # runs whose process died are FAILED with the reason, not RUNNING forever
    try:
        runs = mlflow.search_runs(ids, filter_string=filter_string or "", max_results=50000)
    except Exception as e:
        raise VitbenchError(f"bad --filter {filter_string!r}: {str(e).splitlines()[0][:200]}") from None
    if not runs.empty and "tags.kind" in runs:  # the reports themselves and bench cells (their parent has the table)
        runs = runs[~runs["tags.kind"].isin(["report", "bench-cell"])].reset_index(drop=True)
    if runs.empty:
        raise VitbenchError(f"experiment {experiment!r} has no runs{' matching the filter' if filter_string else ''}")
    names = dict(zip(ids, [e.strip() for e in experiment.split(",") if e.strip()], strict=True))
    runs["experiment"] = runs["experiment_id"].map(names)
    if "tags.suite.cell" in runs:
        runs["short"] = runs["tags.suite.cell"].map(short_label)
    if len(ids) > 1 and "tags.suite.cell" in runs:
        runs["tags.suite.cell"] = runs["tags.suite"].fillna("") + ": " + runs["tags.suite.cell"].fillna("")
    return ",".join(ids), runs


def short_label(cell) -> str:
    """A suite cell's values without their keys: 'pos_embed=sincos2d,pool=mean' -> 'sincos2d, mean'
    (flags keep theirs: 'compile=True')."""
    if not isinstance(cell, str) or not cell:
        return ""
    def value(part: str) -> str:  # True / False alone would not say what is on
        key, _, v = part.partition("=")
        return part if v in ("True", "False") or not v else v

    return ", ".join(value(p) for p in cell.split(","))


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
NOT_CONFIG = verdicts.NOT_CONFIG


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
    """FINISHED training runs with what a comparison needs: ``acc``, ``thr`` (training images/s over the
    whole run where recorded, else the last epoch's), ``mem``, and whether a time or step budget bounded
    the run (``bounded``, ``budget``)."""
    have = [c for c in (f"metrics.{m}" for m in NEEDED) if c in runs]
    if len(have) < len(NEEDED):
        return runs.iloc[0:0]
    t = of_kind(runs[runs["status"] == "FINISHED"].dropna(subset=have), "", "suite-run", "sweep-trial").copy()
    t["label"] = config_labels(t) if len(t) else t.apply(label_of, axis=1)
    if "short" not in t:
        t["short"] = ""
    t["short"] = [s if isinstance(s, str) and s else lab for s, lab in zip(t["short"], t["label"], strict=True)]
    mean_rate = t.get("metrics.train_images_per_sec_mean", pd.Series(float("nan"), index=t.index))
    t["thr"] = mean_rate.fillna(t.get("metrics.train_images_per_sec"))
    t["acc"] = t["metrics.final_val_acc"]
    t["mem"] = t["metrics.peak_memory_mb"]
    t["budget"] = t.apply(budget_of, axis=1)
    t["bounded"] = t["budget"] != ""
    t["hw"] = devices(t)
    t["busy"] = t.get("tags.busy_machine", pd.Series("no", index=t.index)).fillna("no").ne("no")  # "no" or why
    return t


def budget_of(row: pd.Series) -> str:
    """'20 s time budget' / '500-step budget' when a budget was set and stopped the run, else ''."""
    stopped = row.get("tags.stopped_by")
    tb, ms = row.get("params.train.time_budget"), row.get("params.train.max_steps")
    if isinstance(tb, str) and tb not in ("None", "") and stopped in ("time_budget", None):
        return f"{float(tb):g} s time budget"
    if isinstance(ms, str) and ms not in ("None", "") and stopped in ("max_steps", None):
        return f"{int(ms):,}-step budget"
    return ""


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


def measured_time_to_target(t: pd.DataFrame, target: float) -> dict[str, float]:
    """Per run that stopped at ``target`` itself (``run --target-acc``): its measured time, finer than the epochs'."""
    if "metrics.time_to_target" not in t or "params.train.target_acc" not in t:
        return {}
    hit = t[(pd.to_numeric(t["params.train.target_acc"], errors="coerce") == target) & t["metrics.time_to_target"].notna()]
    return dict(zip(hit["run_id"], hit["metrics.time_to_target"], strict=True))


def summary_table(t: pd.DataFrame, ttt: dict[str, float]) -> pd.DataFrame:
    t = t.assign(time_to_target=t["run_id"].map(ttt))
    g = t.groupby("label", sort=False)
    table = pd.DataFrame({
        "experiment": g["experiment"].first(),
        "short": g["short"].first(),
        "budget": g["budget"].first(),
        "n": g.size(),
        "val_acc_mean": g["acc"].mean(),
        "val_acc_std": g["acc"].std(ddof=1).fillna(0.0),
        "train_img_per_s": g["thr"].mean(),
        "train_img_per_s_std": g["thr"].std(ddof=1).fillna(0.0),
        "infer_img_per_s": g["metrics.infer_images_per_sec"].median(),
        "infer_img_per_s_min": g["metrics.infer_images_per_sec"].min(),
        "infer_img_per_s_max": g["metrics.infer_images_per_sec"].max(),
        "busy_runs": g["busy"].sum() if "busy" in t else 0,
        "peak_memory_mb": g["mem"].mean(),
        "memory_source": g["tags.peak_memory_source"].first() if "tags.peak_memory_source" in t else "",
        "params": g["metrics.param_count"].mean(),
        "train_seconds": g["metrics.train_seconds"].mean(),
        "time_to_target_s": g["time_to_target"].median(),
    })
    order = {e: i for i, e in enumerate(dict.fromkeys(t["experiment"]))}
    return table.sort_values(["experiment", "val_acc_mean"], ascending=[True, False],
                             key=lambda c: c.map(order) if c.name == "experiment" else c)


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
    for mode in ("train", "infer"):  # bench runs from before the median columns: their figures were medians
        for what in ("samples_per_sec", "step_time"):
            if f"{mode}_{what}" in df and f"{mode}_{what}_median" not in df:
                df[f"{mode}_{what}_median"] = df[f"{mode}_{what}"]
    made = []
    if df["tokens"].nunique() > 1 and "train_step_time_median" in df:
        fig, axes = plots.plt.subplots(1, 2, figsize=(12, 4.5))
        ok = df.dropna(subset=["train_step_time_median"])
        plots.sns.lineplot(data=ok, x="tokens", y="train_step_time_median", hue="model", marker="o", ax=axes[0])
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


def _fmt_table(table: pd.DataFrame, bounded: bool) -> str:
    t = pd.DataFrame(index=table.index)
    t["n"] = table["n"]
    t["accuracy (mean ± sd)"] = [f"{m:.4f} ± {s:.4f}" if n > 1 else f"{m:.4f} (n = 1)"
                                 for m, s, n in zip(table["val_acc_mean"], table["val_acc_std"], table["n"], strict=True)]
    if bounded:
        t["budget"] = table["budget"]
    t["train images/s"] = [f"{m:,.0f} ± {s:,.0f}" if n > 1 else f"{m:,.0f}"
                           for m, s, n in zip(table["train_img_per_s"], table["train_img_per_s_std"], table["n"], strict=True)]
    lows, highs = (table.get(c, table["infer_img_per_s"]) for c in ("infer_img_per_s_min", "infer_img_per_s_max"))
    t["infer images/s (median [min-max])"] = [
        f"{m:,.0f} [{lo:,.0f}-{hi:,.0f}]" if n > 1 else f"{m:,.0f}" for m, lo, hi, n in
        zip(table["infer_img_per_s"], lows, highs, table["n"], strict=True)]
    t["peak memory (MiB)"] = [f"{v:,.0f}" + (" (process RSS, CPU)" if src == "process_peak_rss" else "")
                              for v, src in zip(table["peak_memory_mb"], table["memory_source"], strict=True)]
    t["parameters"] = table["params"].map(lambda v: f"{v:,.0f}")
    t["train seconds"] = table["train_seconds"].map(lambda v: f"{v:.2f}")
    if "busy_runs" in table and table["busy_runs"].any():
        t["timed on a busy machine"] = [f"{b} of {n}" if b else "" for b, n in zip(table["busy_runs"], table["n"], strict=True)]
    if not bounded:
        t["time to target (s, median)"] = table["time_to_target_s"].map(lambda v: "never" if v != v else f"{v:.2f}")
    t.index.name = "cell"
    return t.to_markdown()


def headline(t: pd.DataFrame, table: pd.DataFrame, experiment: str) -> list[str]:
    """Title and opening line: what was compared, on what data and hardware, and the answer."""
    def values(col: str) -> str:
        return "/".join(sorted(t[col].dropna().astype(str).unique())) if col in t else "?"

    exps = list(dict.fromkeys(t["experiment"]))

    def varied(e: str) -> str:
        runs = t[t["experiment"] == e]
        found = verdicts.axes(runs)
        if not found:
            return f"{e} ({', '.join(table[table['experiment'] == e]['short'])})"
        axes = [a.split(".")[-1] + ": " + ", ".join(dict.fromkeys(runs[a].astype(str))) for a in found]
        return f"{e} ({' x '.join(axes)})"

    compared = "; ".join(varied(e) for e in exps)
    n = sorted(set(table["n"]))
    return [f"# {markdown(', '.join(exps))} on {values('tags.dataset')}: which way is faster, lighter and as accurate?", "",
            f"Compared on {values('tags.dataset')} ({values('tags.eval_set')} set), {hardware(t)}, torch "
            f"{values('tags.torch_version')}: {compared}; {'/'.join(map(str, n))} repeat(s) per cell, each its own "
            f"seed. **Answer:** {verdicts.answer(t)}{busy_note(t)}", ""]


def busy_note(t: pd.DataFrame) -> str:
    """A flag for runs timed while other processes took a noticeable share of the machine's CPU."""
    if "busy" not in t or not t["busy"].any():
        return ""
    return (f" **{int(t['busy'].sum())} of {len(t)} runs were timed on a busy machine** (other processes took "
            f"{100 * t.get('metrics.cond_others_cpu_share', pd.Series(dtype=float)).max():.0f} % of its CPU at "
            "most): their speed is compared with no other run; the Conditions table names them.")


def devices(t: pd.DataFrame) -> list[str]:
    """Per run, the GPU, or for a CPU run the processor ('CPU AMD EPYC 7B13'), never 'none'."""
    gpus = t.get("tags.gpu", pd.Series("none", index=t.index)).fillna("none").astype(str)
    cpus = t.get("tags.cpu", pd.Series("", index=t.index)).fillna("").astype(str)
    return [g if g != "none" else f"CPU {c or '(unknown)'}" for g, c in zip(gpus, cpus, strict=True)]


def markdown(text: str) -> str:
    """A user's name as literal markdown text: no markup, link or HTML of its own."""
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~])", r"\\\1", text)


def hardware(t: pd.DataFrame) -> str:
    return "/".join(sorted(set(devices(t)))) or "?"


def default_out(experiment: str) -> Path:
    """``reports/<experiment>`` in the working directory: one folder name made of the experiment names, so
    no name ('../../x') reaches outside it. The project's showcase in results/ is written with --out."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", experiment.replace(",", "+")).lstrip(".") or "report"
    if name != experiment.replace(",", "+"):  # two names that differ only in what was replaced get two folders
        name += "-" + hashlib.sha256(experiment.encode()).hexdigest()[:6]
    return Path("reports") / name


def build_report(experiment: str, out: str | Path | None = None, filter_string: str | None = None,
                 tracking_uri: str | None = None, target: float = 0.98,
                 log: Callable[[str], None] = print, note: str | None = None) -> Path:
    from vitbench.tracking import connect

    connect(tracking_uri, existing=True)
    exp_id, runs = load_runs(experiment, filter_string)
    out = Path(out) if out else default_out(experiment)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(out, e, "report folder") from None
    t = training_runs(runs)
    order = {e.strip(): i for i, e in enumerate(experiment.split(","))}  # as the user listed them
    t = t.sort_values(["experiment", "start_time"], key=lambda c: c.map(order) if c.name == "experiment" else c)
    bench_files, bench_df = bench_plots(runs, out, experiment)
    if t.empty and bench_df is None:
        raise VitbenchError(f"experiment {experiment!r} has {len(runs)} run(s) but none FINISHED with the metrics "
                            f"a report needs ({', '.join(NEEDED)}) and no bench run")
    source = (f"Generated by `vitbench report --experiment {experiment}` on "
              f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from {len(runs)} MLflow run(s) "
              f"(experiment id {exp_id}). Every number below is read from those runs.")
    lines, plots_made = training_sections(t, experiment, source, target, out) if not t.empty else (
        [f"# {experiment}", "", source, ""], [])
    lines += ["## Plots", ""]
    figures = plots_made + bench_files + sweep_artifacts(runs, out)
    lines += [x for p in figures for x in (f"![{p.stem.replace('_', ' ')}]({p.name})", "")]
    if bench_df is not None:
        cols = [c for c in ("model", "tokens", "train_batch_size", "precision", "train_samples_per_sec_median", "train_step_time_median",
                            "train_step_time_p10", "train_step_time_p90", "train_peak_memory_mb", "train_tflops", "train_mfu")
                if c in bench_df]
        lines += ["## Bench", "", bench_df[cols].round(2).to_markdown(index=False), ""]
    lines, figures = [a + b for a, b in zip((lines, figures), report_profile.section(t, bench_df, out), strict=True)]
    if note:
        lines += ["## Notes", "", note, ""]
    lines += ["## Conditions", "", conditions(runs).to_markdown(index=False), ""]
    report = out / "REPORT.md"
    report.write_text("\n".join(lines))
    log(f"wrote {report} with {len(plots_made) + len(bench_files)} plots")
    answer = next((line for line in lines[1:] if line and not line.startswith(("#", "Generated by"))), "")
    written = [report, *figures, *([out / "summary.csv"] if not t.empty else [])]
    for exp in dict.fromkeys(runs["experiment_id"]):
        rid = log_report_run(exp, written, experiment, answer)
        if not t.empty:
            log_cell_summaries(rid, exp, t[t["experiment_id"] == exp])
        log(f"logged it to MLflow: run 'report' ({rid}) of experiment {runs.loc[runs['experiment_id'] == exp, 'experiment'].iloc[0]}")
    return report


def training_sections(t, experiment: str, source: str, target: float, out: Path) -> tuple[list[str], list[Path]]:
    """The report's headline, findings and tables of the training runs ``t``; the plots made of them."""
    from vitbench import report_plots

    hist = histories(list(t["run_id"]), dict(zip(t["run_id"], t["label"], strict=True)))
    ttt = (time_to_target(hist, target) if not hist.empty else {}) | measured_time_to_target(t, target)
    table = summary_table(t, ttt)
    table.to_csv(out / "summary.csv")
    plots_made = list(report_plots.comparison_plots(table, hist, out))
    full, bounded = table[table["budget"] == ""], table[table["budget"] != ""]
    lines = headline(t, table, experiment) + [source, ""] + verdicts.section(t)
    lines += ["## Fully trained cells", "",
              "Per cell, over its repeats: final accuracy on the evaluation set, training images/s over the "
              "whole run, inference images/s, peak memory, training seconds (training steps only: no "
              "compilation, capture, warm-up or evaluation) and the training time to reach "
              f"{target:.1%} accuracy.", "", _fmt_table(full, bounded=False) if len(full) else "(none)", ""]
    if len(bounded):
        lines += ["## Bounded runs", "",
                  "These cells stopped at a time or step budget: their accuracy is what the budget allowed, not "
                  "a trained result, and is never ranked against the cells above. Their throughput and memory "
                  "compare as usual.", "", _fmt_table(bounded, bounded=True), ""]
    return lines, plots_made


def log_report_run(experiment_id: str, written: list[Path], experiment: str, answer: str) -> str:
    """REPORT.md, its plots and summary beside the runs they judge: the experiment's run named 'report'
    (kind ``report``; a later report of the same experiments replaces its files), its description the answer.
    Only the files this report wrote go up: whatever else the folder holds stays where it is."""
    from mlflow.tracking import MlflowClient

    from vitbench.mlflow_ui import NOTE
    from vitbench.tracking import environment_tags

    client = MlflowClient()
    # the experiment names are compared here, not in the filter: a name may hold any quote
    found = [r for r in client.search_runs([experiment_id], "tags.kind = 'report'", max_results=1000)
             if r.data.tags.get("report.of") == experiment]
    note = (f"`vitbench report --experiment {experiment}`: {answer} The whole report with its findings, tables "
            "and plots is this run's artifact REPORT.md (Artifacts tab).")
    if found:
        rid = found[0].info.run_id
        client.update_run(rid, status="RUNNING")
    else:
        rid = client.create_run(experiment_id, run_name="report", tags={
            "kind": "report", "report.of": experiment, **environment_tags()}).info.run_id
    client.set_tag(rid, NOTE, note)
    for f in written:
        client.log_artifact(rid, str(f))
    client.set_terminated(rid, "FINISHED")
    return rid


def conditions(runs: pd.DataFrame) -> pd.DataFrame:
    from vitbench.secrets import mask_secrets

    cols = {"run_id": "run id", "tags.mlflow.runName": "run", "tags.gpu": "GPU", "tags.cpu": "CPU",
            "tags.cpu_cores": "cores", "metrics.cond_others_cpu_share": "others' CPU share (timed)",
            "tags.driver_version": "driver",
            "tags.torch_version": "torch", "tags.cuda_version": "CUDA", "tags.vitbench_version": "vitbench",
            "tags.git_commit": "commit", "start_time": "date (UTC)", "status": "status", "tags.error": "why it ended",
            "tags.command": "command"}
    c = runs[[k for k in cols if k in runs]].rename(columns=cols).copy()
    if "date (UTC)" in c:
        c["date (UTC)"] = pd.to_datetime(c["date (UTC)"]).dt.strftime("%Y-%m-%d %H:%M")
    if "commit" in c:
        c["commit"] = c["commit"].fillna("").str[:12]
    for col in ("command", "why it ended"):
        if col in c:
            c[col] = c[col].fillna("").map(lambda s: f"`{mask_secrets(s)}`" if s else "")
    return c
