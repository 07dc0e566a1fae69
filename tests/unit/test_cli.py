"""Every flag of `vitbench run` / `sweep` reaches the config field it names, with the field's type; the names the CLI
offers are the registries'; help is never cut."""

from __future__ import annotations

import inspect
import typing
from dataclasses import fields

import pytest
import yaml
from typer.testing import CliRunner

from vitbench import cli
from vitbench.config import MODEL_OPTIONS, TRAIN_OPTIONS, Options, TrainConfig
from vitbench.models import ViTConfig
from vitbench.options import configs

COMMAND_OPTIONS = {  # flags that steer the command rather than set a config field
    "tracking_uri", "experiment", "run_name", "resume", "checkpoint_dir",
    "system_metrics", "recipe", "quiet", "progress_interval", "live_every", "gpus", "n_trials", "timeout", "space",
    "objective", "pruner", "storage", "study_name", "workers", "heartbeat", "worker", "nodes", "rdzv_endpoint", "rdzv_id",
    "config", "print_config", "pruner_startup_trials", "pruner_warmup_epochs", "log_model", "register", "set_"}


# A value other than the default for every option, valid together on MNIST on the CPU.
GIVEN = dict(
    variant="simple-vit", dataset="mnist", preset="cifar10", epochs=3, batch_size=32, lr=1e-3, weight_decay=0.01,
    warmup_epochs=0.2, label_smoothing=0.05, ema=0.9, augment="crop", grad_clip=0.5, optimizer="adam",
    scheduler="step", precision="bf16", compile=True, compile_mode="max-autotune-no-cudagraphs", cuda_graph=False, seed=7, device="cpu", loader="dataloader",
    val_split=0.1, max_steps=3, time_budget=9.0, target_acc=0.5, budget_mode="cut", profile=2, eval_batch_size=100, num_workers=1, data_dir="some/dir",
    attention="vectorized", patchify="unfold", mlp="triton", pos_embed="sinusoidal", pool="cls", norm="post", image_size=28,
    in_chans=1, num_classes=10, patch_size=4, dim=32, depth=2, heads=2, mlp_dim=48, dropout=0.1, patch_drop=0.25,
    qkv_bias=False)


def flag_types(command) -> dict[str, set[type]]:
    """Each parameter of a Typer command and the Python types its value may take (None dropped)."""
    out = {}
    for name, p in inspect.signature(command, eval_str=True).parameters.items():
        base = typing.get_args(p.annotation)[0] if typing.get_origin(p.annotation) is typing.Annotated else p.annotation
        out[name] = {t for t in (typing.get_args(base) or (base,)) if t is not type(None)}
    return out


def argv(command) -> list[str]:
    """Every config flag of ``command`` set to its value in GIVEN."""
    out = []
    for name in flag_types(command):
        if name in COMMAND_OPTIONS:
            continue
        flag, value = "--" + name.replace("_", "-"), GIVEN[name]
        out += ([flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)])
    return out



def test_options_are_the_configs_fields_of_the_same_names_and_types():
    assert set(GIVEN) == {f.name for f in fields(Options)}
    assert TRAIN_OPTIONS + MODEL_OPTIONS == tuple(f.name for f in fields(Options))[3:]
    config_types = {f.name: str(f.type) for f in (*fields(TrainConfig), *fields(ViTConfig))}
    for f in fields(Options)[3:]:
        assert str(f.type).replace(" | None", "") == config_types[f.name].replace(" | None", ""), f.name



def test_every_option_reaches_the_config_field_of_its_name():
    cfg, model_cfg = configs(Options(**GIVEN))
    for name in TRAIN_OPTIONS:
        assert getattr(cfg, name) == GIVEN[name], name
    for name in MODEL_OPTIONS:
        assert getattr(model_cfg, name) == GIVEN[name], name
    assert (cfg.variant, model_cfg.dim, model_cfg.mlp_dim) == ("simple-vit", 32, 48)
    preset_only = configs(Options(dataset="mnist", preset="cifar10"))[1]
    assert (preset_only.dim, preset_only.mlp_dim, preset_only.image_size) == (48, 192, 28)  # sizes, not shape



@pytest.mark.parametrize("command", [cli.run, cli.sweep])
def test_every_flag_is_an_option_of_its_type(command):
    options = {f.name: str(f.type) for f in fields(Options)}
    for name, types in flag_types(command).items():
        if name in COMMAND_OPTIONS:
            continue
        assert name in options, f"--{name} is neither an option nor a command option"
        assert all(t.__name__ in options[name] for t in types), f"--{name} is {types}, the option {options[name]}"



def test_run_s_flags_reach_its_configs(monkeypatch):
    from vitbench import runner

    seen = {}

    def fake(cfg, model_cfg, tracking, **kwargs):
        seen.update(cfg=cfg, model_cfg=model_cfg, tracking=tracking)
        raise SystemExit(0)

    monkeypatch.setattr(runner, "run_experiment", fake)
    res = CliRunner().invoke(cli.app, ["run", *argv(cli.run), "--run-name", "r", "--experiment", "e"])
    assert res.exit_code == 0, res.output
    for name in flag_types(cli.run):
        if name not in COMMAND_OPTIONS and name not in ("variant", "dataset", "preset"):
            config = seen["cfg"] if name in TRAIN_OPTIONS else seen["model_cfg"]
            assert getattr(config, name) == GIVEN[name], name
    assert (seen["tracking"].run_name, seen["tracking"].experiment) == ("r", "e")



