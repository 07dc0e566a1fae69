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

A cell already FINISHED for a repeat is skipped on a re-run (``force`` redoes it). The runs to make are queued as
trials of an Optuna study (``suite:NAME``; a journal beside the store, or ``--storage``, e.g. a team's PostgreSQL):
this process, its worker processes (one per GPU) and those of the same command on other hosts claim them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from vitbench import wall
from vitbench.cells import Cell, Suite, cell_configs, run_cell
from vitbench.errors import Interrupted, VitbenchError
from vitbench.progress import Display, Every, duration


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
              gpus: list[str] | None = None, storage: str | None = None, heartbeat: int = 10,
              argv: list[str] | None = None) -> list[str]:
    """Queue every (cell, repeat) not yet FINISHED (of the ``only`` cells if given) in the suite's Optuna study, then
    run them: in this process, or in one worker process per GPU of ``gpus`` (``argv``: this command's line, which
    each worker runs again with ``--worker``). Workers of the same command on other hosts take their share.
    Returns the run ids made."""
    from vitbench.launcher import launch, release, stop, supervise, without
    from vitbench.study import fail_dead_trials
    from vitbench.tracking import connect, get_experiment_id

    many = len(gpus or []) > 1 and (repeats or suite.repeats) * len(only or suite.cells) > 1
    # The workers start first, held: they import torch and MLflow and load their data while this process queues.
    procs = launch(without(argv or [], "--gpus"), gpus, [None if g.startswith("cpu") else g for g in gpus],
                   {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else None, held=True) if many else []
    try:
        with wall.phase("store"):
            uri = connect(tracking_uri)
            get_experiment_id(suite.name, uri, description=suite_note(suite), grouped=True)  # made once, here
            todo = runs_to_do(suite, repeats or suite.repeats, force, only, log)
            study = open_queue(suite.name, storage or default_storage(uri))
            enqueue(study, suite, todo)
    except BaseException:
        stop(procs)
        raise
    workers = list(gpus) if procs and len(todo) > 1 else []  # one run: this process
    if workers:
        release(procs)
    else:
        stop(procs)
    display = display or Display("off", log=log)
    with display:
        eta = SuiteClock(display, suite.name, todo, workers=max(1, min(len(workers), len(todo))))
        tick = eta.follow(study, {key(c.name, r, suite.set_label) for c, r in todo})
        if workers:
            display.note(f"suite {suite.name}: {len(todo)} runs on {len(workers)} worker processes "
                         f"({', '.join(workers)})")
            try:
                with wall.phase("the workers' runs"):
                    supervise(procs, lambda: (fail_dead_trials(study, heartbeat, own_beats=True), tick()))
            except KeyboardInterrupt:
                busy = sum(t.user_attrs.get("suite.outcome") == "interrupted" for t in study.get_trials(deepcopy=False)
                           if t.user_attrs.get("worker.pid") in {p.pid for p in procs})
                display.note(f"interrupted: {busy} run(s) in progress ended KILLED, each with a checkpoint; "
                             "re-running the suite skips the FINISHED ones")
                raise Interrupted from None
        elif todo:
            work_cells(suite.path, study, device, data_dir, tracking_uri, display, live or Every(), "", heartbeat,
                       reap=True, after=tick)
        eta.close()
    made, failed = outcome(study, todo, suite.set_label, display)
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


# -- the queue: an Optuna study whose trials are the suite's runs --------------------------------------------------
# A trial is one (cell, repeat, --set) with no parameters: what to run is in its user attrs. Optuna has no claim of
# a chosen trial, so runs are enqueued longest first and claimed with `study.ask()`, which takes the oldest WAITING
# trial in one transaction (a database) or one journal entry; where none is left, `ask` makes a fresh trial instead,
# which is told FAIL at once ("spare"). Two hosts that queue the same run at the same instant both succeed: the
# lower-numbered trial runs and the other is told FAIL ("duplicate") when claimed.

QUEUED = ("WAITING", "RUNNING")


def default_storage(uri: str) -> str:
    """The suites' Optuna journal beside a SQLite store (``mlflow.db`` -> ``mlflow-suites.journal``), else in the
    working folder."""
    from urllib.parse import urlparse

    path = Path(urlparse(uri).path[1:] if uri.startswith("sqlite:///") else "mlflow.db")
    return f"journal:{path.parent / (path.stem + '-suites.journal')}"


def open_queue(name: str, storage: str):
    import optuna

    from vitbench.study import make_storage

    # no RDB heartbeat: it serves study.optimize, and a suite's trials carry their own (study.TrialBeat)
    return optuna.create_study(study_name=f"suite:{name}", storage=make_storage(storage, 0, None),
                               direction="maximize", sampler=optuna.samplers.RandomSampler(), load_if_exists=True)


def key(cell: str, r: int, set_label: str) -> str:
    return f"{cell}#{r}#{set_label}"


def enqueue(study, suite: Suite, todo: list[tuple[Cell, int]]) -> None:
    """The runs not already waiting or running (another host may have queued them), longest first."""
    queued = {t.user_attrs.get("suite.key") for t in study.get_trials(deepcopy=False) if t.state.name in QUEUED}
    for cell, r in longest_first(todo):
        if (k := key(cell.name, r, suite.set_label)) not in queued:
            study.enqueue_trial({}, user_attrs={"suite.key": k, "suite.cell": cell.name, "suite.repeat": r,
                                                "suite.sets": suite.sets,
                                                "suite.enqueued": time.time()})


def settled(study, keys: set[str]) -> list:
    """The trials of these runs that ended: run FINISHED, or run failed (not a worker's death: that is retried)."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("suite.key") in keys
            and (t.state.name == "COMPLETE" or t.user_attrs.get("suite.outcome") == "failed")]


def duplicate(study, trial) -> bool:
    """Queued twice: a lower-numbered trial of the same run waits or runs, or one finished after this was queued."""
    a = trial.user_attrs
    for t in study.get_trials(deepcopy=False):
        if t.number == trial.number or t.user_attrs.get("suite.key") != a["suite.key"]:
            continue
        if (t.state.name in QUEUED and t.number < trial.number) or (
                t.state.name == "COMPLETE" and t.datetime_complete.timestamp() > a["suite.enqueued"]):
            return True
    return False


def tell_failed(study, trial, why: str) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("suite.outcome", why)
    study.tell(trial, state=TrialState.FAIL)


def work_cells(path: Path, study, device: str | None, data_dir: str | None, tracking_uri: str | None,
               display: Display, live: Every, label: str, heartbeat: int, reap: bool,
               after: Callable[[], None] = lambda: None) -> None:
    """Claim and run the suite's queued runs until none waits or runs (a run another worker holds comes back
    to the queue if that worker dies: ``reap`` here, or the coordinator's). Each run is loaded with its own
    ``--set`` overrides; Ctrl-C ends it KILLED, its trial FAIL ('interrupted')."""
    from vitbench.cells import load_suite
    from vitbench.study import TrialBeat, fail_dead_trials

    suites: dict[str, Suite] = {}
    while True:
        if reap:
            fail_dead_trials(study, heartbeat, own_beats=True)
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        if "WAITING" not in states:
            if "RUNNING" not in states:
                return
            time.sleep(min(heartbeat, 5))  # others hold the last runs; take one over if its worker dies
            continue
        trial = study.ask()
        beat = TrialBeat(trial, heartbeat)  # its worker named on it at once: a trial without a beat looks dead
        try:
            a = trial.user_attrs
            if "suite.key" not in a or duplicate(study, trial):
                tell_failed(study, trial, "spare" if "suite.key" not in a else "duplicate")
                continue
            sets = a.get("suite.sets") or {}
            if (overrides := str(sorted(sets.items()))) not in suites:
                suites[overrides] = load_suite(path, sets)
            suite = suites[overrides]
            cell = next((c for c in suite.cells if c.name == a["suite.cell"]), None)
            if cell is None:
                tell_failed(study, trial, "failed")
                display.note(f"  FAILED: suite {suite.name} has no cell {a['suite.cell']!r} now")
                continue
            try:
                run = run_cell(suite, cell, a["suite.repeat"], device, data_dir, tracking_uri, display, live,
                               lambda s: None, tags={"optuna.study": study.study_name, "optuna.trial": str(trial.number),
                                                     **({"suite.gpu": label} if label else {})},
                               on_start=lambda rid, t=trial: t.set_user_attr("mlflow_run_id", rid))
            except KeyboardInterrupt:
                tell_failed(study, trial, "interrupted")
                raise
        finally:
            beat.stop()
        try:
            if run is None:
                tell_failed(study, trial, "failed")
            else:
                study.tell(trial, run.result.final_val_acc)
        except Exception as e:  # its worker taken for dead meanwhile (silent too long): the run went back to the queue
            display.note(f"  note: the queue had given this run up ({type(e).__name__}); it may run again")
        after()


def outcome(study, todo: list[tuple[Cell, int]], set_label: str, display: Display) -> tuple[list[str], list[str]]:
    """The run ids this command's runs made, and the runs that failed or were not run."""
    keys = {key(cell.name, r, set_label): (cell.name, r) for cell, r in todo}
    latest = {t.user_attrs["suite.key"]: t for t in settled(study, set(keys))}
    made, failed = [], []
    for k, (name, r) in keys.items():
        t = latest.get(k)
        if t is None:
            display.note(f"not run: {name} repeat {r} (no worker left)")
        if t is not None and t.state.name == "COMPLETE":
            made.append(t.user_attrs["mlflow_run_id"])
        else:
            failed.append(f"{name}#{r}")
    return made, failed


def join(path: Path, sets: dict, storage: str | None, heartbeat: int, device: str | None, data_dir: str | None,
         tracking_uri: str | None, label: str, live: Every, log: Callable[[str], None]) -> None:
    """A worker started by the launcher: run the suite's queued runs on this GPU (the coordinator reaps)."""
    from vitbench.cells import load_suite, splits_for
    from vitbench.compute import compiles
    from vitbench.launcher import started_at, wait_for_release
    from vitbench.runner import preload
    from vitbench.tracking import connect

    if (launched := started_at()) is not None:  # the interpreter's start and the CLI's imports: "process start"
        wall.restart("the coordinator started it", earlier=max(0.0, time.time() - launched))
        wall.mark("process start")
    suite = load_suite(path, sets)
    with wall.phase("imports"):  # what the first run would import, while no run waits for it
        configs = [cell_configs(c, 0, device, data_dir) for c in suite.cells]
        preload(tracking_uri, compiled=any(compiles(cfg.compile, model_cfg) for cfg, model_cfg in configs))
    with contextlib.suppress(Exception):  # the first cell's data; a cell whose data fails says so in its run
        splits_for(*configs[0])
    with wall.phase("store"):
        uri = connect(tracking_uri)
    with wall.phase("waiting for the queue"):
        wait_for_release()
    shown = Display("off", log=lambda line: log(f"[{label}] {line}"))
    work_cells(suite.path, open_queue(suite.name, storage or default_storage(uri)), device, data_dir, uri,
               shown, live, label, heartbeat, reap=False)

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
        if cell in self.left:  # a run queued twice by two hosts may settle twice
            self.left.remove(cell)
        done = self.total - len(self.left)
        left = self.remaining()
        if done == 1 and self.left:
            self.display.note(f"suite {self.name}: the first run took {duration(seconds)} -> {self.total} runs "
                              f"~ {duration(now - self.t0 + left)} in all (cells not yet run estimated at the "
                              "mean run so far)")
        self.task.update(done, fields={"ETA": duration(left)}, force_line=True)

    def follow(self, study, keys: set[str]) -> Callable[[], None]:
        """What counts these runs' trials in the queue as they settle (called now and then)."""
        seen: set[int] = set()

        def tick() -> None:
            for t in settled(study, keys):
                if t.number not in seen:
                    seen.add(t.number)
                    self.ran(t.user_attrs["suite.cell"], (t.datetime_complete - t.datetime_start).total_seconds())

        return tick

    def close(self) -> None:
        self.task.close()
