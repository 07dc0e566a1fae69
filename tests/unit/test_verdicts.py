"""Reports that answer the question: the statistics behind a verdict, fair columns, the plots' panels."""

from __future__ import annotations

import pandas as pd
import pytest

from vitbench import report_plots, stats, verdicts


def frame(rows: list[dict]) -> pd.DataFrame:
    base = {"params.train.batch_size": "64", "params.train.precision": "fp32", "params.train.seed": "0",
            "bounded": False, "budget": "", "mem": 100.0, "experiment": "e"}
    return pd.DataFrame([{**base, **r} for r in rows])



def test_a_known_difference_is_found_real():
    c = stats.difference([0.90, 0.91, 0.92], [0.80, 0.81, 0.82])
    assert c.significant and c.estimate == pytest.approx(0.1)
    assert c.low > 0.05 and c.high < 0.15
    assert "a real difference at n = 3" in stats.describe_accuracy(c)



def test_identical_distributions_are_not_distinguishable():
    c = stats.difference([0.90, 0.91, 0.92], [0.92, 0.90, 0.91])
    assert not c.significant and c.low < 0 < c.high
    text = stats.describe_accuracy(c)
    assert "not distinguishable at n = 3" in text and "no number of repeats" in text
    near = stats.difference([0.900, 0.910, 0.920], [0.901, 0.911, 0.921])
    assert not near.significant and near.n_needed > 100  # a 0.1 pt difference under a 1 pt spread
    assert f"~{int(near.n_needed) + 1} repeats per cell" in stats.describe_accuracy(near)



def test_n_of_one_says_n_too_small():
    c = stats.difference([0.95], [0.90, 0.91])
    assert c.too_small and not c.significant
    assert "n too small" in stats.describe_accuracy(c)
    assert "n too small" in stats.describe_ratio(stats.ratio([100.0], [10.0, 11.0]), "the throughput")



def test_ratios_are_geometric_with_intervals():
    c = stats.ratio([800.0, 810.0, 790.0], [1.0, 1.01, 0.99])
    assert 790 < c.estimate < 810 and c.significant
    assert stats.describe_ratio(c, "the training throughput").startswith("800x the training throughput (95% CI")
    same = stats.ratio([157.0, 157.0], [314.0, 314.0])
    assert same.estimate == pytest.approx(0.5) and stats.describe_ratio(same, "the peak memory") == \
        "0.50x the peak memory (the same in every repeat)"



def test_axes_fold_what_a_variant_determines():
    runs = frame([{"params.train.variant": v, "params.model.attention": a, "params.train.loader": loader,
                   "thr": 1.0, "acc": 0.9}
                  for v, a in (("sdpa", "sdpa"), ("naive-msa", "naive")) for loader in ("gpu", "dataloader")])
    assert verdicts.axes(runs) == {"params.train.variant": ["attention"], "params.train.loader": []}
    found = verdicts.compare_cells("e", runs)
    assert {(v.axis, v.value, v.reference) for v in found} == {
        ("variant (with attention)", "naive-msa", "sdpa"), ("loader", "gpu", "dataloader")}
    assert all(v.where for v in found)  # each pairing holds the other axis equal



def test_bounded_runs_are_never_compared_on_accuracy_and_throughput_needs_equal_batches():
    rows = [{"params.model.attention": "naive", "thr": 90.0 + s, "acc": 0.25, "bounded": True,
             "budget": "20 s time budget"} for s in range(3)]
    rows += [{"params.model.attention": "sdpa", "thr": 65000.0 + s, "acc": 0.985} for s in range(3)]
    (v,) = verdicts.compare_cells("attention", frame(rows))
    assert (v.value, v.reference) == ("sdpa", "naive")
    assert "the training throughput" in v.text
    assert "accuracy not compared (the reference ran under a 20 s time budget)" in v.text
    rows = [{"params.model.attention": "sdpa", "params.train.batch_size": b, "thr": 1.0, "acc": 0.9}
            for b in ("64", "64", "384", "384")]
    rows[2]["params.model.attention"] = rows[3]["params.model.attention"] = "vectorized"
    (v,) = verdicts.compare_cells("e", frame(rows))
    assert "throughput not compared (batch_size" in v.text



def test_each_plot_has_one_panel_per_experiment(tmp_path):
    rows = []
    for exp, cells in (("attention", ["naive", "sdpa", "vectorized"]), ("positions", ["learned", "none"])):
        for i, c in enumerate(cells):
            rows.append({"label": f"{exp}: {c}", "experiment": exp, "short": c,
                         "budget": "20 s time budget" if c == "naive" else "", "n": 3,
                         "val_acc_mean": 0.25 if c == "naive" else 0.98 - 0.01 * i, "val_acc_std": 0.001,
                         "train_img_per_s": 90.0 if c == "naive" else 60000.0 + 1000 * i,
                         "train_img_per_s_std": 500.0, "infer_img_per_s": 50000.0, "peak_memory_mb": 150.0 + i})
    table = pd.DataFrame(rows).set_index("label")
    hist = pd.DataFrame([{"label": lab, "run_id": lab, "epoch": e, "val_acc": 0.9 + 0.01 * e,
                          "train_seconds_cum": float(e)} for lab in table.index for e in (1, 2, 3)])
    made = report_plots.comparison_plots(table, hist, tmp_path)
    assert {p.name for p in made} == {"accuracy_vs_throughput.png", "train_throughput.png", "infer_throughput.png",
                                      "peak_memory.png", "learning_curves.png"}
    assert set(made.values()) == {2}
    for p in made:
        assert p.stat().st_size > 10_000



def test_an_interval_that_holds_one_says_so_with_more_repeats_than_ran():
    from vitbench import stats

    c = stats.ratio([1.0, 40.0], [1.0, 2.0])  # 0.01x-48x: nothing to conclude
    text = stats.describe_ratio(c, "the training throughput")
    assert "not distinguishable at n = 2" in text and "repeats per cell would separate" in text
    need = int(text.split("~")[1].split()[0])
    assert need > 2
    assert "not distinguishable" not in stats.describe_ratio(stats.ratio([10.0, 10.1], [1.0, 1.01]), "x")



def test_a_random_search_is_not_reported_as_an_axis():
    """Two trials of a sweep differ in pos_embed, pool, depth and dim at once: nothing can be paired."""
    rows = [{"params.model.pos_embed": p, "params.model.pool": pool, "params.model.dim": d, "thr": 1.0 + i,
             "acc": 0.9, "mem": 10.0 * (i + 1), "tags.kind": "sweep-trial", "experiment": "sweep"}
            for i, (p, pool, d) in enumerate((("learned", "cls", "64"), ("sinusoidal", "mean", "96")))]
    assert verdicts.findings(frame(rows)) == []
    rows = [{**r, "tags.kind": "suite-run"} for r in rows]  # the same runs as a declared grid: one folded axis
    assert len(verdicts.findings(frame(rows))) == 1

