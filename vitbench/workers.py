"""`vitbench suite --gpus N`: a suite's runs spread over N worker processes, one per GPU.

Each worker is a process of its own (multiprocessing, spawned) that sees one GPU through
``CUDA_VISIBLE_DEVICES`` and takes (cell, repeat) pairs from one shared queue until it is empty, so a
long cell never holds up the others. A failed run fails only itself; a worker that dies fails the run
it held. Workers sit in process groups of their own: Ctrl-C reaches the coordinator, which passes one
SIGINT to each worker; each ends its run KILLED with a checkpoint, as a run on its own would.

A worker serves jobs, one per `suite` command (the suite, where its runs go, the caller's folder and environment).
A command in a process of its own has one job and lets its workers go; a warm process (``vitbench.warm``) keeps
them, idle, between its suites: its next suite on the same GPUs skips the seconds of a worker's start.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vitbench import serving, wall
from vitbench.conditions import nvml_gpus
from vitbench.errors import VitbenchError
from vitbench.gpus import listed_gpus
from vitbench.progress import Display, Every


def resolve_gpus(gpus: str, device: str | None) -> list[str]:
    """``--gpus N|all`` -> the GPU ids the workers take, one each; on the CPU (``--device cpu``, or no GPU
    with a number given) N labels 'cpu0', 'cpu1', ... for N CPU processes."""
    from vitbench.distributed import visible_gpus

    visible = [] if device == "cpu" else visible_gpus()
    if gpus == "all":
        if not visible:
            raise VitbenchError("--gpus all: no CUDA GPU is visible; --gpus N runs N processes on the CPU")
        return visible
    try:
        n = int(gpus)
    except ValueError:
        raise VitbenchError(f"--gpus takes a number or 'all', got {gpus!r}") from None
    if n < 1:
        raise VitbenchError(f"--gpus must be >= 1, got {n}")
    if not visible:
        return [f"cpu{i}" for i in range(n)]
    if n > len(visible):
        raise VitbenchError(f"--gpus {n}: this machine shows {len(visible)} GPU(s) ({', '.join(visible)})")
    return visible[:n]


def likely_gpus(gpus: str, device: str | None) -> list[str] | None:
    """What ``resolve_gpus`` will answer, told without importing torch (seconds), so that the workers can
    start importing it alongside the coordinator; None where it cannot be told (``all``, fewer than 2).
    The coordinator checks the guess against ``resolve_gpus`` and starts again where it was wrong."""
    try:
        n = int(gpus)
    except ValueError:
        return None
    if n < 2:
        return None
    listed = listed_gpus()
    ids = listed or nvml_gpus()  # NVML's count: no torch, no guess
    if device == "cpu" or not ids:
        return [f"cpu{i}" for i in range(n)]
    return ids[:n] if len(ids) >= n else None


@dataclass(frozen=True)
class Job:
    """One `suite` command for the workers: the suite, where its runs are recorded, and the caller's folder and
    environment (a warm process's workers serve one caller's command after another's)."""

    path: str
    data_dir: str | None
    tracking_uri: str | None
    live: Every
    cwd: str
    env: dict[str, str]
    started: float  # the coordinator's time.time() as the command began
    sets: dict  # `suite --set`

    @classmethod
    def now(cls, path: str | Path, data_dir: str | None, tracking_uri: str | None, live: Every,
            sets: dict | None = None) -> Job:
        began = time.time() - (time.perf_counter() - wall.START)  # the command's start, as its wall time counts
        return cls(str(Path(path).resolve()), data_dir, tracking_uri, live, os.getcwd(), dict(os.environ), began,
                   dict(sets or {}))


def worker(gpu: str, device: str | None, jobs, tasks, events, threads: int, started: float) -> None:
    """One worker process: for each job from ``jobs`` (None: leave), runs (cell, repeat) pairs from ``tasks``
    until it draws None. ``started``: the coordinator's ``time.time()`` as it started this process; the first
    job's wall time counts from there, a later one's from when its command began."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the coordinator only; it passes one SIGINT on
    parent = os.getppid()
    spawn = max(0.0, time.time() - started)  # a fresh interpreter, vitbench imported, the arguments read
    wall.restart("the coordinator started it", earlier=spawn)
    wall.add("process start", spawn)
    with wall.phase("imports"):
        import mlflow  # noqa: F401  (imported now: seconds the first run would otherwise wait)
        import torch

        from vitbench.cells import cell_configs, load_suite, run_cell, splits_for  # noqa: F401
        from vitbench.compute import room_to_compile
        from vitbench.runner import preload  # noqa: F401  (and what its runs' plots need: seaborn, scipy)

    # The host's cores shared among the workers, as torch.distributed.run does for its ranks: each worker's
    # thread pool sized to the whole host made side-by-side runs contend for the cores.
    torch.set_num_threads(threads)
    if not (device == "cpu" or gpu.startswith("cpu")) and torch.cuda.is_available():
        with wall.phase("CUDA context"):  # made while the coordinator opens the store, with cuBLAS's handle
            torch.ones(8, 8, device="cuda").matmul(torch.ones(8, 8, device="cuda"))
    done, served = 0, True
    while served and (job := next_job(jobs, parent)) is not None:
        if done:  # a warm process's next suite: counted from when its command began; its runs say so
            wall.restart("the command began", earlier=max(0.0, time.time() - job.started))
            serving.SERVING = (os.getpid(), done + 1)
        served = serve(job, gpu, device, tasks, events) and room_to_compile()  # else a fresh worker next time
        done += 1
        events.put(("wall", gpu, wall.summary()))
        serving.release_memory()  # between two jobs it holds no tensors of the last
    # Every run is ended and its store committed: leave without the interpreter's teardown (torch's compile
    # workers, the CUDA context, MLflow's thread pools), seconds the coordinator would wait for at the end.
    events.close()
    events.join_thread()
    os._exit(0)


def next_job(jobs, parent: int) -> Job | None:
    """The next job; None when told to leave, or when the coordinator is gone (a worker is never orphaned)."""
    while True:
        try:
            return jobs.get(timeout=5.0)
        except queue.Empty:
            if os.getppid() != parent:
                return None


def serve(job: Job, gpu: str, device: str | None, tasks, events) -> bool:
    """One job's runs; False where it was interrupted (the worker then leaves)."""
    from vitbench import tracking
    from vitbench.cells import cell_configs, forget_data, load_suite, run_cell, splits_for
    from vitbench.compute import compiles
    from vitbench.runner import preload

    own = {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES",) if k in os.environ and not gpu.startswith("cpu")}
    os.environ.clear()  # the caller's environment and folder (the same as at the start, for a first job)
    os.environ.update({**job.env, **own})
    os.chdir(job.cwd)
    tracking.reset()  # the stores, the commit and the ended runs of an earlier command
    forget_data()  # its data too: a relative data folder means another one in another folder
    try:
        suite = load_suite(job.path, job.sets)
    except Exception:  # the coordinator reads the same file and says what is wrong with it, in one line
        os._exit(1)
    with wall.phase("imports"):  # what the first run would import; it would wait for the store meanwhile
        configs = [cell_configs(c, 0, device, job.data_dir) for c in suite.cells]
        preload(job.tracking_uri, compiled=any(compiles(cfg.compile, model_cfg) for cfg, model_cfg in configs))
    with contextlib.suppress(Exception):  # the first cell's data; a cell whose data fails says so in its run
        splits_for(*configs[0])
    cells = {c.name: c for c in suite.cells}
    shown = Display("off", log=lambda line: events.put(("note", gpu, line)))

    def next_task():
        with wall.phase("waiting for a run"):
            return tasks.get()

    try:
        while (item := next_task()) is not None:
            name, r = item
            events.put(("start", gpu, name, r))
            t0 = time.perf_counter()
            try:
                run_id = run_cell(suite, cells[name], r, device, job.data_dir, job.tracking_uri, shown, job.live,
                                  lambda s: None, tags={"suite.gpu": gpu})
            except KeyboardInterrupt:
                events.put(("done", gpu, name, r, None, time.perf_counter() - t0))
                raise
            events.put(("done", gpu, name, r, run_id, time.perf_counter() - t0))
    except KeyboardInterrupt:
        return False
    return True


KEPT: dict[tuple, Pool] = {}  # a warm process's workers between its suite commands, by (GPUs, device)


def pool_for(path: str | Path, gpus: list[str], device: str | None, data_dir: str | None, tracking_uri: str | None,
             live: Every, sets: dict | None = None) -> Pool:
    """Workers for this command, told its job: those a warm process kept from its last suite on the same GPUs
    (torch, CUDA and MLflow loaded: the seconds a worker's start takes are gone), where all are alive; else new."""
    kept = KEPT.pop((tuple(gpus), device), None)
    if kept is not None and not kept.alive():
        kept.discard()
        kept = None
    pool = kept or Pool(gpus, device)
    pool.begin(Job.now(path, data_dir, tracking_uri, live, sets))
    return pool


def kept_workers() -> dict[str, int]:
    """The kept workers' process ids by GPU (``vitbench warm`` lists them: each holds a CUDA context)."""
    return {g: p.pid for pool in list(KEPT.values()) for g, p in pool.procs.items() if p.pid is not None}


def close_kept() -> None:
    """A warm process leaving: the workers it kept leave too."""
    while KEPT:
        KEPT.popitem()[1].close(timeout=10)


class Pool:
    """The coordinator's side: start one worker per GPU, feed the queue, follow what they report."""

    def __init__(self, gpus: list[str], device: str | None) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: no CUDA state inherited from the coordinator
        with own_stdio():  # the queues' semaphores start multiprocessing's resource tracker, a process too
            self.tasks, self.events = ctx.Queue(), ctx.Queue()
            self.jobs = {g: ctx.Queue() for g in gpus}
        self.gpus, self.device, self.holding = gpus, device, {g: None for g in gpus}
        self.kept, self.ended = False, True  # kept from an earlier command; this job's end told to every worker
        self.procs: dict[str, mp.process.BaseProcess] = {}
        threads = max(1, (os.cpu_count() or 1) // len(gpus))
        for g in gpus:
            env = {} if g.startswith("cpu") else {"CUDA_VISIBLE_DEVICES": g}
            with environ(env), own_stdio():  # a spawned child copies the environment as it starts
                p = ctx.Process(target=worker, name=f"vitbench-suite-{g}", daemon=False,
                                args=(g, device, self.jobs[g], self.tasks, self.events, threads, time.time()))
                p.start()
            self.procs[g] = p

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs.values())

    def begin(self, job: Job) -> None:
        """This command's job to every worker; they load the suite and its first cell's data, then take runs."""
        self.ended = False
        for q in self.jobs.values():
            q.put(job)

    def end(self) -> None:
        """No more runs in this job: one None per worker, each drawn by one worker as its last task."""
        if not self.ended:
            for _ in self.gpus:
                self.tasks.put(None)
            self.ended = True

    def run(self, todo: list, on_done: Callable[[str, int, str | None, float], None],
            note: Callable[[str], None]) -> None:
        for cell, r in todo:
            self.tasks.put((cell.name, r))
        self.end()
        pending = {(cell.name, r) for cell, r in todo}

        def done(name: str, r: int, run_id: str | None, seconds: float) -> None:
            pending.discard((name, r))
            on_done(name, r, run_id, seconds)

        while pending:
            try:
                event = self.events.get(timeout=1.0)
            except queue.Empty:
                self.reap(done, note)
                if not any(p.is_alive() for p in self.procs.values()) and self.events.empty():
                    break
                continue
            kind, gpu, *rest = event
            if kind == "note":
                note(f"[{gpu}] {rest[0]}")
            elif kind == "start":
                self.holding[gpu] = (rest[0], rest[1], time.perf_counter())
            elif kind == "wall":
                wall.WORKERS[gpu] = rest[0]
            else:
                self.holding[gpu] = None
                done(*rest)
        for name, r in sorted(pending):  # every worker died before these started
            note(f"not run: {name} repeat {r} (no worker left)")
            on_done(name, r, None, 0.0)

    def reap(self, on_done: Callable, note: Callable[[str], None]) -> None:
        """A worker that died (a crash, the OOM killer) fails the run it held."""
        for g, p in self.procs.items():
            held = self.holding[g]
            if held is not None and not p.is_alive():
                note(f"[{g}] worker died (exit code {p.exitcode}) during {held[0]} repeat {held[1]}")
                self.holding[g] = None
                on_done(held[0], held[1], None, time.perf_counter() - held[2])

    def release(self) -> None:
        """The command is done with its workers: a warm process keeps them, idle, for its next suite on these GPUs
        (once each has said where its wall time went); any other process lets them leave."""
        if serving.SERVING is None:
            self.close()
            return
        self.end()
        self.collect_walls(30)
        if set(wall.WORKERS) < set(self.gpus) or not self.alive():
            self.close()
            return
        close_kept()  # one set of idle workers at most: those of the last suite
        self.kept = True
        KEPT[(tuple(self.gpus), self.device)] = self

    def collect_walls(self, seconds: float) -> None:
        """Where each worker's wall time went, as it says at the end of a job (those said while the runs went on
        ``run`` read): read until every worker has said it, waiting up to ``seconds`` while they are alive."""
        deadline = time.time() + seconds
        with contextlib.suppress(OSError, EOFError):
            while set(wall.WORKERS) < set(self.gpus):
                waiting = time.time() < deadline and self.alive()
                try:
                    kind, gpu, *rest = self.events.get(timeout=0.5) if waiting else self.events.get_nowait()
                except queue.Empty:
                    if waiting:
                        continue
                    return
                if kind == "wall":
                    wall.WORKERS[gpu] = rest[0]

    def discard(self) -> None:
        """No runs for the workers (all FINISHED, or one run only): stopped wherever they are in starting up;
        workers a warm process kept are idle, and stay kept."""
        if self.kept and serving.SERVING is not None:
            self.release()
            return
        for p in self.procs.values():
            p.kill()
        self.close(timeout=10)

    def interrupt(self) -> int:
        """One SIGINT to each worker, then wait for them to end their runs KILLED; how many were running."""
        for p in self.procs.values():
            if p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGINT)
        busy = sum(held is not None for held in self.holding.values())
        self.close(timeout=120)
        return busy

    def close(self, timeout: float = 30) -> None:
        if self.events is None:  # closed already
            return
        for q in self.jobs.values():  # a worker between jobs leaves; one in a job leaves after it
            with contextlib.suppress(ValueError, OSError):
                q.put(None)
        deadline = time.time() + timeout
        for p in self.procs.values():
            p.join(max(0.1, deadline - time.time()))
            if p.is_alive():
                p.kill()
        self.collect_walls(0)
        for q in (self.tasks, self.events, *self.jobs.values()):
            q.cancel_join_thread()
            q.close()
        # The queues' semaphores released now: the command leaves with os._exit, which would leave them to
        # multiprocessing's resource tracker, and it warned of "leaked semaphore objects" after every suite.
        self.tasks = self.events = None
        self.jobs = {}
        gc.collect()


@contextlib.contextmanager
def own_stdio():
    """Workers started by a warm process outlive the command: they get its own stdin, stdout and stderr (its log),
    not the caller's terminal or pipes, which a kept worker would hold open after the caller's command ended."""
    if serving.STDIO is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    callers = [os.dup(fd) for fd in (0, 1, 2)]
    for fd, own in enumerate(serving.STDIO):
        os.dup2(own, fd)
    try:
        yield
    finally:
        for fd, caller in enumerate(callers):
            os.dup2(caller, fd)
            os.close(caller)


@contextlib.contextmanager
def environ(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
