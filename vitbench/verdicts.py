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


def speed_not_comparable(a: pd.DataFrame, b: pd.DataFrame, axis: str = "") -> str:
    """Why two cells' speeds cannot be compared ('' when they can): a different batch size or precision (unless
    that is the axis), other hardware, or a run measured while other processes took the machine's CPU."""
    same = [c for c in ("params.train.batch_size", "params.train.precision") if c in a and c != axis
            and set(a[c].astype(str)) != set(b[c].astype(str))]
    if same:
        c = same[0]
        return f"{c.split('.')[-1]} {a[c].iloc[0]} vs {b[c].iloc[0]}"
    if "hw" in a and "hw" in b and set(a["hw"]) | set(b["hw"]) != set(a["hw"]) & set(b["hw"]):
        return f"measured on other hardware: {'/'.join(sorted(set(a['hw'])))} vs {'/'.join(sorted(set(b['hw'])))}"
    busy = [d for d in (a, b) if "busy" in d and d["busy"].any()]
    if busy:
        return f"{int(sum(d['busy'].sum() for d in busy))} of the runs were timed on a busy machine"
    return ""


def sentence(a: pd.DataFrame, b: pd.DataFrame, axis: str = "") -> str:
    """'8,040x the training throughput (95% CI ...), accuracy +0.10 pt (...), 0.40x the peak memory (...)'.
    Throughput compares only under comparable conditions (``speed_not_comparable``)."""
    parts = []
    if why := speed_not_comparable(a, b, axis):
        parts.append(f"throughput not compared ({why})")
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
    """One sentence on the fully trained cells: which trains fastest and which is most accurate, each named only
    where its 95% interval separates it from the runner-up ('not distinguishable' otherwise), and a warning when
    the cells ranked differ in more than one part, so that no ranking is read as one part's effect."""
    full = t[~t["bounded"]]
    if full.empty:
        return "Every run here was bounded by a time or step budget: no accuracy is final."
    text = " ".join(s for s in (_fastest(full), _most_accurate(full)) if s)
    if full["label"].nunique() > 1 and (many := mixed(full)):
        text += (f" Caution: these cells differ in {', '.join(many)} at once, so no ranking here isolates one "
                 "part (compare one axis at a time, e.g. --attention on one variant).")
    return text


def _ranked(full: pd.DataFrame, col: str) -> tuple[str, str, pd.DataFrame, pd.DataFrame]:
    means = full.groupby("label")[col].mean().sort_values(ascending=False)
    top, second = means.index[0], means.index[1]
    return top, second, full[full["label"] == top], full[full["label"] == second]


def _fastest(full: pd.DataFrame) -> str:
    if full["label"].nunique() < 2:
        row = full.iloc[0]
        return f"**{row['label']}** trained at {full['thr'].mean():,.0f} img/s to {full['acc'].mean():.2%} accuracy."
    top, second, a, b = _ranked(full, "thr")
    if why := speed_not_comparable(a, b):
        return f"Training speed is not ranked ({why})."
    c = stats.ratio(list(a["thr"]), list(b["thr"]))
    rate = f"{a['thr'].mean():,.0f} img/s, {stats.factor(c.estimate)} the runner-up **{second}**"
    if c.too_small:
        return f"Training speed is not ranked at n = 1 (one run per cell gives no interval): **{top}** {rate}."
    if not c.significant:
        return (f"No cell trains distinguishably fastest: **{top}** ({rate}) is within the interval "
                f"({stats.describe_ratio(c, 'its rate').split('(', 1)[1]}.")
    slow = full.groupby("label")["thr"].mean().idxmin()
    ratio = a["thr"].mean() / full[full["label"] == slow]["thr"].mean()
    slower = "" if slow == second else f"; the slowest, **{slow}**, trains at " + (
        f"1/{ratio:,.0f} of that rate" if ratio >= 10 else f"{1 / ratio:.0%} of that rate")
    return f"**{top}** trains fastest ({rate}, 95% CI {stats.factor(c.low)}-{stats.factor(c.high)}){slower}."


def _most_accurate(full: pd.DataFrame) -> str:
    if full["label"].nunique() < 2:
        return ""
    top, second, a, b = _ranked(full, "acc")
    c = stats.difference(list(a["acc"]), list(b["acc"]))
    if c.too_small:
        return (f"Accuracy is not ranked at n = 1: **{top}** {a['acc'].mean():.2%}, **{second}** "
                f"{b['acc'].mean():.2%}.")
    if not c.significant:
        return (f"No cell is distinguishably most accurate at n = {min(len(a), len(b))}: **{top}** "
                f"({a['acc'].mean():.2%}) and **{second}** ({b['acc'].mean():.2%}) are within the interval.")
    return (f"**{top}** is most accurate ({a['acc'].mean():.2%}, {100 * c.estimate:+.2f} pt over **{second}**, "
            f"95% CI {100 * c.low:+.2f}...{100 * c.high:+.2f}).")


def mixed(runs: pd.DataFrame) -> list[str]:
    """The parts and options in which the ranked cells differ, when they differ in more than one."""
    names = [n for axis, deps in axes(runs).items() for n in (deps or [axis.split(".")[-1]])]
    return names if len(names) > 1 else []


METHOD = ("Method: each cell's repeats differ only in their seed. Throughput and memory compare as ratios of "
          "geometric means, accuracy as a difference of means in points; each with a 95% interval from "
          "Welch's t (on the logs for ratios), which stays honest at n = 3 where a bootstrap over three values "
          "would not. A difference is called real when its interval excludes zero (a ratio: 1x); otherwise the n per "
          "cell "
          "that would separate a difference of the observed size (5% two-sided, 80% power) is given. Only "
          "runs that differ in the compared axis alone are paired; throughput is compared at equal batch size "
          "and precision; runs bounded by a time or step budget are never compared on accuracy.")


def section(t: pd.DataFrame) -> list[str]:
    """The report's Findings: every verdict, by experiment and axis, then how they were reached."""
    lines = ["## Findings", ""]
    found = findings(t)
    if not found:
        sweep = "tags.kind" in t and (t["tags.kind"] == "sweep-trial").any()
        return lines + ["A sweep's trials each differ in several sampled options: they are not compared axis by "
                        "axis (the sweep's own plots rank them)." if sweep else
                        "No axis varies between these runs: nothing to compare.", ""]
    for exp in dict.fromkeys(v.experiment for v in found):
        for axis in dict.fromkeys(v.axis for v in found if v.experiment == exp):
            these = [v for v in found if v.experiment == exp and v.axis == axis]
            lines += [f"**{exp}**, axis `{axis}` (reference: {these[0].reference}):", ""]
            lines += [f"- **{v.value} vs {v.reference}**{f' ({v.where})' if v.where else ''}: {v.text}."
                      for v in these]
            lines.append("")
    return lines + [METHOD, ""]
