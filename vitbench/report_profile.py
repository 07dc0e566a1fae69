"""The *why* beside the *how much*: where each compared implementation's step goes (``run --profile``, ``bench
--profile``), as stacked bars and one sentence per implementation against the first ("triton vs sdpa: X ms less
attention, Y ms less layout copying per step")."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vitbench.profiling import KINDS

WORDS = {"matmul": "matmul", "attention": "attention", "normalisation": "normalisation",
         "elementwise_activation": "elementwise/activation", "copies_layout": "layout copying",
         "optimizer": "optimizer", "other": "other work"}


def breakdown(frame: pd.DataFrame | None, label: str, prefix: str) -> pd.DataFrame:
    """Mean ms per training step by kind (columns) for each ``label`` value (rows, in their first order)."""
    cols = {f"{prefix}{k}_ms": k for k in KINDS}
    if frame is None or label not in frame or not set(cols) <= set(frame):  # none profiled, or no such runs
        return pd.DataFrame()
    rows = frame.dropna(subset=list(cols))
    return rows.groupby(label, sort=False)[list(cols)].mean().rename(columns=cols)


def ms(v: float, digits: int) -> str:
    """``v`` to ``digits`` significant digits, never in exponent notation (368 -> '370', 0.0123 -> '0.012')."""
    return f"{float(f'{v:.{digits}g}'):g}" if abs(v) < 1e6 else f"{v:,.0f}"


def why(b: pd.DataFrame) -> list[str]:
    """Each implementation against the first: the two kinds that differ most, in ms per step."""
    ref, out = b.index[0], []
    for name in b.index[1:]:
        d = (b.loc[name] - b.loc[ref]).sort_values(key=abs, ascending=False)
        parts = [f"{ms(abs(v), 2)} ms {'less' if v < 0 else 'more'} {WORDS[k]}" for k, v in d.head(2).items() if v]
        out.append(f"{name} vs {ref}: {', '.join(parts) or 'the same'} per step ({ms(b.loc[name].sum(), 3)} vs "
                   f"{ms(b.loc[ref].sum(), 3)} ms profiled).")
    return out


def section(t: pd.DataFrame, bench: pd.DataFrame | None, out: Path) -> tuple[list[str], list[Path]]:
    """'Where the step goes': a table, the sentences and the stacked bars, for the training runs and the bench
    cells that were profiled; nothing where none was. Runs timed on a busy machine are left out, as from the
    speed comparisons: their profile shares the machine too."""
    import seaborn.objects as so

    lines, made = [], []
    quiet = t[~t["busy"]] if "busy" in t else t
    left_out = len(breakdown(t.drop(quiet.index), "run_id", "metrics.train_prof_"))  # profiled busy runs
    for what, b, busy in (("training runs", breakdown(quiet, "label", "metrics.train_prof_"), left_out),
                          ("bench cells", breakdown(bench, "model", "train_prof_"), 0)):
        if b.empty:
            continue
        path = out / f"step_breakdown_{what.split()[0]}.png"
        long = b.reset_index(names="implementation").melt("implementation", var_name="kind", value_name="ms")
        (so.Plot(long, x="ms", y="implementation", color="kind").add(so.Bar(), so.Stack())
         .label(x="ms per training step (torch.profiler)", y="", title=f"Where the step goes: {what}")
         .layout(size=(8, 1.2 + 0.5 * len(b))).save(path, bbox_inches="tight", dpi=110))
        made.append(path)
        lines += [f"## Where the step goes ({what})", "",
                  "Profiled steps of the step that was timed, by kind of kernel (on the CPU, of op), ms per step:", "",
                  b.round(3).to_markdown(), "",
                  *([f"{busy} profiled run(s) timed on a busy machine left out.", ""] if busy else []), *[f"- {s}" for s in why(b)], "", f"![{path.stem}]({path.name})", ""]
    return lines, made
