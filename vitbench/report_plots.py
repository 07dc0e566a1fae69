"""The report's figures: one panel per experiment, each point or bar labelled where it is drawn (no legend
to decode), error bars from the repeats, axes fitted to the fully trained cells (log where they span
decades), seaborn's colour-blind palette, and titles that say which way is better."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from vitbench import plots

PALETTE = plots.sns.color_palette("colorblind", 10)


def _grid(n: int, width: float = 6.0, height: float = 4.6):
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plots.plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def _colors(cells: pd.DataFrame) -> dict[str, tuple]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(cells.index)}


def _log_if_wide(ax, values) -> None:
    """Log scale on x when the values span more than a decade, with plain numbers as tick labels."""
    v = [x for x in values if x > 0]
    if v and max(v) / min(v) > 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plots.plt.FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(plots.matplotlib.ticker.NullFormatter())


def _label_column(ax, points: list[tuple[float, float, str, tuple]], lo: float, hi: float, gap: float = 0.075) -> None:
    """Direct labels in a column right of the panel, in the order of their points' heights, spread so none
    overlap, each joined to its point by a thin line in its colour."""
    ys = sorted(((y - lo) / (hi - lo), i) for i, (_, y, _, _) in enumerate(points))
    placed: list[float] = []
    for y, _ in ys:
        placed.append(max(y, placed[-1] + gap) if placed else max(y, 0.0))
    shift = max(0.0, placed[-1] - 1.0) if placed else 0.0
    placed = [max(p - shift, 0.0) for p in placed]
    for (_, i), y_text in zip(ys, placed, strict=True):
        x, y, text, color = points[i]
        ax.annotate(text, (x, y), xytext=(1.03, y_text), textcoords="axes fraction", va="center", fontsize=8,
                    color=color, arrowprops={"arrowstyle": "-", "lw": 0.6, "color": color, "alpha": 0.7},
                    annotation_clip=False)


def _name(row: pd.Series) -> str:
    return f"{row['short']} ({row['budget']})" if row["budget"] else str(row["short"])


def _accuracy_panel(ax, xs, labels: list, ylim: tuple[float, float], xlabel: str, ylabel: str, title: str) -> None:
    """Axes fitted (log x where x spans decades, y in percent), direct labels, a title that says what to read."""
    _log_if_wide(ax, xs)
    ax.set_ylim(*ylim)
    _label_column(ax, labels, *ylim)
    ax.set(xlabel=xlabel + (" (log scale)" if ax.get_xscale() == "log" else ""), ylabel=ylabel, title=title)
    ax.yaxis.set_major_formatter(plots.plt.FuncFormatter(lambda v, _: f"{v:.1%}"))


def accuracy_vs_throughput(table: pd.DataFrame, path: Path) -> int:
    exps = list(dict.fromkeys(table["experiment"]))
    fig, axes = _grid(len(exps), width=7.5)
    for ax, exp in zip(axes, exps, strict=True):
        cells = table[table["experiment"] == exp].sort_values("train_img_per_s")
        full = cells[cells["budget"] == ""]
        fit = full if not full.empty else cells
        lo = (fit["val_acc_mean"] - fit["val_acc_std"]).min()
        hi = (fit["val_acc_mean"] + fit["val_acc_std"]).max()
        pad = max((hi - lo) * 0.15, 0.002)
        lo, hi = lo - pad, min(hi + pad, 1.0)
        points = []
        for label, r in cells.iterrows():
            color = _colors(cells)[label]
            below = r["val_acc_mean"] < lo
            y = lo + pad * 0.3 if below else r["val_acc_mean"]
            filled = r["budget"] == ""
            ax.errorbar(r["train_img_per_s"], y, xerr=r["train_img_per_s_std"], yerr=0 if below else r["val_acc_std"],
                        fmt="v" if below else "o", ms=8, color=color, mfc=color if filled else "white", capsize=3)
            points.append((r["train_img_per_s"], y, _name(r) + (f": {r['val_acc_mean']:.1%} (off the axis)"
                                                                   if below else ""), color))
        ax.xaxis.set_major_formatter(plots.plt.FuncFormatter(lambda x, _: f"{x:,.0f}"))
        bounded = (cells["budget"] != "").any()
        _accuracy_panel(ax, cells["train_img_per_s"], points, (lo, hi), "training images/s", "final accuracy",
                        f"{exp}: " + ("hollow points stopped at a budget: their accuracy ranks nothing"
                                      if bounded else "up and to the right is better"))
    fig.suptitle("Accuracy against training speed, mean ± sd over repeats (hollow: bounded by a budget)")
    plots.save(fig, path)
    return len(exps)


def bars(table: pd.DataFrame, column: str, err: str | None, unit: str, better: str, path: Path) -> int:
    exps = list(dict.fromkeys(table["experiment"]))
    heights = [len(table[table["experiment"] == e]) for e in exps]
    fig, axes = _grid(len(exps), width=6.0, height=1.2 + 0.42 * max(heights))
    for ax, exp in zip(axes, exps, strict=True):
        cells = table[table["experiment"] == exp].sort_values(column)
        colors = _colors(cells.sort_values("train_img_per_s"))
        names = [_name(r) for _, r in cells.iterrows()]
        ax.barh(names, cells[column], xerr=cells[err] if err else None, capsize=3,
                color=[colors[label] for label in cells.index])
        for i, v in enumerate(cells[column]):
            ax.annotate(f" {v:,.0f}", (v, i), va="center", fontsize=8)
        ax.xaxis.set_major_formatter(plots.plt.FuncFormatter(lambda x, _: f"{x:,.0f}"))
        _log_if_wide(ax, cells[column])
        ax.set_xlim(right=ax.get_xlim()[1] * (3 if ax.get_xscale() == "log" else 1.2))
        ax.set(xlabel=unit + (" (log scale)" if ax.get_xscale() == "log" else ""), ylabel="",
               title=f"{exp}: {better}")
    plots.save(fig, path)
    return len(exps)


def learning_curves(table: pd.DataFrame, hist: pd.DataFrame, path: Path) -> int:
    exps = list(dict.fromkeys(table["experiment"]))
    fig, axes = _grid(len(exps), width=7.5)
    for ax, exp in zip(axes, exps, strict=True):
        cells = table[table["experiment"] == exp].sort_values("train_img_per_s")
        colors = _colors(cells)
        curves = {}
        for label in cells.index:
            h = hist[hist["label"] == label]
            if not h.empty and "train_seconds_cum" in h:
                curves[label] = h.groupby("epoch")[["train_seconds_cum", "val_acc"]].mean()
        full = [c["val_acc"] for label, c in curves.items() if not cells.loc[label, "budget"]] or \
            [c["val_acc"] for c in curves.values()]
        if not full:
            continue
        lo, hi = min(v.min() for v in full), max(v.max() for v in full)
        pad = max((hi - lo) * 0.05, 0.002)
        lo, hi = lo - pad, min(hi + pad, 1.0)
        ends = []
        for label, c in curves.items():
            r, color = cells.loc[label], colors[label]
            x, y = c["train_seconds_cum"].iloc[-1], c["val_acc"].iloc[-1]
            if y < lo:  # a bounded run far below the trained ones: named, not drawn
                ends.append((x, lo, f"{_name(r)}: {y:.1%} after {x:.0f} s (off the axis)", color))
                continue
            ax.plot(c["train_seconds_cum"], c["val_acc"], "o-", color=color, ms=4,
                    mfc=color if not r["budget"] else "white")
            ends.append((x, y, _name(r), color))
        _accuracy_panel(ax, [x for c in curves.values() for x in c["train_seconds_cum"]], ends, (lo, hi),
                        "training seconds", "accuracy after each epoch", f"{exp}: the higher curve sooner is better")
    fig.suptitle("Accuracy against training time (mean of the repeats; hollow: bounded by a budget)")
    plots.save(fig, path)
    return len(exps)


def comparison_plots(table: pd.DataFrame, hist: pd.DataFrame, out: Path) -> dict[Path, int]:
    """Every figure of the training comparison: file -> number of panels."""
    made = {out / "accuracy_vs_throughput.png": accuracy_vs_throughput(table, out / "accuracy_vs_throughput.png")}
    rss = (table.get("memory_source", pd.Series(dtype=str)) == "process_peak_rss").any()
    memory = ("the process's peak RSS on the CPU (MiB): not the model's memory" if rss
              else "peak memory during training (MiB)")
    for column, err, unit, better, name in (
            ("train_img_per_s", "train_img_per_s_std", "training images/s", "longer is faster", "train_throughput"),
            ("infer_img_per_s", None, "inference images/s", "longer is faster", "infer_throughput"),
            ("peak_memory_mb", None, memory, "shorter is lighter", "peak_memory")):
        made[out / f"{name}.png"] = bars(table, column, err, unit, better, out / f"{name}.png")
    if not hist.empty and hist.groupby("run_id")["epoch"].nunique().max() >= 3:  # one or two points make no curve
        made[out / "learning_curves.png"] = learning_curves(table, hist, out / "learning_curves.png")
    return made
