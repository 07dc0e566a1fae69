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
