"""`vitbench suite --gpus N`: a suite's runs spread over N worker processes, one per GPU.

Each worker is a process of its own (multiprocessing, spawned) that sees one GPU through
``CUDA_VISIBLE_DEVICES`` and takes (cell, repeat) pairs from one shared queue until it is empty, so a
long cell never holds up the others. A failed run fails only itself; a worker that dies fails the run
it held. Workers sit in process groups of their own: Ctrl-C reaches the coordinator, which passes one
SIGINT to each worker; each ends its run KILLED with a checkpoint, as a run on its own would.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Callable
from pathlib import Path

from vitbench import wall
from vitbench.errors import VitbenchError
from vitbench.gpus import DEVICE_FILE, listed_gpus
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
    if device == "cpu" or not (listed or DEVICE_FILE.exists()):
        return [f"cpu{i}" for i in range(n)]
    ids = listed or [str(i) for i in range(n)]
    return ids[:n] if len(ids) >= n else None


def worker(path: str, gpu: str, device: str | None, data_dir: str | None, tracking_uri: str | None,
           live: Every, tasks, events, threads: int, started: float) -> None:
    """One worker process: runs (cell, repeat) pairs from ``tasks`` until it draws None. ``started``: the
    coordinator's ``time.time()`` as it started this process; the worker's wall time counts from there."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the coordinator only; it passes one SIGINT on
    spawn = max(0.0, time.time() - started)  # a fresh interpreter, vitbench imported, the arguments read
    wall.restart("the coordinator started it", earlier=spawn)
    wall.add("process start", spawn)
    with wall.phase("imports"):
        import mlflow  # noqa: F401  (imported now: seconds the first run would otherwise wait)
        import torch

        from vitbench.cells import cell_configs, load_suite, run_cell, splits_for
        from vitbench.runner import preload  # and what its runs' plots need: seaborn, scipy
        from vitbench.train import compiles

    # The host's cores shared among the workers, as torch.distributed.run does for its ranks: each worker's
    # thread pool sized to the whole host made side-by-side runs contend for the cores.
    torch.set_num_threads(threads)
    if not (device == "cpu" or gpu.startswith("cpu")) and torch.cuda.is_available():
        with wall.phase("CUDA context"):  # made while the coordinator opens the store, with cuBLAS's handle
            torch.ones(8, 8, device="cuda").matmul(torch.ones(8, 8, device="cuda"))
    try:
        suite = load_suite(path)
    except Exception:  # the coordinator reads the same file and says what is wrong with it, in one line
        os._exit(1)
    with wall.phase("imports"):  # what the first run would import; it would wait for the store meanwhile
        configs = [cell_configs(c, 0, device, data_dir) for c in suite.cells]
        preload(tracking_uri, compiled=any(compiles(cfg.compile, model_cfg) for cfg, model_cfg in configs))
    with contextlib.suppress(Exception):  # the first cell's data; a cell whose data fails says so in its run
        splits_for(*configs[0])
    cells = {c.name: c for c in suite.cells}
    shown = Display("off", log=lambda line: events.put(("note", gpu, line)))

    def next_task():
        with wall.phase("waiting for a run"):
            return tasks.get()

    with contextlib.suppress(KeyboardInterrupt):
        while (item := next_task()) is not None:
            name, r = item
            events.put(("start", gpu, name, r))
            t0 = time.perf_counter()
            try:
                run_id = run_cell(suite, cells[name], r, device, data_dir, tracking_uri, shown, live, lambda s: None,
                                  tags={"suite.gpu": gpu})
            except KeyboardInterrupt:
                events.put(("done", gpu, name, r, None, time.perf_counter() - t0))
                raise
            events.put(("done", gpu, name, r, run_id, time.perf_counter() - t0))
    events.put(("wall", gpu, wall.summary()))
    # Every run is ended and its store committed: leave without the interpreter's teardown (torch's compile
    # workers, the CUDA context, MLflow's thread pools), seconds the coordinator would wait for at the end.
    events.close()
    events.join_thread()
    os._exit(0)


class Pool:
    """The coordinator's side: start one worker per GPU, feed the queue, follow what they report."""

    def __init__(self, path: str | Path, gpus: list[str], device: str | None, data_dir: str | None,
                 tracking_uri: str | None, live: Every) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: no CUDA state inherited from the coordinator
        self.tasks, self.events = ctx.Queue(), ctx.Queue()
        self.gpus, self.holding = gpus, {g: None for g in gpus}
        self.procs: dict[str, mp.process.BaseProcess] = {}
        threads = max(1, (os.cpu_count() or 1) // len(gpus))
        for g in gpus:
            env = {} if g.startswith("cpu") else {"CUDA_VISIBLE_DEVICES": g}
            with environ(env):  # a spawned child copies the environment as it starts
                p = ctx.Process(target=worker, name=f"vitbench-suite-{g}", daemon=False,
                                args=(str(Path(path).resolve()), g, device, data_dir, tracking_uri, live,
                                      self.tasks, self.events, threads, time.time()))
                p.start()
            self.procs[g] = p

    def run(self, todo: list, on_done: Callable[[str, int, str | None, float], None],
            note: Callable[[str], None]) -> None:
        for cell, r in todo:
            self.tasks.put((cell.name, r))
        for _ in self.gpus:
            self.tasks.put(None)
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

    def discard(self) -> None:
        """No runs for the workers (all FINISHED, or one run only): stopped wherever they are in starting up."""
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
        deadline = time.time() + timeout
        for p in self.procs.values():
            p.join(max(0.1, deadline - time.time()))
            if p.is_alive():
                p.kill()
        if self.events is None:  # closed already
            return
        with contextlib.suppress(queue.Empty, OSError, EOFError):  # where each worker's wall time went
            while True:
                kind, gpu, *rest = self.events.get_nowait()
                if kind == "wall":
                    wall.WORKERS[gpu] = rest[0]
        for q in (self.tasks, self.events):
            q.cancel_join_thread()
            q.close()
        # The queues' semaphores released now: the command leaves with os._exit, which would leave them to
        # multiprocessing's resource tracker, and it warned of "leaked semaphore objects" after every suite.
        self.tasks = self.events = None
        gc.collect()


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
