"""Declared experiment suites: a YAML grid of cells x repeats, run into one MLflow experiment.

    name: attention                   # the MLflow experiment (default: the file's stem)
    dataset: mnist
    repeats: 3                        # each repeat has its own seed: seed, seed+1, ...
    train: {epochs: 5}                # shared training options
    model: {}                         # shared model options
    variant: sdpa
    grid: {attention: [naive, vectorized, torch-mha, sdpa]}   # every combination is a cell
    cells: [{name: classic, variant: torch-mha, lr: 1.0e-3}]   # and/or explicit cells
    when: [{match: {attention: naive}, set: {time_budget: 60}}] # options for matching cells

A cell already FINISHED for a repeat is skipped on a re-run (``force`` redoes it).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vitbench.errors import Interrupted, VitbenchError
from vitbench.options import OPTION_NAMES, Options, configs, given
from vitbench.progress import Display, Every, duration
from vitbench.train import TrainConfig
from vitbench.yamlfile import read_yaml

if TYPE_CHECKING:
    from vitbench.data import Splits
    from vitbench.models import ViTConfig
    from vitbench.workers import Pool



@dataclass
class Cell:
    name: str
    options: dict = field(default_factory=dict)  # variant, dataset, preset, train and model fields


@dataclass
class Suite:
    name: str
    path: Path
    repeats: int
    cells: list[Cell]
    description: str = ""


def _check_keys(d: dict, where: str) -> None:
    bad = [k for k in d if k not in OPTION_NAMES]
    if bad:
        raise VitbenchError(f"{where}: {bad[0]!r} is not an option; valid: {', '.join(OPTION_NAMES)}")


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    spec = read_yaml(path, "suite")
    if not isinstance(spec, dict):
        raise VitbenchError(f"suite {path} must be a mapping (name, grid, cells, ...)")
    known = {"name", "description", "dataset", "variant", "preset", "repeats", "train", "model", "grid", "cells", "when"}
    extra = set(spec) - known
    if extra:
        raise VitbenchError(f"suite {path}: unknown key {sorted(extra)[0]!r}; valid: {', '.join(sorted(known))}")
    shared = {k: spec[k] for k in ("dataset", "variant", "preset") if k in spec}
    shared |= spec.get("train") or {}
    shared |= spec.get("model") or {}
    _check_keys(shared, f"suite {path}")
    cells: list[Cell] = []
    grid = spec.get("grid") or {}
    if grid:
        _check_keys(grid, f"suite {path}: grid")
        keys = list(grid)
        for combo in itertools.product(*(grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            cells.append(Cell(",".join(f"{k}={v}" for k, v in values.items()), {**shared, **values}))
    for i, c in enumerate(spec.get("cells") or []):
        if not isinstance(c, dict):
            raise VitbenchError(f"suite {path}: cells[{i}] must be a mapping")
        c = dict(c)
        name = str(c.pop("name", f"cell{i}"))
        _check_keys(c, f"suite {path}: cell {name}")
        cells.append(Cell(name, {**shared, **c}))
    if not cells:
        raise VitbenchError(f"suite {path} declares no cells: give a grid or cells")
    for rule in spec.get("when") or []:
        match, setting = rule.get("match") or {}, rule.get("set") or {}
        _check_keys(setting, f"suite {path}: when.set")
        for cell in cells:
            if all(cell.options.get(k) == v for k, v in match.items()):
                cell.options.update(setting)
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise VitbenchError(f"suite {path}: cell names repeat: {names}")
    repeats = spec.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise VitbenchError(f"suite {path}: repeats must be a positive whole number, got {repeats!r}")
    for cell in cells:  # fail on impossible cells before anything runs
        cell_configs(cell, 0)
    return Suite(str(spec.get("name") or path.stem), path, repeats, cells, str(spec.get("description", "")))


def finished_cells(experiment: str) -> set[tuple[str, str]]:
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return set()
    runs = mlflow.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              output_format="list")
    return {(r.data.tags.get("suite.cell", ""), r.data.tags.get("suite.repeat", "")) for r in runs}


def suite_note(suite: Suite) -> str:
    """The suite's description, what it compares and how to read it, for its MLflow experiment."""
    cells = ", ".join(c.name for c in suite.cells[:12]) + (", ..." if len(suite.cells) > 12 else "")
    return (f"{suite.description.strip() or 'Suite ' + suite.name}\n\n{len(suite.cells)} cells x {suite.repeats} "
            f"repeats (each repeat its own seed) from `{suite.path.name}`: {cells}. Each run's description gives "
            f"its accuracy, training images/s and peak memory; `vitbench report --experiment {suite.name}` "
            "logs the verdicts as a run named 'report' here.")


