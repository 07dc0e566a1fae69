"""A suite's cells: the suite file read and checked (``load_suite``), and one repeat of one cell run as an MLflow
run (``run_cell``) -- what the suite command and its worker processes share. The YAML format is in suite.py."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vitbench import wall
from vitbench.config import OPTION_NAMES, Options, TrainConfig, check_names
from vitbench.errors import VitbenchError
from vitbench.options import configs, given
from vitbench.progress import Display, Every
from vitbench.recipes import recipe_settings
from vitbench.yamlfile import read_yaml

if TYPE_CHECKING:
    from vitbench.data import Splits
    from vitbench.models import ViTConfig
    from vitbench.runner import RunOutcome


CELL_KEYS = (*OPTION_NAMES, "recipe")  # what a grid axis or an explicit cell may set


@dataclass
class Cell:
    name: str
    options: dict = field(default_factory=dict)  # variant, dataset, preset, train and model fields
    recipe: str | None = None  # the recipe under its options (tagged on its runs)


@dataclass
class Suite:
    name: str
    path: Path
    repeats: int
    cells: list[Cell]
    description: str = ""
    sets: dict = field(default_factory=dict)  # `suite --set KEY=VALUE`: over every cell's own options

    @property
    def set_label(self) -> str:
        """The overrides as one tag value (``epochs=3,lr=0.01``): runs made under others are not this suite's."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.sets.items()))


MAX_CELLS = 10_000  # a grid larger than this is a typo (or a file built to expand), not a suite


def shaped(value, kind: type, where: str):
    """``value`` if it is of ``kind`` (an empty one for None), else one line saying what ``where`` must be."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise VitbenchError(f"{where} must be a {'mapping' if kind is dict else 'list'}, got {type(value).__name__}")
    return value


def apply_rules(cells: list[Cell], rules: list, where: str) -> None:
    """``when: [{match: {...}, set: {...}}]``: the options of the cells that match."""
    for rule in rules:
        rule = shaped(rule, dict, f"{where}: when (each rule)")
        match, setting = shaped(rule.get("match"), dict, f"{where}: when.match"), \
            shaped(rule.get("set"), dict, f"{where}: when.set")
        check_names(setting, f"{where}: when.set")
        for c in cells:
            if all((c.recipe if k == "recipe" else c.options.get(k)) == v for k, v in match.items()):
                c.options.update(setting)


def load_suite(path: str | Path, sets: dict | None = None) -> Suite:
    """The suite file's cells, each with ``sets`` (``--set``) over its own options."""
    path = Path(path)
    spec = read_yaml(path, "suite")
    if not isinstance(spec, dict):
        raise VitbenchError(f"suite {path} must be a mapping (name, grid, cells, ...)")
    known = {"name", "description", "recipe", "dataset", "variant", "preset", "repeats", "train", "model", "grid",
             "cells", "when"}
    extra = set(spec) - known
    if extra:
        raise VitbenchError(f"suite {path}: unknown key {sorted(extra)[0]!r}; valid: {', '.join(sorted(known))}")
    shared = {k: spec[k] for k in ("dataset", "variant", "preset") if k in spec}
    shared |= shaped(spec.get("train"), dict, f"suite {path}: train")
    shared |= shaped(spec.get("model"), dict, f"suite {path}: model")
    check_names(shared, f"suite {path}")

    def cell(name: str, values: dict) -> Cell:
        """A cell: its recipe's options (its tier for the budget, --set's too), under the suite's, under its own."""
        values = dict(values)
        recipe = values.pop("recipe", spec.get("recipe"))
        budget = {**shared, **values, **(sets or {})}.get("time_budget")
        return Cell(name, {**recipe_settings(recipe, budget=budget), **shared, **values}, recipe)

    cells: list[Cell] = []
    grid = shaped(spec.get("grid"), dict, f"suite {path}: grid")
    if grid:
        check_names(grid, f"suite {path}: grid", CELL_KEYS)
        keys = list(grid)
        axes = [grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys]
        if any(isinstance(v, (dict, list)) for axis in axes for v in axis):
            raise VitbenchError(f"suite {path}: grid values must be plain values or lists of them")
        if math.prod(len(a) for a in axes) > MAX_CELLS:
            raise VitbenchError(f"suite {path}: the grid makes {math.prod(len(a) for a in axes):,} cells; at most "
                                f"{MAX_CELLS:,}")
        for combo in itertools.product(*axes):
            values = dict(zip(keys, combo, strict=True))
            cells.append(cell(",".join(f"{k}={v}" for k, v in values.items()), values))
    for i, c in enumerate(shaped(spec.get("cells"), list, f"suite {path}: cells")):
        if not isinstance(c, dict):
            raise VitbenchError(f"suite {path}: cells[{i}] must be a mapping")
        c = dict(c)
        name = str(c.pop("name", f"cell{i}"))
        check_names(c, f"suite {path}: cell {name}", CELL_KEYS)
        cells.append(cell(name, c))
    if not cells:
        raise VitbenchError(f"suite {path} declares no cells: give a grid or cells")
    apply_rules(cells, shaped(spec.get("when"), list, f"suite {path}: when"), f"suite {path}")
    check_names(sets or {}, "--set")
    for c in cells:
        c.options.update(sets or {})
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise VitbenchError(f"suite {path}: cell names repeat: {names}")
    repeats = spec.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise VitbenchError(f"suite {path}: repeats must be a positive whole number, got {repeats!r}")
    for cell in cells:  # fail on impossible cells before anything runs
        cell_configs(cell, 0)
    return Suite(str(spec.get("name") or path.stem), path, repeats, cells, str(spec.get("description", "")),
                 dict(sets or {}))


