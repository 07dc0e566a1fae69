"""The record never lies about a run: secrets masked, an absent server named at once, dead runs ended."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.helpers import TINY, runs
from vitbench.cli import app


def test_a_bad_storage_url_error_hides_its_password(workdir, tiny_mnist):
    res = CliRunner().invoke(app, ["sweep", "--storage", "postgresql+psycopg://ann:s3cr3t@127.0.0.1:1/optuna",
                                   "--workers", "2", "--n-trials", "1", *TINY])
    assert res.exit_code == 2 and "s3cr3t" not in res.output and "ann:***@" in res.stderr, res.output



def test_sync_corrects_a_run_the_reaper_ended_while_its_records_waited(workdir, tiny_mnist):
    """Another host's reaper cannot see the outbox: it ends the run FAILED 'process gone'. `sync` then
    leaves the run's true record: FINISHED, without that error."""
    from vitbench.outbox import sync

    res = CliRunner().invoke(app, ["run", "--epochs", "1", "--max-steps", "3", "--quiet", *TINY])
    assert res.exit_code == 0, res.output
    (run,) = runs()
    rid = run.info.run_id
    client = MlflowClient()
    client.set_tag(rid, "error", "process gone: no heartbeat from elsewhere since ...")
    client.set_terminated(rid, "FAILED")
    unsent = workdir / "checkpoints" / rid / "unsent.jsonl"
    unsent.write_text('{"metrics": {"late": 1.0}, "step": 3, "time": 1}\n{"end": "FINISHED", "time": 2}\n')
    assert sync(rid, workdir / "checkpoints", log=lambda s: None) == 2
    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags and run.data.metrics["late"] == 1.0



def test_a_dataset_logged_by_another_process_at_the_same_moment_does_not_fail_the_run(workdir, monkeypatch):
    """A suite's workers start their first runs together and log the same dataset into one experiment: MLflow's SQL
    store looks for it, then inserts it, so one insert broke the unique key and its run FAILED (seen with three
    workers on the CPU). Its error, once, before the real call: the dataset is linked to the run all the same;
    any other error is raised at once."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.exceptions import MlflowException

    from vitbench import mlflow_ui

    real, calls = mlflow.log_inputs, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                  "datasets.name, datasets.digest")
        return real(*args, **kwargs)

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    source = resolve_dataset_source(str(workdir))
    datasets = [MetaDataset(source, name="MNIST:train", digest="abc"), MetaDataset(source, name="MNIST:test",
                                                                                    digest="def")]
    monkeypatch.setattr(mlflow, "log_inputs", racing)
    with mlflow.start_run() as run:
        mlflow_ui.log_inputs(datasets, contexts=["training", "evaluation"])
    logged = MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert len(calls) == 2 and sorted(d.dataset.name for d in logged) == ["MNIST:test", "MNIST:train"]

    def refused(*args, **kwargs):
        calls.append(1)
        raise MlflowException("the store is read-only")

    calls.clear()
    monkeypatch.setattr(mlflow, "log_inputs", refused)
    with mlflow.start_run(), pytest.raises(MlflowException, match="read-only"):
        mlflow_ui.log_inputs(datasets, contexts=["training", "evaluation"])
    assert len(calls) == 1