def run_suite(suite: Suite, *, repeats: int | None = None, device: str | None = None, tracking_uri: str | None = None,
              force: bool = False, log: Callable[[str], None] = print, data_dir: str | None = None,
              only: list[str] | None = None, display: Display | None = None, live: Every | None = None,
              gpus: list[str] | None = None, pool: Pool | None = None) -> list[str]:
    """Run every (cell, repeat) not yet FINISHED (of the ``only`` cells if given); returns the run ids made.
    ``gpus``: with two or more, one worker process per GPU (``vitbench.workers.resolve_gpus``); ``pool``: those
    workers, already started (the CLI starts them before it imports torch)."""
    from vitbench.tracking import connect, get_experiment_id
    from vitbench.workers import Pool

    # The workers start first: they import torch and MLflow and load the data while this process opens the store.
    if pool is None and len(gpus or []) > 1:
        pool = Pool(suite.path, gpus, device, data_dir, tracking_uri, live or Every())
    try:
        uri = connect(tracking_uri)
        get_experiment_id(suite.name, uri, description=suite_note(suite))  # the experiment's description in the UI
        todo = runs_to_do(suite, repeats or suite.repeats, force, only, log)
    except BaseException:
        if pool:
            pool.discard()
        raise
    display = display or Display("off", log=log)
    made: list[str] = []
    failed: list[str] = []

    def done(name: str, r: int, run_id: str | None, seconds: float) -> None:
        (made if run_id else failed).append(run_id or f"{name}#{r}")
        eta.ran(name, seconds)

    with display:
        eta = SuiteClock(display, suite.name, todo, workers=min(len(gpus or []) or 1, max(len(todo), 1)))
        if pool and len(todo) > 1:
            run_on_workers(suite, todo, pool, tracking_uri, display, done)
        else:
            if pool:
                pool.discard()
            for cell, r in todo:
                t0 = time.perf_counter()
                run_id = run_cell(suite, cell, r, device, data_dir, tracking_uri, display, live or Every(), log)
                done(cell.name, r, run_id, time.perf_counter() - t0)
        eta.close()
    if failed:
        raise VitbenchError(f"suite {suite.name}: {len(failed)} run(s) failed ({', '.join(failed[:5])}); "
                            f"{len(made)} made; re-run to retry them")
    return made


def runs_to_do(suite: Suite, repeats: int, force: bool, only: list[str] | None,
               log: Callable[[str], None]) -> list[tuple[Cell, int]]:
    """Every (cell, repeat) of the ``only`` cells (all if None) not yet FINISHED in the store."""
    done = set() if force else finished_cells(suite.name)
    unknown = set(only or []) - {c.name for c in suite.cells}
    if unknown:
        raise VitbenchError(f"suite {suite.name} has no cell {sorted(unknown)[0]!r}; cells: "
                            f"{', '.join(c.name for c in suite.cells)}")
    todo = []
    for cell in suite.cells:
        for r in range(repeats):
            if only and cell.name not in only:
                continue
            if (cell.name, str(r)) in done:
                log(f"skip {cell.name} repeat {r}: already FINISHED (--force to redo)")
            else:
                todo.append((cell, r))
    return todo


def longest_first(todo: list[tuple[Cell, int]]) -> list[tuple[Cell, int]]:
    """The runs the workers take, the likely longest first, so that no worker is left with a long run while the
    others idle at the end: the from-scratch loop parts (each runs its whole time budget, or far longer), by
    budget, then the others in the suite's order."""
    from vitbench.train import naive_parts

    def slow(item: tuple[Cell, int]) -> tuple[bool, float]:
        cfg, model_cfg = cell_configs(item[0], 0)  # checked when the suite was loaded
        return naive_parts(model_cfg), float(cfg.time_budget or 0.0)

    return sorted(todo, key=slow, reverse=True)  # stable: equal keys keep the suite's order


