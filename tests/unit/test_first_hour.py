"""What a first hour on a laptop can trust: busy machines flagged, a broken torch/torchvision pair named, one axis
at a time in rankings, sweeps that keep the test set out of tuning, numbers readable at a glance."""

from __future__ import annotations

import io
import os

import pandas as pd
import pytest
from rich.console import Console

from vitbench import conditions, verdicts
from vitbench.bench import BenchOptions
from vitbench.bench_rows import rich_table
from vitbench.sweep import NAME_LENGTH, trial_name


def cells(rows: list[tuple[str, dict, list[float], list[float]]]) -> pd.DataFrame:
    """A frame as report.training_runs makes it: label, params, thr and acc per repeat."""
    out = []
    for label, params, thr, acc in rows:
        for t, a in zip(thr, acc, strict=True):
            out.append({"label": label, "experiment": "e", "bounded": False, "budget": "", "mem": 1.0,
                        "busy": False, "hw": "CPU x", **{f"params.{k}": v for k, v in params.items()},
                        "thr": t, "acc": a})
    return pd.DataFrame(out)


def bench_row(model: str, memory_source: str, others: float) -> dict:
    row = {"model": model, "img_size": 28, "tokens": 50, "device": "cpu", "train_batch_size": 256, "train_mfu": float("nan")}
    for mode in ("train", "infer"):
        row.update({f"{mode}_samples_per_sec": 1234.5, f"{mode}_samples_per_sec_median": 1234.5,
                    f"{mode}_step_time_median": 207.4, f"{mode}_step_time_p10": 201.1, f"{mode}_step_time_p90": 215.9,
                    f"{mode}_peak_memory_mb": 1532.2, f"{mode}_memory_source": memory_source,
                    f"{mode}_cond_others_cpu_share": others})
    return row



def test_the_conditions_arithmetic():
    c = conditions.Conditions(wall=10.0, machine_busy=10.0 * (os.cpu_count() or 1) * 0.5 + 5.0, ours=5.0)
    assert c.others_share == pytest.approx(0.5) and c.busy and "other processes used 50%" in c.verdict()
    quiet = conditions.Conditions(wall=10.0, machine_busy=5.2, ours=5.0)
    assert not quiet.busy and quiet.verdict() == ""



def test_the_answer_ranks_only_what_its_interval_separates():
    overlapping = cells([("a", {"model.attention": "sdpa"}, [100.0, 300.0], [0.90, 0.95]),
                         ("b", {"model.attention": "vectorized"}, [150.0, 200.0], [0.91, 0.93])])
    text = verdicts.answer(overlapping)
    assert "trains fastest" not in text and "No cell trains distinguishably fastest" in text
    assert "No cell is distinguishably most accurate" in text and "Caution" not in text
    clear = cells([("a", {"model.attention": "sdpa"}, [300.0, 301.0, 299.0], [0.95, 0.951, 0.949]),
                   ("b", {"model.attention": "vectorized"}, [150.0, 151.0, 149.0], [0.90, 0.901, 0.899])])
    text = verdicts.answer(clear)
    assert text.startswith("**a** trains fastest (300 img/s, 2.00x the runner-up **b**, 95% CI")
    assert "**a** is most accurate (95.00%, +5.00 pt over **b**" in text



def test_the_answer_warns_when_cells_differ_in_more_than_one_part():
    two = cells([("sdpa", {"train.variant": "sdpa", "model.attention": "sdpa", "model.pos_embed": "learned"},
                  [300.0, 301.0], [0.95, 0.95]),
                 ("vectorized-msa", {"train.variant": "vectorized-msa", "model.attention": "vectorized",
                                     "model.pos_embed": "sincos"}, [150.0, 151.0], [0.90, 0.90])])
    assert "Caution: these cells differ in attention, pos_embed at once" in verdicts.answer(two)



def test_trial_names_lead_with_the_model_and_are_never_cut():
    params = {"lr": 0.00213, "weight_decay": 0.0421, "label_smoothing": 0.1, "depth": 4, "dim": 64, "heads": 4}
    assert trial_name(3, params) == ("trial 3: dim=64 depth=4 heads=4 lr=0.00213 weight_decay=0.0421 "
                                     "label_smoothing=0.1")
    many = {f"x{i}": 1.23456 * i for i in range(60)}
    name = trial_name(1, many)
    assert len(name) <= NAME_LENGTH and name.endswith("more)") and "x0=0 " in name
    assert all("=" in item for item in name.removeprefix("trial 1: ").split(" (+")[0].split(" "))



def test_bench_table_fits_an_80_column_terminal_and_says_what_memory_it_shows():
    rows = [bench_row("naive-msa[naive,loop][mlp torch]", "process_peak_rss", 0.6), bench_row("sdpa", "process_peak_rss", 0.0)]
    buf = io.StringIO()
    Console(file=buf, width=80).print(rich_table(rows, BenchOptions(device="cpu")))
    lines = buf.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80, buf.getvalue()
    text = " ".join(buf.getvalue().split())
    assert "the process's peak RSS" in text and "* timed while other processes took" in text

