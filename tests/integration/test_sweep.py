"""`vitbench sweep` on the CPU with tiny models: parent/child runs, resume, failures, interrupts."""

from __future__ import annotations

import re

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.helpers import SPACE, sweep_args, sweep_runs
from vitbench.cli import app


def test_sweep_parent_children_and_resume(workdir, tiny_mnist, space):
    res = CliRunner().invoke(app, sweep_args(space, "--n-trials", "4", "--live-every", "2"))
    assert res.exit_code == 0, res.output
    assert "best trial" in res.output
    assert re.search(r"trial 0: lr=[^:]*: [\d,]+ img/s -> \d+ epochs? \([\d,]+ steps\) ~", res.output), res.output  # per trial
    assert re.search(r"study .*: trial \d+/\d+ \(\d+%\) \| ETA", res.output), res.output
    (parent,), children = sweep_runs(workdir)
    assert len(children) == 4 and parent.info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == [0, 1, 2, 3]
    for c in children:
        assert c.info.status == "FINISHED" and "val_acc" in c.data.metrics and "train.lr" in c.data.params
    hist = MlflowClient().get_metric_history(children[0].info.run_id, "val_acc")
    assert [h.step for h in hist] == [1, 2]
    assert {"study_name", "storage", "space", "n_trials"} <= set(parent.data.params)
    assert "best.lr" in parent.data.tags and "best_val_acc" in parent.data.metrics
    # named by what they tried, the parent describing the study, Optuna's objective named
    assert all(re.fullmatch(rf"trial {c.data.tags['optuna.trial']}: lr=\S+ batch_size=\d+", c.info.run_name)
               for c in children), [c.info.run_name for c in children]
    assert "Best: trial" in parent.data.tags["mlflow.note.content"] and "maximize val_acc" in parent.data.tags[
        "mlflow.note.content"]
    import optuna

    study = optuna.load_study(study_name="sdpa-mnist-val_acc", storage=f"sqlite:///{workdir / 'optuna.db'}")
    assert study.metric_names == ["val_acc"]
    arts = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/optimization_history.png", "sweep/param_importances.png", "sweep/parallel_coordinate.png"} <= arts
    # The same command again: the study already has its 4 trials.
    res = CliRunner().invoke(app, sweep_args(space, "--n-trials", "4"))
    assert res.exit_code == 0 and "4 of 4 trials done" in res.output
    parents, children = sweep_runs(workdir)
    assert len(parents) == 1 and len(children) == 4
    # Asking for 5 adds exactly one.
    assert CliRunner().invoke(app, sweep_args(space, "--n-trials", "5")).exit_code == 0
    assert len(sweep_runs(workdir)[1]) == 5



def test_oom_and_nan_trials_are_recorded_and_the_sweep_completes(workdir, tiny_mnist, space, monkeypatch):
    import vitbench.runner as runner

    real_train = runner.train

    def train_with_oom(cfg, *a, **k):
        if cfg.lr == pytest.approx(0.00123):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_train(cfg, *a, **k)

    monkeypatch.setattr(runner, "train", train_with_oom)
    study = optuna.create_study(study_name="faults", storage=f"sqlite:///{workdir / 'optuna.db'}", direction="maximize")
    study.enqueue_trial({"lr": 0.00123, "batch_size": 32})  # forced OOM
    study.enqueue_trial({"lr": 1.0e30, "batch_size": 32})  # a real NaN loss
    study.enqueue_trial({"lr": 3.0e-3, "batch_size": 32})  # a healthy one
    # ...but 1e30 lies outside the space: widen it for this study
    (workdir / "space.yaml").write_text(SPACE.replace("high: 1.0e-2", "high: 1.0e31"))
    res = CliRunner().invoke(app, sweep_args(space, "--n-trials", "3", "--study-name", "faults", "--warmup-epochs", "0"))
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="faults", storage=f"sqlite:///{workdir / 'optuna.db'}").trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED", "COMPLETE"]
    assert "out of memory" in trials[0].user_attrs["prune_reason"]
    assert "NaN" in trials[1].user_attrs["prune_reason"]
    _, children = sweep_runs(workdir)
    by_trial = {c.data.tags["optuna.trial"]: c for c in children}
    assert by_trial["0"].info.status == "FAILED" and "OutOfMemoryError" in by_trial["0"].data.tags["error"]
    assert by_trial["1"].info.status == "FAILED" and "NaN" in by_trial["1"].data.tags["error"]
    assert by_trial["2"].info.status == "FINISHED"



