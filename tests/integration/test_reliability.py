"""Nothing lost, nothing leaked: corrupt checkpoints, a full disk, first commands racing on a new store, paths
that reach outside where they should, and bad files -- each a one-line error, nothing half-written; a worker
killed as its run began leaves no run RUNNING.
(A server lost mid-run and the password in a tracking URL: tests/system/test_tracking.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import TINY, invoke, one_line_error, runs, write_folder


def trained_run(workdir) -> str:
    res = invoke("run", "--epochs", "2", "--max-steps", "8", "--batch-size", "64", "--quiet", *TINY)
    assert res.exit_code == 0, res.output
    (run,) = runs()
    return run.info.run_id



def test_a_garbled_checkpoint_is_refused_on_resume_and_inspect(workdir, tiny_mnist):
    rid = trained_run(workdir)
    ckpt = workdir / "checkpoints" / rid / "last.pt"
    assert (ckpt.parent / "last.pt.sha256").read_text().split()[1] == "last.pt"  # sha256sum -c reads it
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = os.urandom(4096)  # inside the weights
    ckpt.write_bytes(bytes(data))
    err = one_line_error(invoke("run", "--resume", rid), f"checkpoint checkpoints/{rid}/last.pt is corrupt")
    assert "nothing was loaded" in err
    assert MlflowClient().get_run(rid).data.metrics["steps"] == 8  # nothing trained
    one_line_error(invoke("inspect", rid, "--out", str(workdir / "i")), "is corrupt")
    (ckpt.parent / "last.pt.sha256").unlink()
    one_line_error(invoke("run", "--resume", rid), "has no checksum")



def test_a_checkpoint_from_the_store_comes_with_its_checksum_and_a_failed_download_leaves_nothing(workdir,
                                                                                                  tiny_mnist):
    rid = trained_run(workdir)
    local = workdir / "checkpoints" / rid
    local.rename(workdir / "elsewhere")  # another machine: only the store has it
    res = invoke("run", "--resume", rid, "--epochs", "3", "--quiet")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in local.iterdir() if p.name.startswith(("last", ".download"))) == \
        ["last.pt", "last.pt.sha256"]
    err = one_line_error(invoke("run", "--resume", "0" * 32, "--quiet"), "no checkpoint for run")
    assert "0" * 32 in err and not (workdir / "checkpoints" / ("0" * 32)).exists()



def test_nothing_is_written_where_it_should_not_be(workdir, tiny_mnist):
    one_line_error(invoke("sweep", "--storage", f"journal:{workdir}/no/such/dir/x.journal", "--n-trials", "1", *TINY),
                   "folder " + str(workdir / "no/such/dir") + " does not exist")
    assert not (workdir / "no").exists()
    trained_run(workdir)
    res = invoke("report", "--experiment", "../../../vitbench-mnist")
    assert res.exit_code == 2  # no such experiment; and where a report would go is confined:
    from vitbench.report import default_out

    assert default_out("../../../x").parent == Path("reports") and default_out("a,b") == Path("reports/a+b")
    assert default_out("../../../x").name.startswith("_.._.._x-") and default_out("a b") != default_out("a_b")
    res = invoke("report", "--experiment", "vitbench-mnist")
    assert res.exit_code == 0, res.output
    assert (workdir / "reports" / "vitbench-mnist" / "REPORT.md").exists()
    assert not (workdir / "results").exists()



def test_a_corrupt_image_is_named_before_any_run(workdir):
    root = write_folder(workdir / "pets", per_class=6)
    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    err = one_line_error(invoke("run", "--dataset", f"imagefolder:{root}", "--preset", "cifar10", "--max-steps", "2",
                                "--batch-size", "8", *TINY), f"cannot read image {bad}")
    assert "UnidentifiedImageError" in err
    assert runs("vitbench-imagefolder-pets") == []



@pytest.mark.parametrize("args,needle", [
    (["--checkpoint-dir", "/proc/nope"], "could not write checkpoint folder /proc/nope"),
    (["--batch-size", "10000000"], "batch size 10,000,000 is larger than the training set (512 images)"),
])
def test_impossible_runs_are_refused_before_a_run_exists(workdir, tiny_mnist, args, needle):
    one_line_error(invoke("run", "--epochs", "1", *args, *TINY), needle)
    assert runs() == []


def test_a_worker_killed_as_its_run_began_leaves_no_run_running(workdir):
    """A worker SIGKILLed after MLflow created its run but before the trial learnt the run's id: the run carries
    the trial and the process from its creation, so the trial's reaper ends it FAILED."""
    import mlflow
    import optuna

    from vitbench.study import on_stale_trial
    from vitbench.tracking import tracked_run

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    study = optuna.create_study(study_name="suite:s", storage=f"sqlite:///{workdir / 'q.db'}")
    trial = study.ask()
    exp = mlflow.create_experiment("s")
    with tracked_run(exp, "run", tags={"optuna.study": "suite:s", "optuna.trial": str(trial.number)}) as rid:
        client = MlflowClient()
        assert client.get_run(rid).data.tags["vitbench.pid"]  # the process's tags came with the run
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # the worker's heartbeat stopped here
        on_stale_trial(study, study.trials[trial.number])
        run = client.get_run(rid)
        assert run.info.status == "FAILED" and run.data.tags["error"].startswith("worker died")
        mlflow.end_run()