def test_sweep_s_flags_are_what_every_trial_starts_from(monkeypatch):
    from vitbench import sweep

    seen = {}
    monkeypatch.setattr(sweep, "run_sweep", lambda spec, base, **kw: seen.update(base=base))
    res = CliRunner().invoke(cli.app, ["sweep", *argv(cli.sweep)])
    assert res.exit_code == 0, res.output
    given = {k: v for k, v in GIVEN.items() if k in flag_types(cli.sweep)}
    assert seen["base"] == Options(**given)



def test_the_names_the_cli_offers_are_the_registries():
    """vitbench.names (torch-free, what the CLI's help is made of) against the modules that implement each name."""
    from vitbench import data, names, peers
    from vitbench.models.attention import ATTENTION
    from vitbench.models.mlp import MLPS
    from vitbench.models.patchify import PATCHIFY
    from vitbench.models.registry import PRESETS

    assert names.ATTENTION == tuple(ATTENTION) and names.PATCHIFY == tuple(PATCHIFY) and names.MLP == tuple(MLPS)
    assert names.DATASETS == tuple(data.DATASETS) and set(names.PRESETS) == set(PRESETS)
    assert names.PEERS == tuple(peers.PEER_BUILDERS)



def test_the_docs_parts_table_names_exactly_the_registry():
    """docs/reference.md's parts table against vitbench.names: a name added or dropped in one is caught."""
    import re

    from tests.conftest import REPO
    from vitbench import names

    rows = {line.split("|")[1].strip(): line.split("|")[2] for line in
            (REPO / "docs" / "reference.md").read_text().splitlines() if line.startswith("| ") and line.count("|") == 3}
    for part, registered in (("attention", names.ATTENTION), ("patchify", names.PATCHIFY),
                             ("positions", names.POS_EMBED), ("pooling / norm", names.POOL + names.NORM)):
        listed = re.findall(r"`([a-z0-9-]+)`", rows[part])  # the names; descriptions' `nn.X`, `F.y` are not
        assert sorted(listed) == sorted(registered), (part, listed)



def test_print_config_writes_what_config_reads_back_and_flags_still_win(tmp_path, monkeypatch):
    """`run --print-config`: every option resolved (the recipe's, then the flags'), as YAML that `run --config`
    reads back to the same options, variant and dataset included; a flag over the file wins; a bad file is one
    line. Nothing is trained or recorded."""
    from vitbench.config import OPTION_NAMES

    monkeypatch.chdir(tmp_path)

    def printed(*args: str) -> str:
        res = CliRunner().invoke(cli.app, ["run", *args, "--print-config"])
        assert res.exit_code == 0, res.output
        return res.output

    first = printed("--recipe", "mnist-fast", "--variant", "naive-msa", "--device", "cpu", "--seed", "3")
    options = yaml.safe_load(first)["options"]
    assert options["batch_size"] == 512 and options["variant"] == "naive-msa" and options["seed"] == 3
    assert options["attention"] == "triton" and set(options) <= set(OPTION_NAMES)  # the recipe's over the variant's
    (tmp_path / "mine.yaml").write_text(first)
    assert printed("--config", str(tmp_path / "mine.yaml")) == first
    assert yaml.safe_load(printed("--config", str(tmp_path / "mine.yaml"), "--lr", "0.5"))["options"]["lr"] == 0.5
    (tmp_path / "bad.yaml").write_text("options:\n  batch_size: eight\n")
    res = CliRunner().invoke(cli.app, ["run", "--config", str(tmp_path / "bad.yaml"), "--print-config"])
    assert res.exit_code == 2 and "bad.yaml" in res.output and "batch_size" in res.output
    grown = [yaml.safe_load(printed("--recipe", "mnist-budget", "--time-budget", t))["options"] for t in ("1", "300")]
    assert [(o["dim"], o["time_budget"]) for o in grown] == [(64, 1), (128, 300)]  # the budget's tier of the family
    res = CliRunner().invoke(cli.app, ["run", "--recipe", "mnist-budget", "--print-config"])
    assert res.exit_code == 2 and "recipe mnist-budget fits its model to a budget: give --time-budget" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "mine.yaml"]  # no store, no checkpoint


def test_completion_offers_the_registry_s_names_and_set_reads_numbers_as_numbers():
    """`--install-completion`'s values come from vitbench.names (torch-free); a comma list completes its last item;
    `suite --set` values are read as a suite file would read them."""
    from vitbench.flags import completer, settings
    from vitbench.models import list_variants
    from vitbench.names import ATTENTION, VARIANTS

    assert completer(ATTENTION)("tr") == ["triton"] and completer(ATTENTION, listed=True)("sdpa,fl") == ["sdpa,flex"]
    assert set(VARIANTS) == set(list_variants())
    assert settings(["epochs=3", "lr=1e-3", "attention=sdpa", "device=cuda:0", "compile=true"]) == dict(
        epochs=3, lr=0.001, attention="sdpa", device="cuda:0", compile=True)
    with pytest.raises(Exception, match="KEY=VALUE"):
        settings(["epochs"])