def test_multi_objective_gives_a_pareto_front(workdir, tiny_mnist, space):
    res = CliRunner().invoke(app, sweep_args(space, "--n-trials", "3", "--objective", "val_acc,train_images_per_sec"))
    assert res.exit_code == 0, res.output
    assert "cannot prune multi-objective" in res.output and "Pareto front" in res.output
    (parent,), _ = sweep_runs(workdir)
    arts = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/pareto_front.png", "sweep/pareto_front.csv"} <= arts



def test_a_pruned_trial_ends_killed_as_mlflow_and_optuna_show_it(workdir, tiny_mnist):
    """Pruned: the run KILLED (as MLflow's own Optuna storage ends one), ``optuna.state`` PRUNED, stopped_by pruned,
    not taken for a finished result; the trial number a param; the pruner's start-up and warm-up are flags; the
    sweep says how to watch the study in optuna-dashboard."""
    space = workdir / "space.yaml"
    space.write_text("lr: {type: float, low: 1.0e-8, high: 1.0e-2, log: true}\n")
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    study = optuna.create_study(study_name="pruned", storage=storage, direction="maximize")
    study.enqueue_trial({"lr": 3.0e-3})  # learns
    study.enqueue_trial({"lr": 1.0e-8})  # does not: below the first at epoch 1, pruned there
    res = CliRunner().invoke(app, sweep_args(space, "--n-trials", "2", "--study-name", "pruned", "--warmup-epochs",
                                             "0", "--pruner-startup-trials", "1", "--pruner-warmup-epochs", "0"))
    assert res.exit_code == 0, res.output
    assert "optuna-dashboard sqlite:///optuna.db (pip install 'vitbench[dashboard]')" in res.output
    assert [t.state.name for t in optuna.load_study(study_name="pruned", storage=storage).trials] == ["COMPLETE",
                                                                                                     "PRUNED"]
    _, children = sweep_runs(workdir)
    by_trial = {c.data.params["optuna.trial_number"]: c for c in children}
    done, pruned = by_trial["0"], by_trial["1"]
    assert done.info.status == "FINISHED" and done.data.tags["optuna.state"] == "COMPLETE"
    assert pruned.info.status == "KILLED" and pruned.data.tags["optuna.state"] == "PRUNED"
    assert pruned.data.tags["stopped_by"] == "pruned" and "pruned at epoch 1" in pruned.data.tags["stopped_early"]
    assert [h.step for h in MlflowClient().get_metric_history(pruned.info.run_id, "val_acc")] == [1]  # Optuna's view


def test_a_timm_model_is_swept_over_training_options_only(workdir, tiny_mnist):
    """`sweep --variant timm:NAME`: trials of timm's model over a space of training options; a space that varies
    vitbench's parts or sizes, or a patch size the model does not have, is one line before any study exists."""
    pytest.importorskip("timm")
    from tests.helpers import refused

    space = workdir / "space.yaml"
    space.write_text("lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    args = ["sweep", "--variant", "timm:test_resnet", "--dataset", "mnist", "--epochs", "1", "--max-steps", "3",
            "--device", "cpu", "--n-trials", "2"]
    res = CliRunner().invoke(app, [*args, "--space", str(space)])
    assert res.exit_code == 0, res.output
    _, children = sweep_runs(workdir)
    assert len(children) == 2 and all(c.data.params["train.variant"] == "timm:test_resnet" for c in children)
    refused(*args, "--space", "default", needle="a part or size of vitbench's ViT")
    space.write_text("patch_size: {type: categorical, choices: [4, 7]}\n")  # a CNN cuts no patches
    refused(*args, "--space", str(space), needle="timm:test_resnet cuts no patches")
    assert not (workdir / "optuna.db").stat().st_size == 0
