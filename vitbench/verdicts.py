"""Verdicts computed from tracked runs: for each axis an experiment varies, each value against the axis'
reference -- throughput and memory as ratios, accuracy as a difference in points, each with its 95%
interval (vitbench.stats) -- and the one-sentence answer a report opens with.

Runs are compared only where they differ in that axis alone (other axes held equal), throughput only
at equal batch size and precision, and accuracy never between a full run and one bounded by a time or
step budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from vitbench import stats

# The baseline each axis is measured against, where the runs have it; otherwise the first value seen.
REFERENCE = {"attention": "naive", "patchify": "loop", "mlp": "torch", "pos_embed": "learned", "pool": "cls", "norm": "pre",
             "loader": "dataloader", "precision": "fp32", "compile": "False", "optimizer": "adam"}
# Where one axis determines another (a variant fixes its parts), the first of these names the axis.
PRIORITY = ("recipe", "variant", "attention", "patchify", "mlp", "pos_embed", "pool", "norm", "loader", "precision", "compile")
NOT_CONFIG = {"seed", "device", "data_dir", "num_workers", "max_steps", "time_budget"}


@dataclass
class Verdict:
    experiment: str
    axis: str
    value: str
    reference: str
    where: str  # the other axes' values held equal ('' when none)
    text: str


def axes(runs: pd.DataFrame) -> dict[str, list[str]]:
    """The config columns an experiment varies, each with the varying columns it determines (a variant
    fixes its parts): those are not axes of their own."""
    cols = [c for c in runs.columns if (c.startswith(("params.train.", "params.model.")) or c == "tags.recipe")
            and c.split(".")[-1] not in NOT_CONFIG and runs[c].astype(str).nunique() > 1]

    def rank(c: str) -> tuple[int, str]:
        name = c.split(".")[-1]
        return (PRIORITY.index(name) if name in PRIORITY else len(PRIORITY), c)

    kept: dict[str, list[str]] = {}
    for c in sorted(cols, key=rank):
        owner = next((k for k in kept if determines(runs, k, c)), None)
        if owner is None:
            kept[c] = []
        else:
            kept[owner].append(c.split(".")[-1])
    return kept


def determines(runs: pd.DataFrame, a: str, b: str) -> bool:
    """Each value of column ``a`` comes with a single value of ``b``."""
    return bool((runs.groupby(runs[a].astype(str))[b].nunique() <= 1).all())


def compare_cells(exp: str, runs: pd.DataFrame) -> list[Verdict]:
    out: list[Verdict] = []
    varied = axes(runs)
    for axis, dependents in varied.items():
        name = axis.split(".")[-1] + (f" (with {', '.join(dependents)})" if dependents else "")
        values = list(dict.fromkeys(runs[axis].astype(str)))
        preferred = REFERENCE.get(axis.split(".")[-1])
        ref = preferred if preferred in values else values[0]
        others = [c for c in varied if c != axis]
        groups = runs.groupby([runs[c].astype(str) for c in others]) if others else [((), runs)]
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            where = ", ".join(f"{c.split('.')[-1]}={v}" for c, v in zip(others, key, strict=True))
            base = g[g[axis].astype(str) == ref]
            for v in values:
                cell = g[g[axis].astype(str) == v]
                if v == ref or cell.empty or base.empty:
                    continue
                out.append(Verdict(exp, name, v, ref, where, sentence(cell, base, axis)))
    return out


def sentence(a: pd.DataFrame, b: pd.DataFrame, axis: str = "") -> str:
    """'8,040x the training throughput (95% CI ...), accuracy +0.10 pt (...), 0.40x the peak memory (...)'.
    Throughput compares at equal batch size and precision, unless that is the axis compared."""
    parts = []
    same = [c for c in ("params.train.batch_size", "params.train.precision") if c in a and c != axis
            and set(a[c].astype(str)) != set(b[c].astype(str))]
    if same:
        c = same[0]
        parts.append(f"throughput not compared ({c.split('.')[-1]} {a[c].iloc[0]} vs {b[c].iloc[0]})")
    else:
        parts.append(stats.describe_ratio(stats.ratio(list(a["thr"]), list(b["thr"])), "the training throughput"))
    bounded = [(name, d) for name, d in (("it", a), ("the reference", b)) if d["bounded"].any()]
    if bounded:
        name, d = bounded[0]
        parts.append(f"accuracy not compared ({name} ran under a {d['budget'].iloc[0]})")
    else:
        parts.append(stats.describe_accuracy(stats.difference(list(a["acc"]), list(b["acc"]))))
    sources = set(a.get("tags.peak_memory_source", pd.Series(dtype=str)).dropna()) | \
        set(b.get("tags.peak_memory_source", pd.Series(dtype=str)).dropna())
    if "process_peak_rss" in sources:
        parts.append("peak memory not compared (on the CPU it is the process's peak RSS, not the model's memory)")
    else:
        parts.append(stats.describe_ratio(stats.ratio(list(a["mem"]), list(b["mem"])), "the peak memory"))
    return ", ".join(parts)


def findings(t: pd.DataFrame) -> list[Verdict]:
    """Every verdict, experiment by experiment (``t``: one row per run, columns thr, acc, mem, bounded,
    budget, experiment and the params)."""
    out: list[Verdict] = []
    if "tags.kind" in t:  # a sweep's trials differ in several sampled options at once: no axis to pair them on
        t = t[t["tags.kind"] != "sweep-trial"]
    for exp, runs in t.groupby("experiment", sort=False):
        out += compare_cells(str(exp), runs)
    return out


def answer(t: pd.DataFrame) -> str:
    """One sentence: the fastest fully trained cell, how its accuracy compares with the most accurate
    one, and how far the slowest lags."""
    full = t[~t["bounded"]]
    if full.empty:
        return "Every run here was bounded by a time or step budget: no accuracy is final."
    g = full.groupby("label")
    fastest, best = g["thr"].mean().idxmax(), g["acc"].mean().idxmax()
    fa, ba = full[full["label"] == fastest], full[full["label"] == best]
    text = f"**{fastest}** trains fastest ({fa['thr'].mean():,.0f} img/s, accuracy {fa['acc'].mean():.2%})"
    if fastest != best:
        c = stats.difference(list(fa["acc"]), list(ba["acc"]))
        verdict = ("not distinguishable from" if not c.significant else f"{-100 * c.estimate:.2f} pt below")
        n = min(len(fa), len(ba))
        text += f"; its accuracy is {verdict} the most accurate, **{best}** ({ba['acc'].mean():.2%}), at n = {n}"
    slowest = t.groupby("label")["thr"].mean().idxmin()
    if slowest != fastest:
        ratio = fa["thr"].mean() / t[t["label"] == slowest]["thr"].mean()
        text += f"; the slowest, **{slowest}**, trains at 1/{ratio:,.0f} of that rate" if ratio >= 10 else \
            f"; the slowest, **{slowest}**, trains at {1 / ratio:.0%} of that rate"
    return text + "."


METHOD = ("Method: each cell's repeats differ only in their seed. Throughput and memory compare as ratios of "
          "geometric means, accuracy as a difference of means in points; each with a 95% interval from "
          "Welch's t (on the logs for ratios), which stays honest at n = 3 where a bootstrap over three values "
          "would not. A difference is called real when its interval excludes zero (a ratio: 1x); otherwise the n per "
          "cell "
          "that would separate a difference of the observed size (5% two-sided, 80% power) is given. Only "
          "runs that differ in the compared axis alone are paired; throughput is compared at equal batch size "
          "and precision; runs bounded by a time or step budget are never compared on accuracy.")