def run_on_workers(suite: Suite, todo: list[tuple[Cell, int]], pool, tracking_uri: str | None, display: Display,
                   done: Callable[[str, int, str | None, float], None]) -> None:
    """The runs spread over the pool's worker processes, one per GPU (vitbench.workers); Ctrl-C ends each KILLED."""
    from vitbench.tracking import connect, get_experiment_id

    get_experiment_id(suite.name, connect(tracking_uri))  # created once here, not raced for by the workers
    display.note(f"suite {suite.name}: {len(todo)} runs on {len(pool.gpus)} worker processes ({', '.join(pool.gpus)})")
    try:
        pool.run(longest_first(todo), done, display.note)
    except KeyboardInterrupt:
        busy = pool.interrupt()
        display.note(f"interrupted: {busy} run(s) in progress ended KILLED, each with a checkpoint; "
                     "re-running the suite skips the FINISHED ones")
        raise Interrupted from None
    pool.close()


def run_cell(suite: Suite, cell: Cell, r: int, device: str | None, data_dir: str | None, tracking_uri: str | None,
             display: Display, live: Every, log: Callable[[str], None], tags: dict | None = None) -> str | None:
    """One repeat of one cell as an MLflow run; its id, or None if it failed (the run is ended FAILED)."""
    from vitbench.runner import Tracking, run_experiment

    cfg, model_cfg = cell_configs(cell, r, device, data_dir)
    display.note(f"{suite.name}: {cell.name} repeat {r} (seed {cfg.seed})")
    tags = {"suite": suite.name, "suite.cell": cell.name, "suite.repeat": str(r), "kind": "suite-run", **(tags or {})}
    try:
        out = run_experiment(cfg, model_cfg, Tracking(tracking_uri, suite.name, cell_run_name(cell, cfg), tags=tags),
                             splits=splits_for(cfg, model_cfg), log=lambda s: None, display=display, live=live)
    except Exception as e:  # the run is already ended FAILED with the error as a tag
        display.note(f"  FAILED: {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}")
        return None
    res = out.result
    display.note(f"  val_acc {res.final_val_acc:.4f}, train {res.train_seconds:.2f} s, "
                 f"{res.infer_images_per_sec:,.0f} infer img/s, run {out.run_id}")
    return out.run_id


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
    from vitbench.options import dataset_for
    from vitbench.runner import load_data

    info = dataset_for(cfg.dataset, model_cfg)
    seed = cfg.seed if seed_picks_split(info, cfg.val_split) else None
    key = (cfg.dataset, cfg.data_dir, cfg.val_split, seed, cfg.loader, cfg.device, info.image_shape, info.num_classes)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_data(cfg, info, lambda s: None)
    return _LOADED[key]


def cell_run_name(cell: Cell, cfg) -> str:
    """The variant, what the cell sets (its name), the seed: 'sdpa attention=naive seed=1'."""
    what = ",".join(p for p in cell.name.split(",") if p != f"variant={cfg.variant}")
    return " ".join(p for p in (cfg.variant, what, f"seed={cfg.seed}") if p)


class SuiteClock:
    """The suite's progress (runs done / total) and its projected remaining time: each run still to come
    is estimated by the wall time of its own cell's earlier repeats, else by the mean run so far; with
    several workers, that sum shared among them."""

    def __init__(self, display: Display, name: str, todo: list[tuple[Cell, int]], workers: int = 1) -> None:
        self.display, self.name, self.workers = display, name, workers
        self.left = [c.name for c, _ in todo]
        self.total = len(todo)
        self.seconds: dict[str, list[float]] = {}
        self.task = display.task(f"suite {name}", self.total, unit="run")
        self.t0 = time.perf_counter()

    def remaining(self) -> float:
        every = [t for ts in self.seconds.values() for t in ts]
        mean = sum(every) / len(every)
        runs = sum(sum(self.seconds[c]) / len(self.seconds[c]) if c in self.seconds else mean for c in self.left)
        return runs / min(self.workers, max(len(self.left), 1))

    def ran(self, cell: str, seconds: float) -> None:
        now = time.perf_counter()
        self.seconds.setdefault(cell, []).append(seconds)
        self.left.remove(cell)
        done = self.total - len(self.left)
        left = self.remaining()
        if done == 1 and self.left:
            self.display.note(f"suite {self.name}: the first run took {duration(seconds)} -> {self.total} runs "
                              f"~ {duration(now - self.t0 + left)} in all (cells not yet run estimated at the "
                              "mean run so far)")
        self.task.update(done, fields={"ETA": duration(left)}, force_line=True)

    def close(self) -> None:
        self.task.close()
