"""Suites, reports and inspect on the CPU: the report's numbers must be the runs' numbers."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import REPO
from tests.helpers import invoke
from vitbench.cells import load_suite
from vitbench.errors import VitbenchError


@pytest.mark.parametrize("name", ["attention", "patchify", "positions", "loaders", "tutorials", "precision", "quick",
                                  "fp8", "fp8_10s", "fp8_strong"])
def test_shipped_suites_load(name):
    suite = load_suite(REPO / "experiments" / f"{name}.yaml")
    assert suite.cells and suite.repeats >= 1



def test_a_suite_takes_a_recipe_under_its_own_options(workdir):
    """`recipe:` gives a suite what `run --recipe` gives a run, the suite's options on top; a grid axis or a cell may
    name its own recipe, and `when` may match on it."""
    from dataclasses import replace

    from vitbench.cells import cell_configs
    from vitbench.options import Options, configs
    from vitbench.recipes import recipe_options

    f = workdir / "s.yaml"
    f.write_text("recipe: mnist-10s\ndataset: mnist\ntrain: {epochs: 2}\n"
                 "grid: {recipe: [mnist-10s, mnist-fast], attention: [sdpa]}\n"
                 "cells: [{name: mine, lr: 3.0e-3}]\n"
                 "when: [{match: {recipe: mnist-fast}, set: {batch_size: 128}}]\n")
    suite = load_suite(f)
    got = {c.name: (c.recipe, cell_configs(c, 1)) for c in suite.cells}

    def expected(recipe: str, **own) -> tuple:
        o = recipe_options(recipe).then(Options(dataset="mnist", epochs=2, **own))
        return configs(replace(o, seed=(o.seed or 0) + 1))

    assert got["recipe=mnist-10s,attention=sdpa"] == ("mnist-10s", expected("mnist-10s", attention="sdpa"))
    assert got["recipe=mnist-fast,attention=sdpa"] == ("mnist-fast",
                                                      expected("mnist-fast", attention="sdpa", batch_size=128))
    assert got["mine"] == ("mnist-10s", expected("mnist-10s", lr=3.0e-3))
    cfg, model_cfg = got["mine"][1]
    assert (cfg.epochs, model_cfg.patch_drop, model_cfg.dim, model_cfg.pool) == (2, 0.25, 128, "mean")  # suite, 10s
    shipped = load_suite(REPO / "experiments" / "fp8_10s.yaml")
    assert [cell_configs(c, 0) for c in shipped.cells] == [
        configs(recipe_options("mnist-10s").then(Options(dataset="mnist", variant="sdpa", precision=p)))
        for p in ("bf16", "fp8")]

    f.write_text("recipe: mnist-budget\ndataset: mnist\ngrid: {time_budget: [1, 300]}\n")  # each budget its tier
    assert [cell_configs(c, 0)[1].dim for c in load_suite(f).cells] == [64, 128]
    f.write_text("recipe: mnist-budget\ndataset: mnist\ngrid: {attention: [sdpa]}\n")  # the budget from --set
    assert [cell_configs(c, 0)[1].dim for c in load_suite(f, {"time_budget": 300}).cells] == [128]
    with pytest.raises(VitbenchError, match=r"give --time-budget SECONDS \(in a suite: time_budget\)"):
        load_suite(f)

    f.write_text("recipe: mnist-1s\ngrid: {attention: [sdpa]}\n")
    res = invoke("suite", f)
    assert res.exit_code == 2 and "unknown recipe 'mnist-1s'; valid: mnist-10s, mnist-budget, mnist-fast" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1



def test_bad_suite_file(workdir):
    bad = workdir / "bad.yaml"
    bad.write_text("grid: {attention: [sdpa, flash9]}\n")
    res = invoke("suite", bad)
    assert res.exit_code == 2 and "valid: naive, vectorized" in res.stderr
    bad.write_text("grid: {learning_rate: [1]}\n")
    assert "'learning_rate' is not an option" in invoke("suite", bad).stderr



def test_rollout_rows_are_distributions():
    import torch

    from vitbench import create_model
    from vitbench.inspect_run import attention_maps, rollout

    for variant in ("sdpa", "naive-msa"):
        model = create_model(variant, depth=2)
        maps = attention_maps(model, torch.randn(2, 1, 28, 28))
        assert len(maps) == 2 and maps[0].shape == (2, 4, 17, 17)
        r = rollout(maps)
        torch.testing.assert_close(r.sum(-1), torch.ones(2, 17))
    # every attention implementation sees the same maps
    a, b = (create_model("sdpa", attention=i, depth=1) for i in ("sdpa", "naive"))
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 28, 28)
    torch.testing.assert_close(attention_maps(a, x)[0], attention_maps(b, x)[0])



def test_a_cell_of_one_run_shows_no_spread():
    from vitbench.report import _fmt_table

    table = pd.DataFrame({"n": [1, 3], "val_acc_mean": [0.9, 0.95], "val_acc_std": [0.0, 0.01],
                          "train_img_per_s": [100.0, 200.0], "train_img_per_s_std": [0.0, 5.0],
                          "infer_img_per_s": [1.0, 1.0], "peak_memory_mb": [10.0, 10.0], "memory_source": ["", ""],
                          "params": [1, 1], "train_seconds": [1.0, 1.0], "time_to_target_s": [1.0, 1.0]},
                         index=["one", "three"])
    text = _fmt_table(table, bounded=False)
    assert "0.9000 (n = 1)" in text and "± 0.0000" not in text and "0.9500 ± 0.0100" in text

