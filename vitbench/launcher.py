"""Worker processes, one per GPU, for `suite --gpus N` and `sweep --workers N`: the one way vitbench starts them.

Each worker is the same command line run again (``python -m vitbench ...``) with ``--worker LABEL``: a process of
its own that sees one GPU through ``CUDA_VISIBLE_DEVICES`` (on the CPU, its share of the cores), imports torch once
and claims run after run from the command's Optuna study until none is left. Workers sit in sessions of their own:
Ctrl-C reaches the coordinator, which passes one SIGINT to each; each ends its run KILLED with a checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from vitbench.errors import VitbenchError

LAUNCHED = "VITBENCH_LAUNCHED"  # the coordinator's time.time() as it started a worker (its wall counts from there)


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


def without(argv: list[str], option: str) -> list[str]:
    """The command line without ``option`` and its value (``--gpus 2`` or ``--gpus=2``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def launch(argv: list[str], labels: list[str], gpus: list[str | None], env: dict[str, str] | None = None,
           held: bool = False) -> list[subprocess.Popen]:
    """One ``python -m vitbench ARGV --worker LABEL`` per label, on its GPU (None: the CPU, with its share of the
    cores, as torch.distributed.run shares them among ranks). ``held``: each waits, once it has imported what it
    needs, for ``release`` (a line on its stdin), so that it starts while the coordinator still prepares its work."""
    threads = str(max(1, (os.cpu_count() or 1) // len(labels)))
    procs = []
    for label, gpu in zip(labels, gpus, strict=True):
        own = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {"OMP_NUM_THREADS": threads}
        procs.append(subprocess.Popen([sys.executable, "-m", "vitbench", *argv, "--worker", label],
                                      env={**os.environ, **(env or {}), **own, LAUNCHED: str(time.time())},
                                      stdin=subprocess.PIPE if held else None, text=True,
                                      start_new_session=True))  # a terminal's Ctrl-C reaches the coordinator only
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    """Held workers that will not be needed: gone, wherever they are in starting."""
    for p in procs:
        p.kill()
        p.wait()


def release(procs: list[subprocess.Popen]) -> None:
    """The held workers may go on."""
    for p in procs:
        with contextlib.suppress(OSError, ValueError):
            p.stdin.write("go\n")
            p.stdin.close()


def wait_for_release() -> None:
    """A held worker's side of ``release``."""
    sys.stdin.readline()


def supervise(procs: list[subprocess.Popen], tick: Callable[[], None], every: float = 1.0) -> None:
    """Wait for the workers, calling ``tick`` meanwhile (progress, dead workers' runs back in the queue); Ctrl-C:
    one SIGINT to each, then wait for them to end their runs KILLED."""
    try:
        while any(p.poll() is None for p in procs):
            with contextlib.suppress(Exception):  # a store away for a moment: the next tick tries again
                tick()
            time.sleep(every)
        tick()
    except KeyboardInterrupt:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
        raise


def started_at() -> float | None:
    """When the coordinator started this worker (None: not a launched worker)."""
    value = os.environ.get(LAUNCHED)
    return float(value) if value else None
