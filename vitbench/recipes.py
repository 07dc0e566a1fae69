"""Recipes: named sets of options for `vitbench run --recipe NAME`, one YAML file each in the package's
``recipe_files/`` (installed with it, read through importlib.resources), with how each was chosen and what it
measured. Options given explicitly win. A recipe may also grow with the budget: ``budgets:``, tiers of options that
`--time-budget T` adds, the first whose ``up_to`` is at least T (the last without one: any longer)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import yaml

from vitbench.config import OPTION_NAMES, Options, TrainConfig, ViTConfig
from vitbench.errors import VitbenchError
from vitbench.yamlfile import read_yaml

RECIPE_DIR = Path(str(resources.files("vitbench") / "recipe_files"))  # shipped in the wheel (pyproject.toml)
RECIPE_KEYS = ("description", "chosen_by", "measured", "options")  # and, optionally, budgets
SETTABLE = tuple(n for n in OPTION_NAMES if n not in ("variant", "dataset"))  # a recipe fits any variant and data


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    chosen_by: str  # the measurement that chose it, and where it is recorded
    measured: str  # what it reached, with hardware, versions and date
    options: dict
    budgets: tuple[tuple[float | None, dict], ...] = ()  # (up_to seconds, None for any longer; the options it adds)

    def settings(self, budget: float | None) -> dict:
        """The options it sets for a run of ``budget`` seconds (None: no --time-budget given)."""
        if not self.budgets:
            return dict(self.options)
        if budget is None:
            raise VitbenchError(f"recipe {self.name} fits its model to a budget: give --time-budget SECONDS "
                                "(in a suite: time_budget)")
        return {**self.options, **next(o for up_to, o in self.budgets if up_to is None or budget <= up_to)}


def read_recipe(path: Path) -> Recipe:
    spec = read_yaml(path, "recipe")
    keys = set(RECIPE_KEYS)
    if not isinstance(spec, dict) or not keys <= set(spec) <= keys | {"budgets"} or not isinstance(spec["options"], dict):
        raise VitbenchError(f"recipe {path} must have exactly these keys: {', '.join(sorted(keys))} (options a mapping), "
                            "and may have budgets")
    tiers = spec.get("budgets", [])
    shaped = isinstance(tiers, list) and all(isinstance(t, dict) and set(t) <= {"up_to", "options"}
                                             and isinstance(t.get("options"), dict) for t in tiers)
    ups = [t.get("up_to") for t in tiers] if shaped else []
    if not shaped or (tiers and (ups[-1] is not None or not all(isinstance(u, int | float) for u in ups[:-1])
                                 or ups[:-1] != sorted(set(ups[:-1])))):
        raise VitbenchError(f"recipe {path}: budgets must be a list of {{up_to: SECONDS, options: {{...}}}}, up_to "
                            "rising, the last without up_to")
    for t in tiers or [{"options": {}}]:  # names and types checked, each tier with the options under it
        Options.read({**spec["options"], **t["options"]}, f"recipe {path}", SETTABLE)
    return Recipe(path.stem, str(spec["description"]), str(spec["chosen_by"]), str(spec["measured"]),
                  dict(spec["options"]), tuple((t.get("up_to"), dict(t["options"])) for t in tiers))


def load_recipes(folder: Path = RECIPE_DIR) -> dict[str, Recipe]:
    return {p.stem: read_recipe(p) for p in sorted(folder.glob("*.yaml"))}


def recipe_settings(name: str | None, folder: Path = RECIPE_DIR, budget: float | None = None) -> dict:
    """The options recipe ``name`` sets for a run of ``budget`` seconds, as its file writes them (none for None;
    names and types checked)."""
    if name is None:
        return {}
    path = folder / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        raise VitbenchError(f"unknown recipe {name!r}; valid: {', '.join(load_recipes(folder))} (`vitbench recipes`)")
    return read_recipe(path).settings(budget)


def recipe_options(name: str | None, folder: Path = RECIPE_DIR, budget: float | None = None) -> Options:
    """The options recipe ``name`` sets for a run of ``budget`` seconds (none for None)."""
    return Options.read(recipe_settings(name, folder, budget), f"recipe {name}", SETTABLE)


def config_options(path: Path | None) -> Options:
    """The options a user's file sets (none for None): a recipe's format, its ``options:`` required and free to name
    the variant and the dataset, the rest optional."""
    if path is None:
        return Options()
    spec = read_yaml(path, "config")
    if not isinstance(spec, dict) or not isinstance(spec.get("options"), dict) or not set(spec) <= set(RECIPE_KEYS):
        raise VitbenchError(f"config {path} must hold `options:`, a mapping of option names to values (and may say "
                            f"{', '.join(k for k in RECIPE_KEYS if k != 'options')})")
    return Options.read(spec["options"], f"config {path}")


def run_options(recipe: str | None, config: Path | None, flags: Options) -> Options:
    """A run's options: the recipe's (its tier for the budget the file or the flags give), under the file's, under
    the flags'."""
    given = config_options(config).then(flags)
    return recipe_options(recipe, budget=given.time_budget).then(given)


def config_yaml(cfg: TrainConfig, model_cfg: ViTConfig) -> str:
    """Every option of a run as resolved, as a file ``run --config`` reads back to the same run."""
    values = {**asdict(cfg), **model_cfg.to_dict()}
    return ("# vitbench run --config FILE: every option of one run, as --print-config resolved them\n"
            + yaml.safe_dump({"options": {n: values[n] for n in OPTION_NAMES if n in values}}, sort_keys=False))
