"""What a first hour on a laptop can trust: busy machines flagged, a broken torch/torchvision pair named, one axis
at a time in rankings, sweeps that keep the test set out of tuning, numbers readable at a glance."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from tests.helpers import TINY, busy_machine, invoke, quiet_machine, runs
from vitbench import conditions
from vitbench.mlflow_ui import readable

RUN = ["run", "--epochs", "1", "--batch-size", "64", "--loader", "gpu", *TINY]



def test_a_busy_machine_is_measured_and_said(workdir, tiny_mnist, monkeypatch):
    with monkeypatch.context() as m:
        busy_machine(m)
        res = invoke(*RUN)
    assert res.exit_code == 0, res.output
    assert "note: the machine was busy: other processes used" in res.output
    (run,) = runs()
    assert run.data.tags["busy_machine"].startswith("the machine was busy")
    assert run.data.metrics["cond_others_cpu_share"] >= conditions.BUSY_SHARE
    assert run.data.tags["cpu"] == conditions.cpu_model() and run.data.tags["cpu_cores"] == str(conditions.cores())
    quiet_machine(monkeypatch)
    assert invoke(*RUN, "--attention", "vectorized").exit_code == 0  # a quiet one beside it
    quiet = next(r for r in runs() if r.data.params["model.attention"] == "vectorized")
    assert quiet.data.tags["busy_machine"] == "no" and "cond_load_avg_start" in quiet.data.metrics
    res = invoke("report", "--experiment", "vitbench-mnist", "--out", str(workdir / "rep"))
    assert res.exit_code == 0, res.output
    text = (workdir / "rep" / "REPORT.md").read_text()
    assert "throughput not compared (1 of the runs were timed on a busy machine)" in text
    assert "1 of 2 runs were timed on a busy machine" in text and "Training speed is not ranked" in text



def test_a_time_budget_holds_when_every_step_is_slow(workdir, tiny_mnist, monkeypatch):
    from vitbench.train import Trainer

    step = Trainer.run_step

    def slow(self, x, y):  # a machine so loaded that each step takes 0.4 s (a budget that only looked back
        # stopped after 3 of them, 1.2 s into a 1-s budget; this one stops after 2, before the third would end past it)
        time.sleep(0.4)
        return step(self, x, y)

    monkeypatch.setattr(Trainer, "run_step", slow)
    res = invoke(*RUN, "--time-budget", "1")
    assert res.exit_code == 0, res.output
    (run,) = runs()
    assert run.data.tags["stopped_by"] == "time_budget"
    # a third step would end 1.2 s in at the least: not started, however loaded the machine (its seconds vary with it)
    assert run.data.metrics["steps"] <= 2, (run.data.metrics["steps"], run.data.metrics["train_seconds"])



def test_a_default_sweep_holds_out_its_validation_data_and_never_repeats_itself(workdir, tiny_mnist):
    space = workdir / "space.yaml"
    space.write_text("lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n"
                     "weight_decay: {type: float, low: 0.0, high: 0.1}\n")
    args = ["sweep", "--space", str(space), "--epochs", "1", "--pruner", "none", *TINY]
    res = invoke(*args, "--n-trials", "2")
    assert res.exit_code == 0, res.output
    assert "trials are scored on 10% of the training set, held out" in res.output
    assert "compare in the MLflow UI:" in res.output and "on the official test set" in res.output
    trials = [r for r in runs("vitbench-sweep-mnist") if r.data.tags.get("kind") == "sweep-trial"]
    assert len(trials) == 2 and all(t.data.tags["eval_set"] != "test" for t in trials)
    tested = [t for t in trials if "test_acc" in t.data.metrics]
    assert len(tested) == 1 and "once" in tested[0].data.tags["test_eval"]
    (parent,) = [r for r in runs("vitbench-sweep-mnist") if r.data.tags.get("kind") == "sweep"]
    assert parent.data.metrics["best_test_acc"] == tested[0].data.metrics["test_acc"]
    assert {"vitbench.host", "vitbench.pid", "vitbench.pid_started", "vitbench.heartbeat"} <= set(parent.data.tags)
    assert invoke(*args, "--n-trials", "4").exit_code == 0  # resumed: its sampler draws no trial again
    trials = [r for r in runs("vitbench-sweep-mnist") if r.data.tags.get("kind") == "sweep-trial"]
    tried = {(t.data.params["train.lr"], t.data.params["train.weight_decay"]) for t in trials}
    assert len(trials) == 4 and len(tried) == 4, tried


def test_metrics_are_stored_at_the_precision_they_carry(workdir, tiny_mnist):
    assert invoke(*RUN).exit_code == 0
    (run,) = runs()
    m = run.data.metrics
    assert m["final_val_acc"] == float(f"{m['final_val_acc']:.5g}")
    assert m["train_images_per_sec_mean"] == round(m["train_images_per_sec_mean"], 1)
    history = MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert all(h.value == float(f"{h.value:.5g}") for h in history)
    assert readable({"val_acc": 0.9629999995231628, "x_per_sec": 177.994373, "param_count": 5717258.0}) == {
        "val_acc": 0.963, "x_per_sec": 178.0, "param_count": 5717258.0}

