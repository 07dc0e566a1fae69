"""Reports that answer the question: the statistics behind a verdict, fair columns, the plots' panels."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from vitbench.cli import app


def test_report_separates_bounded_runs_and_states_findings(workdir, tiny_mnist):
    common = ["run", "--epochs", "1", "--batch-size", "64", "--depth", "1", "--dim", "32", "--heads", "2",
              "--mlp-dim", "64", "--device", "cpu", "--experiment", "fair", "--quiet"]
    for seed in ("0", "1"):
        assert CliRunner().invoke(app, [*common, "--seed", seed]).exit_code == 0
        res = CliRunner().invoke(app, [*common, "--seed", seed, "--attention", "vectorized", "--max-steps", "2"])
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["report", "--experiment", "fair", "--out", str(workdir / "r")])
    assert res.exit_code == 0, res.output
    text = (workdir / "r" / "REPORT.md").read_text()
    assert text.startswith("# fair on mnist: which way is faster, lighter and as accurate?")
    assert "**Answer:**" in text.split("\n\n")[1]
    findings = text[text.index("## Findings"):text.index("## Fully trained cells")]
    assert "**vectorized vs sdpa**" in findings and "accuracy not compared (it ran under a 2-step budget)" in findings
    full = text[text.index("## Fully trained cells"):text.index("## Bounded runs")]
    bounded = text[text.index("## Bounded runs"):text.index("## Plots")]
    assert "attention=vectorized" not in full and "attention=vectorized" in bounded and "2-step budget" in bounded
    summary = pd.read_csv(workdir / "r" / "summary.csv", index_col=0)
    assert set(summary["budget"].fillna("")) == {"", "2-step budget"}

