"""One validation layer for every numeric option: NaN, infinities, overflowing and out-of-range values are one line,
exit 2, before anything is written."""

from __future__ import annotations

import re

import pytest

from tests.helpers import TINY, refused

RUN = ["run", *TINY]


@pytest.mark.parametrize("args,needle", [
    ([*RUN, "--lr", "nan"], "lr must be a finite number"),
    ([*RUN, "--weight-decay", "-1"], "weight_decay must be in [0, inf]"),
    ([*RUN, "--label-smoothing", "1.5"], "label_smoothing must be in [0, 1)"),
    ([*RUN, "--warmup-epochs", "inf"], "warmup_epochs must be a finite number"),
    ([*RUN, "--val-split", "1"], "val_split must be in [0, 1)"),
    ([*RUN, "--time-budget", "0"], "time_budget must be in (0, inf]"),
    ([*RUN, "--time-budget", "nan"], "time_budget must be a finite number"),
    ([*RUN, "--epochs", "99999999999"], "epochs is out of range"),
    ([*RUN, "--seed", "-3"], "seed must be in [0, inf]"),
    ([*RUN, "--num-workers", "-1"], "num_workers must be in [0, 256]"),
    ([*RUN, "--dropout", "nan"], "dropout must be a finite number"),
    ([*RUN, "--progress-interval", "nan"], "--progress-interval must be a finite number"),
    (["bench", "--device", "cpu", "--repeats", "0"], "repeats must be in [1, inf]"),
    (["bench", "--device", "cpu", "--max-seconds", "-1"], "max_seconds must be in (0, inf]"),
    (["bench", "--device", "cpu", "--batch-sizes", "64,-2"], "sizes must be in [1, inf]"),
    (["sweep", *TINY, "--n-trials", "0"], "--n-trials must be in [1, inf]"),
    (["sweep", *TINY, "--timeout", "nan"], "--timeout must be a finite number"),
    (["sweep", *TINY, "--heartbeat", "0"], "--heartbeat must be in [1, 3600]"),
    (["sweep", *TINY, "--workers", "0"], "--workers must be in [1, 1024]"),
    (["report", "--experiment", "x", "--target", "2"], "--target must be in (0, 1]"),
    (["inspect", "0123abcd", "--images", "0"], "--images must be in [1, 64]"),
    (["suite", "experiments/quick.yaml", "--repeats", "0"], "--repeats must be in [1, 1000]"),
])
def test_a_number_out_of_range_is_one_line_before_anything_is_written(workdir, args, needle):
    refused(*args, needle=needle)
    assert not (workdir / "mlflow.db").exists() and not (workdir / "checkpoints").exists()


@pytest.mark.parametrize("args,needle", [
    (["run", "--resume", "../../etc", *TINY], "--resume must be an MLflow run id"),
    (["inspect", "x'; DROP TABLE runs"], "run id must be an MLflow run id"),
    (["sync", "../other"], "run id must be an MLflow run id"),
    (["report", "--experiment", "x"], "no tracking store at"),
    (["inspect", "0123456789abcdef0123456789abcdef"], "no tracking store at"),
])
def test_ids_are_checked_and_a_command_that_only_reads_makes_no_store(workdir, args, needle):
    refused(*args, needle=needle)
    assert not list(workdir.iterdir())


SUITE = "name: s\ndataset: mnist\nvariant: sdpa\n"


@pytest.mark.parametrize("body,needle", [
    ("train: 5\ngrid: {attention: [sdpa]}\n", "train must be a mapping, got int"),
    ("grid: [attention, sdpa]\n", "grid must be a mapping, got list"),
    ("grid: {attention: [{a: 1}]}\n", "grid values must be plain values"),
    ("cells: {a: 1}\n", "cells must be a list"),
    ("grid: {attention: [sdpa]}\nwhen: [3]\n", "when (each rule) must be a mapping"),
    ("grid: {seed: [" + ",".join(map(str, range(200))) + "], lr: [" + ",".join(f"0.{i + 1}" for i in range(99)) + "]}\n",
     "the grid makes 19,800 cells; at most 10,000"),
    ("x: &a [1, 1]\ny: [*a, *a]\n", "YAML aliases (*a) are not accepted"),
    ("grid: " + "[" * 20 + "]" * 20 + "\n", "nested deeper than 16 levels"),
])
def test_a_suite_file_of_the_wrong_shape_is_one_line(tmp_path, body, needle):
    from vitbench.cells import load_suite
    from vitbench.errors import VitbenchError

    path = tmp_path / "s.yaml"
    path.write_text(SUITE + body)
    with pytest.raises(VitbenchError, match=re.escape(needle)):
        load_suite(path)


def test_a_suite_file_too_large_is_refused_before_it_is_read(tmp_path):
    from vitbench.errors import VitbenchError
    from vitbench.yamlfile import MAX_BYTES, read_yaml

    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * MAX_BYTES)
    with pytest.raises(VitbenchError, match="bytes; at most"):
        read_yaml(path, "suite")


def test_an_image_folder_is_read_as_a_plain_tree(tmp_path):
    from tests.helpers import write_folder
    from vitbench.errors import VitbenchError
    from vitbench.images import folder_info

    root = write_folder(tmp_path / "imgs")
    (root / "cat" / "loop").symlink_to(root)  # back into the tree, for ever
    with pytest.raises(VitbenchError, match="is a link to a folder"):
        folder_info(f"imagefolder:{root}", (3, 32, 32))


@pytest.mark.parametrize("args,needle", [
    (["run", *TINY, "--experiment", " "], "--experiment is empty"),
    (["run", *TINY, "--run-name", "x" * 300], "--run-name has 300 characters; MLflow keeps 250 at most"),
    (["run", *TINY, "--gpus", "0"], "--gpus must be in [1, 1024]"),
    (["run", *TINY, "--dataset", "imagefolder:"], "imagefolder: needs a folder"),
    (["sweep", *TINY, "--study-name", ""], "--study-name is empty"),
])
def test_what_the_probe_found_is_refused_before_anything_is_written(workdir, args, needle):
    refused(*args, needle=needle)
    assert not list(workdir.iterdir())


def test_listing_the_warm_processes_makes_nothing_on_disk(tmp_path, monkeypatch):
    from tests.helpers import invoke

    monkeypatch.setenv("VITBENCH_WARM_DIR", str(tmp_path / "w"))
    res = invoke("warm")
    assert res.exit_code == 0 and "no warm process is running" in res.output and not (tmp_path / "w").exists()
