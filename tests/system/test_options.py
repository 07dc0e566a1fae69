"""An option is declared once (vitbench/config.py): a field added in a subclass of TrainConfig is a flag of `run` with
its help, a key a suite cell may set, a name a sweep space may search, and a param of the run in MLflow."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import mlflow

from tests.helpers import TINY

SCRIPT = textwrap.dedent('''
    from __future__ import annotations
    import dataclasses, sys
    from vitbench import config

    @dataclasses.dataclass(frozen=True)
    class Train(config.TrainConfig):
        mixup: float = config.option(0.0, "mix pairs of images, this Beta(a, a)", low=0.0, search=True)

    config.declare(Train)  # before any other module reads the declarations

    from typer.testing import CliRunner
    from vitbench.cells import cell_configs, load_suite
    from vitbench.cli import app
    from vitbench.study import load_space

    print(CliRunner().invoke(app, ["run", "--help"]).output)
    suite = load_suite(sys.argv[1])
    print("cell:", cell_configs(suite.cells[0], 0)[0].mixup)
    print("space:", sorted(load_space(sys.argv[2])))
    res = CliRunner().invoke(app, ["run", *sys.argv[3:]])
    print("exit:", res.exit_code, res.output)
    bad = CliRunner().invoke(app, ["run", *sys.argv[3:], "--mixup", "-1"])
    print("refused:", bad.exit_code, bad.output)
''')


def test_a_field_declared_once_reaches_the_flags_suites_sweeps_and_mlflow(workdir):
    (workdir / "add.py").write_text(SCRIPT)
    (workdir / "suite.yaml").write_text("name: s\ndataset: synthetic\ntrain: {mixup: 0.3}\ncells: [{name: a}]\n")
    (workdir / "space.yaml").write_text("mixup: {type: float, low: 0.0, high: 1.0}\n")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    out = subprocess.run(
        [sys.executable, "add.py", "suite.yaml", "space.yaml", "--dataset", "synthetic", "--max-steps", "2", *TINY,
         "--mixup", "0.2", "--tracking-uri", uri, "--experiment", "e", "-q"],
        cwd=workdir, capture_output=True, text=True, timeout=300).stdout
    assert "--mixup" in out and "mix pairs of images, this Beta(a, a) [0.0]" in " ".join(out.split()), out
    assert "cell: 0.3" in out and "space: ['mixup']" in out and "exit: 0" in out, out
    assert "refused: 2" in out and "mixup must be in [0, inf]" in out, out
    mlflow.set_tracking_uri(uri)
    run = mlflow.search_runs(experiment_names=["e"], output_format="list")[0]
    assert run.data.params["train.mixup"] == "0.2"
