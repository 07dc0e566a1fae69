"""Faults one step away from the promised ones: a checkpoint killed mid-save, secrets in every URL form, a report
that uploads only what it wrote, sweeps that never repeat a configuration."""

from __future__ import annotations


def test_sync_works_as_printed_from_the_store_the_run_recorded(workdir, monkeypatch):
    """The run's store went away; `vitbench sync RUN` as the run printed it, with no --tracking-uri, sends to the
    store the run was recorded in and creates no ./mlflow.db."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from tests.helpers import invoke
    from vitbench.outbox import Outbox

    uri = f"sqlite:///{workdir / 'team.db'}"
    mlflow.set_tracking_uri(uri)
    rid = MlflowClient().create_run(MlflowClient().create_experiment("e")).info.run_id
    box = Outbox(workdir / "ckpt", uri, rid)
    box.offline = True
    box.metrics({"val_acc": 0.5}, step=1)
    box.end("FINISHED")
    printed = box.sync_command()
    assert printed == f"vitbench sync {rid} --checkpoint-dir {workdir / 'ckpt'}"
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'elsewhere.db'}")  # this process's store and $MLFLOW_TRACKING_URI
    res = invoke(*printed.split()[1:])
    assert res.exit_code == 0, res.output
    assert not (workdir / "mlflow.db").exists()
    mlflow.set_tracking_uri(uri)
    run = MlflowClient().get_run(rid)
    assert run.info.status == "FINISHED" and run.data.metrics["val_acc"] == 0.5
    other = invoke("sync", "0123456789abcdef", "--checkpoint-dir", str(workdir / "ckpt"))
    assert other.exit_code == 2 and "nothing to send for run 0123456789abcdef" in other.output



def test_report_uploads_only_what_it_wrote(workdir, tiny_mnist):
    from mlflow.tracking import MlflowClient

    from tests.helpers import TINY, invoke, runs

    assert invoke("run", "--epochs", "1", *TINY).exit_code == 0
    out = workdir / "rep"
    out.mkdir()
    (out / "private_notes.md").write_text("not for the store")
    (out / "other.csv").write_text("a,b\n")
    assert invoke("report", "--experiment", "vitbench-mnist", "--out", str(out)).exit_code == 0
    (report,) = [r for r in runs() if r.data.tags.get("kind") == "report"]
    uploaded = {a.path for a in MlflowClient().list_artifacts(report.info.run_id)}
    assert "REPORT.md" in uploaded and "summary.csv" in uploaded
    assert "private_notes.md" not in uploaded and "other.csv" not in uploaded



def test_a_run_still_running_elsewhere_is_not_continued_by_a_second_writer(workdir, tiny_mnist):
    from mlflow.tracking import MlflowClient

    from tests.helpers import TINY, invoke, one_line_error, runs
    from vitbench.liveness import process_tags

    assert invoke("run", "--epochs", "1", *TINY).exit_code == 0
    (run,) = runs()
    client = MlflowClient()
    client.update_run(run.info.run_id, status="RUNNING")  # as while its process (this one, alive) trains it
    for k, v in process_tags().items():
        client.set_tag(run.info.run_id, k, v)
    one_line_error(invoke("run", "--resume", run.info.run_id, "--epochs", "2"), "is still running (pid")
    assert client.get_run(run.info.run_id).info.status == "RUNNING" and len(runs()) == 1
