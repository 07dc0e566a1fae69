"""`vitbench sweep` on the CPU with tiny models: parent/child runs, resume, failures, interrupts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.helpers import sweep_args
from vitbench.cli import app


@pytest.mark.parametrize("content,needle", [
    ("lr: [1, 2", "not valid YAML"),
    ("learning_rate: {type: float, low: 1, high: 2}", "not a searchable option"),
    ("lr: {type: float, low: 0, high: 1, log: true}", "0 < low"),
    ("pool: {type: categorical, choices: []}", "non-empty list"),
])
def test_bad_space_file_is_one_line(workdir, content, needle):
    bad = workdir / "bad.yaml"
    bad.write_text(content)
    res = CliRunner().invoke(app, ["sweep", "--space", str(bad), "--device", "cpu"])
    assert res.exit_code == 2 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output



def test_sqlite_refuses_several_workers(workdir, tiny_mnist, space):
    res = CliRunner().invoke(app, sweep_args(space, "--workers", "2"))
    assert res.exit_code == 2 and "postgresql" in res.stderr and "journal:" in res.stderr

