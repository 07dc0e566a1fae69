"""Nothing lost, nothing leaked: corrupt checkpoints, a full disk, first commands racing on a new store, paths
that reach outside where they should, and bad files -- each a one-line error, nothing half-written.
(A server lost mid-run and the password in a tracking URL: tests/test_tracking.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.helpers import TINY, invoke, runs, write_folder


def one_line_error(res, needle: str) -> str:
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert "Traceback" not in res.output
    return err


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


@pytest.fixture
def tiny_disk(workdir):
    """A 64 KiB filesystem (tmpfs), too small for a checkpoint of the tiny model."""
    mount = workdir / "tiny-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_a_failed_run_and_no_partial_file(workdir, tiny_mnist, tiny_disk):
    res = invoke("run", "--epochs", "2", "--batch-size", "64", "--checkpoint-dir", str(tiny_disk), "--quiet", *TINY)
    err = one_line_error(res, "disk full: could not write checkpoint")
    assert str(tiny_disk) in err and "No space left on device" in err, err
    (run,) = runs()
    assert run.info.status == "FAILED" and "disk full" in run.data.tags["error"]
    # what was recorded before the checkpoint stays recorded: the first epoch's metrics
    assert [m.step for m in MlflowClient().get_metric_history(run.info.run_id, "val_acc")] == [1]
    assert not [p for p in tiny_disk.rglob("*") if p.name.endswith(".tmp")]


def test_first_commands_started_together_on_a_new_store_all_succeed(workdir):
    """MLflow's schema migration raced itself: `table _alembic_tmp_experiments already exists`."""
    start = time.time() + 15  # after every interpreter has imported vitbench and MLflow
    code = ("import sys, time\nfrom vitbench.tracking import connect, get_experiment_id\n"
            f"while time.time() < {start}: time.sleep(0.001)\n"
            "connect(); print(get_experiment_id('vitbench-mnist'))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=workdir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert len({o.strip().splitlines()[-1] for o in outs}) == 1, outs  # one experiment, the same for all


def test_nothing_is_written_where_it_should_not_be(workdir, tiny_mnist):
    one_line_error(invoke("sweep", "--storage", f"journal:{workdir}/no/such/dir/x.journal", "--n-trials", "1", *TINY),
                   "folder " + str(workdir / "no/such/dir") + " does not exist")
    assert not (workdir / "no").exists()
    trained_run(workdir)
    res = invoke("report", "--experiment", "../../../vitbench-mnist")
    assert res.exit_code == 2  # no such experiment; and where a report would go is confined:
    from vitbench.report import default_out

    assert default_out("../../../x") == Path("reports/_.._.._x") and default_out("a,b") == Path("reports/a+b")
    res = invoke("report", "--experiment", "vitbench-mnist")
    assert res.exit_code == 0, res.output
    assert (workdir / "reports" / "vitbench-mnist" / "REPORT.md").exists()
    assert not (workdir / "results").exists()


@pytest.mark.parametrize("yaml,needle", [
    ("name: s\nrepeats: two\ngrid: {attention: [sdpa]}\n", "repeats must be a positive whole number, got 'two'"),
    ("name: s\ntrain: {batch_size: \"eight\"}\ngrid: {attention: [sdpa]}\n", "batch_size must be int, got 'eight'"),
    ("name: s\ntrain: {lr: 1e-3}\ngrid: {attention: [sdpa]}\n", "write 1.0e-3"),
])
def test_a_suite_file_with_a_bad_value_is_one_line(workdir, tiny_mnist, yaml, needle):
    (workdir / "s.yaml").write_text(yaml)
    one_line_error(invoke("suite", "s.yaml", "--device", "cpu"), needle)
    assert not (workdir / "mlflow.db").exists()


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