def run_cell(suite: Suite, cell: Cell, r: int, device: str | None, data_dir: str | None, tracking_uri: str | None,
             display: Display, live: Every, log: Callable[[str], None], tags: dict | None = None,
             on_start: Callable[[str], None] | None = None) -> RunOutcome | None:
    """One repeat of one cell as an MLflow run; its outcome, or None if it failed (the run is ended FAILED).
    ``on_start``: told the run's id as it starts."""
    from vitbench.runner import Tracking, run_experiment

    cfg, model_cfg = cell_configs(cell, r, device, data_dir)
    display.note(f"{suite.name}: {cell.name} repeat {r} (seed {cfg.seed})")
    tags = {"suite": suite.name, "suite.cell": cell.name, "suite.repeat": str(r), "kind": "suite-run",
            **({"suite.set": suite.set_label} if suite.sets else {}),
            **({"recipe": cell.recipe} if cell.recipe else {}), **(tags or {})}
    try:
        out = run_experiment(cfg, model_cfg, Tracking(tracking_uri, suite.name, cell_run_name(cell, cfg), tags=tags,
                                                               on_start=on_start),
                             splits=splits_for(cfg, model_cfg), log=lambda s: None, display=display, live=live)
    except Exception as e:  # the run is already ended FAILED with the error as a tag
        display.note(f"  FAILED: {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}")
        return None
    res = out.result
    display.note(f"  val_acc {res.final_val_acc:.4f}, train {res.train_seconds:.2f} s, "
                 f"{res.infer_images_per_sec:,.0f} infer img/s, run {out.run_id}")
    return out


def cell_configs(cell: Cell, r: int, device: str | None = None,
                 data_dir: str | None = None) -> tuple[TrainConfig, ViTConfig]:
    """Repeat ``r`` of a cell: its options with the seed offset by ``r``, on ``device`` and ``data_dir`` when given."""
    o = Options.read(cell.options, f"suite cell {cell.name}")
    return configs(replace(o, seed=(o.seed or 0) + r, **given(device=device, data_dir=data_dir)))


_LOADED: dict[tuple, Splits] = {}


def splits_for(cfg: TrainConfig, model_cfg: ViTConfig) -> Splits:
    """The cell's data, loaded once per process and kept while the next cells ask for the same (a suite's
    cells mostly share their dataset); only the last kept, so memory holds one dataset."""
    from vitbench.data import seed_picks_split
    from vitbench.runner import load_data, run_context

    ctx = run_context(cfg, model_cfg)
    info = ctx.info
    seed = cfg.seed if seed_picks_split(info, cfg.val_split) else None
    key = (cfg.dataset, cfg.data_dir, cfg.val_split, seed, ctx.loader, ctx.device, info.image_shape, info.num_classes)
    if key not in _LOADED:
        _LOADED.clear()
        with wall.phase("data from disk"):
            _LOADED[key] = load_data(cfg, ctx, lambda s: None)
    return _LOADED[key]


def cell_run_name(cell: Cell, cfg) -> str:
    """The variant, what the cell sets (its name), the seed: 'sdpa attention=naive seed=1'."""
    what = ",".join(p for p in cell.name.split(",") if p != f"variant={cfg.variant}")
    return " ".join(p for p in (cfg.variant, what, f"seed={cfg.seed}") if p)