def test_a_worker_beats_from_the_moment_it_claims_a_run(workdir, monkeypatch):
    """A worker that claims a queued run is named on it at once: while it is still loading the suite (slow on a
    busy machine), a worker on another host that looks at the queue sees its heartbeat, not a dead worker."""
    import time

    import optuna

    from vitbench import cells, liveness
    from vitbench.progress import Display, Every
    from vitbench.study import dead_worker
    from vitbench.suite import open_queue, work_cells

    study = open_queue("s", f"journal:{workdir / 'q.journal'}")
    study.enqueue_trial({}, user_attrs={"suite.key": "c#0#", "suite.cell": "c", "suite.repeat": 0, "suite.sets": {},
                                        "suite.enqueued": time.time()})
    seen = []

    def slow_load(path, sets):
        time.sleep(3.5)  # more than 3 heartbeats of 1 s
        (claimed,) = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
        monkeypatch.setattr(liveness, "host", lambda: "another-host")  # judged from elsewhere: by heartbeat only
        seen.append(dead_worker(claimed, heartbeat=1))
        raise RuntimeError("enough")

    monkeypatch.setattr(cells, "load_suite", slow_load)
    with pytest.raises(RuntimeError, match="enough"):
        work_cells(workdir / "s.yaml", study, "cpu", None, None, Display("off"), Every(), "", 1, reap=False)
    assert seen == [None]


def test_a_retried_run_is_judged_by_its_own_worker_not_the_dead_one_before(workdir):
    """A run retried after its worker died carries that worker's host, PID, last heartbeat and run id (Optuna copies
    a failed trial's attributes): the live worker that claims it is not taken for dead, and its own run, not the
    dead worker's, is the one a reaper would end."""
    import time

    import mlflow
    import optuna

    from vitbench.study import dead_worker, on_stale_trial, trial_run
    from vitbench.suite import open_queue
    from vitbench.tracking import tracked_run

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    study = open_queue("s", f"journal:{workdir / 'q.journal'}")
    study.enqueue_trial({}, user_attrs={"suite.key": "c#0#"})
    first = study.ask()
    for k, v in {"worker.host": "gone", "worker.pid": 1, "worker.heartbeat": time.time() - 600,
                 "worker.trial": first.number, "mlflow_run_id": "0" * 32}.items():  # as its worker wrote them
        first.set_user_attr(k, v)
    study.tell(first.number, state=optuna.trial.TrialState.FAIL)
    on_stale_trial(study, study.trials[first.number])
    retried = study.ask()
    claimed = study.trials[retried.number]
    assert claimed.user_attrs["worker.host"] == "gone"  # inherited
    assert dead_worker(claimed, heartbeat=10) is None
    with tracked_run(mlflow.create_experiment("s"), "run", tags={"optuna.study": "suite:s",
                                                                  "optuna.trial": str(retried.number)}) as rid:
        assert trial_run(study, claimed) == rid
