"""Every flag of `vitbench run` / `sweep` reaches the config field it names, with the field's type."""

from __future__ import annotations

import inspect
import typing
from dataclasses import fields

import pytest

from vitbench import cli
from vitbench.models import ViTConfig
from vitbench.train import TrainConfig

COMMAND_OPTIONS = {  # flags that steer the command rather than set a config field
    "ctx", "variant", "dataset", "preset", "tracking_uri", "experiment", "run_name", "resume", "checkpoint_dir",
    "system_metrics", "recipe", "quiet", "progress_interval", "live_every", "gpus", "n_trials", "timeout", "space",
    "objective", "pruner", "storage", "study_name", "workers", "heartbeat", "worker"}


def flag_types(command) -> dict[str, set[type]]:
    """Each parameter of a Typer command and the Python types its value may take (None dropped)."""
    out = {}
    for name, p in inspect.signature(command, eval_str=True).parameters.items():
        base = typing.get_args(p.annotation)[0] if typing.get_origin(p.annotation) is typing.Annotated else p.annotation
        out[name] = {t for t in (typing.get_args(base) or (base,)) if t is not type(None)}
    return out


@pytest.mark.parametrize("command", [cli.run, cli.sweep])
def test_every_flag_sets_the_config_field_of_its_name(command):
    train = {f.name: f.type for f in fields(TrainConfig)}
    model = {f.name: f.type for f in fields(ViTConfig)}
    for name, types in flag_types(command).items():
        if name in COMMAND_OPTIONS:
            continue
        assert (name in cli.TRAIN_KEYS) != (name in cli.MODEL_KEYS), f"--{name} reaches no config field"
        field_type = (train if name in cli.TRAIN_KEYS else model)[name]
        assert all(t.__name__ in str(field_type) for t in types), f"--{name} is {types}, the field {field_type}"
    assert set(cli.TRAIN_KEYS) | set(cli.MODEL_KEYS) <= set(flag_types(command))


def test_the_keys_name_config_fields():
    assert set(cli.TRAIN_KEYS) <= {f.name for f in fields(TrainConfig)}
    assert set(cli.MODEL_KEYS) <= {f.name for f in fields(ViTConfig)}


def test_the_names_the_cli_offers_are_the_registries():
    """vitbench.names (torch-free, what the CLI's help is made of) against the modules that implement each name."""
    from vitbench import bench, data, names
    from vitbench.models.attention import ATTENTION
    from vitbench.models.patchify import PATCHIFY
    from vitbench.models.registry import PRESETS

    assert names.ATTENTION == tuple(ATTENTION) and names.PATCHIFY == tuple(PATCHIFY)
    assert names.DATASETS == tuple(data.DATASETS) and set(names.PRESETS) == set(PRESETS)
    assert names.PEERS == bench.PEERS


def test_help_lists_every_choice_and_is_never_cut(tmp_path):
    """Help piped to a file: wrapped at 80 columns, whole words, every attention implementation and dataset."""
    import subprocess
    import sys

    from tests.conftest import REPO
    from vitbench import names

    out = subprocess.run([sys.executable, "-m", "vitbench", "run", "--help"], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "80"}).stdout
    assert max(len(line) for line in out.splitlines()) <= 80 and "…" not in out and "<bool>" not in out
    flat = " ".join(out.split())
    for name in (*names.ATTENTION, *names.DATASET_FORMS, *names.PRESETS):
        assert name in flat.replace("- ", "-"), name
    assert "$MLFLOW_TRACKING_URI" in flat
