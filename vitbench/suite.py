"""Declared experiment suites: a YAML grid of cells x repeats, run into one MLflow experiment.

    name: attention                   # the MLflow experiment (default: the file's stem)
    recipe: mnist-fast                # a recipe's options under the suite's own (`vitbench recipes` lists them)
    dataset: mnist
    repeats: 3                        # each repeat has its own seed: seed, seed+1, ...
    train: {epochs: 5}                # shared training options
    model: {}                         # shared model options
    variant: sdpa
    grid: {attention: [naive, vectorized, torch-mha, sdpa]}   # every combination is a cell
    cells: [{name: classic, variant: torch-mha, lr: 1.0e-3}]   # and/or explicit cells (a grid axis or a cell
                                                               # may name its own recipe: grid: {recipe: [...]})
    when: [{match: {attention: naive}, set: {time_budget: 60}}] # options for matching cells

A cell already FINISHED for a repeat is skipped on a re-run (``force`` redoes it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from vitbench import wall
from vitbench.cells import Cell, Suite, cell_configs, run_cell
from vitbench.errors import Interrupted, VitbenchError
from vitbench.progress import Display, Every, duration

if TYPE_CHECKING:
    from vitbench.workers import Pool


def finished_cells(experiment: str) -> set[tuple[str, str, str]]:
    """(cell, repeat, ``--set`` overrides) of every FINISHED run of the suite's experiment."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return set()
    runs = mlflow.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              output_format="list")
    return {(r.data.tags.get("suite.cell", ""), r.data.tags.get("suite.repeat", ""), r.data.tags.get("suite.set", ""))
            for r in runs}


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
    from vitbench.workers import pool_for

    # The workers start first: they import torch and MLflow and load the data while this process opens the store.
    if pool is None and len(gpus or []) > 1:
        pool = pool_for(suite.path, gpus, device, data_dir, tracking_uri, live or Every(), suite.sets)
    try:
        with wall.phase("store"):
            uri = connect(tracking_uri)
            get_experiment_id(suite.name, uri, description=suite_note(suite))  # its description in the UI
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
            if (cell.name, str(r), suite.set_label) in done:
                log(f"skip {cell.name} repeat {r}: already FINISHED (--force to redo)")
            else:
                todo.append((cell, r))
    return todo


def longest_first(todo: list[tuple[Cell, int]]) -> list[tuple[Cell, int]]:
    """The runs the workers take, the likely longest first, so that no worker is left with a long run while the
    others idle at the end: the from-scratch loop parts (each runs its whole time budget, or far longer), by
    budget, then the others in the suite's order."""
    from vitbench.compute import naive_parts

    def slow(item: tuple[Cell, int]) -> tuple[bool, float]:
        cfg, model_cfg = cell_configs(item[0], 0)  # checked when the suite was loaded
        return naive_parts(model_cfg), float(cfg.time_budget or 0.0)

    return sorted(todo, key=slow, reverse=True)  # stable: equal keys keep the suite's order


def run_on_workers(suite: Suite, todo: list[tuple[Cell, int]], pool, tracking_uri: str | None, display: Display,
                   done: Callable[[str, int, str | None, float], None]) -> None:
    """The runs spread over the pool's worker processes, one per GPU (vitbench.workers); Ctrl-C ends each KILLED."""
    from vitbench.tracking import connect, get_experiment_id

    get_experiment_id(suite.name, connect(tracking_uri))  # created once here, not raced for by the workers
    warm = ", kept by the warm process from its last suite" if pool.kept else ""
    display.note(f"suite {suite.name}: {len(todo)} runs on {len(pool.gpus)} worker processes ({', '.join(pool.gpus)}"
                 f"{warm})")
    try:
        with wall.phase("the workers' runs"):
            pool.run(longest_first(todo), done, display.note)
    except KeyboardInterrupt:
        busy = pool.interrupt()
        display.note(f"interrupted: {busy} run(s) in progress ended KILLED, each with a checkpoint; "
                     "re-running the suite skips the FINISHED ones")
        raise Interrupted from None
    pool.release()


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
