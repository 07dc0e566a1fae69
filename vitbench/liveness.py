"""Whether a run's process still lives: the host, PID and heartbeat a running run carries, and the runs whose
process died without ending them (SIGKILL, the OOM killer, a lost node) found and ended FAILED."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import threading
import time

from vitbench.errors import VitbenchError
from vitbench.outbox import PROCESS_GONE, has_pending

HEARTBEAT_SECONDS = 60  # how often a running run stamps its heartbeat tag
HEARTBEAT_TIMEOUT = 15 * 60  # a run of another host silent this long is ended FAILED


def host() -> str:
    """The name this host goes by in the stores (``VITBENCH_HOST``, else its hostname): containers of several
    machines may share one hostname."""
    return os.environ.get("VITBENCH_HOST") or socket.gethostname()


def process_tags() -> dict[str, str]:
    """Which process is running a run, so any later command can tell whether it died: host, PID and the
    process's start (a resumed run's own start time is older than the process that continues it)."""
    import psutil

    return {"vitbench.host": host(), "vitbench.pid": str(os.getpid()),
            "vitbench.pid_started": f"{psutil.Process().create_time():.3f}"}


class Heartbeat:
    """Stamps ``vitbench.heartbeat`` (Unix seconds) on a run every HEARTBEAT_SECONDS from a daemon thread,
    so a run whose process died is recognisable from any machine."""

    def __init__(self, run_id: str) -> None:
        self.run_id, self.done = run_id, threading.Event()
        self._stamp()
        self.thread = threading.Thread(target=self._loop, name="vitbench-heartbeat", daemon=True)
        self.thread.start()

    def _stamp(self) -> None:
        from mlflow.tracking import MlflowClient

        with contextlib.suppress(Exception):  # a server that is away now may be back at the next beat
            MlflowClient().set_tag(self.run_id, "vitbench.heartbeat", f"{time.time():.0f}")

    def _loop(self) -> None:
        while not self.done.wait(HEARTBEAT_SECONDS):
            self._stamp()

    def stop(self) -> None:
        self.done.set()


def process_alive(pid: int, started_ms: int) -> bool:
    """Whether the process that started a run still runs (a reused PID started later is another one)."""
    import psutil

    try:
        return psutil.Process(pid).create_time() <= started_ms / 1000 + 1
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def orphan_reason(run, now: float | None = None) -> str | None:
    """Why a RUNNING run is dead, or None: its process is gone (this host), or its heartbeat is older
    than HEARTBEAT_TIMEOUT (another host). Runs vitbench did not start carry no host tag: left alone."""
    tags = run.data.tags
    where, pid, beat = tags.get("vitbench.host"), tags.get("vitbench.pid"), tags.get("vitbench.heartbeat")
    if not where or not pid:
        return None
    when = float(beat) if beat else run.info.start_time / 1000
    last = dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if where == host():
        if has_pending(run.info.run_id):  # finished offline: its records wait for `vitbench sync`
            return None
        started = float(tags.get("vitbench.pid_started", run.info.start_time / 1000)) * 1000
        if pid.isdigit() and not process_alive(int(pid), started):
            return f"{PROCESS_GONE}: pid {pid} on {where} no longer runs (last heartbeat {last})"
        return None
    silent = (now or time.time()) - when
    if silent > HEARTBEAT_TIMEOUT:
        return (f"{PROCESS_GONE}: no heartbeat from {where} since {last} "
                f"({silent / 60:.0f} min; the timeout is {HEARTBEAT_TIMEOUT // 60} min)")
    return None


def reap_orphans(experiment_ids: list[str]) -> list[str]:
    """End FAILED, with the reason as the ``error`` tag, every RUNNING run of these experiments whose
    process died without closing it (SIGKILL, the OOM killer, a lost node). Returns their ids."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    reaped = []
    with contextlib.suppress(Exception):  # never let housekeeping stop the command the user asked for
        for run in client.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=1000):
            reason = orphan_reason(run)
            if reason is not None:
                client.set_tag(run.info.run_id, "error", reason)
                client.set_terminated(run.info.run_id, "FAILED")
                reaped.append(run.info.run_id)
    return reaped


def check_not_running(run_id: str) -> None:
    """A run is continued by one process at a time: one whose process still runs it is one line."""
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient().get_run(run_id)
    except Exception:
        return  # not in this store: the caller says so where it matters
    if run.info.status == "RUNNING" and run.data.tags.get("vitbench.pid") and orphan_reason(run) is None:
        raise VitbenchError(f"run {run_id} is still running (pid {run.data.tags['vitbench.pid']} on "
                            f"{run.data.tags.get('vitbench.host', '?')}); stop it before continuing it")


def end_orphaned(run_id: str, status: str = "FAILED", reason: str = "") -> None:
    """Terminate a run left RUNNING by a process that died (SIGKILL, power loss)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    if run.info.status == "RUNNING":
        if reason:
            client.set_tag(run_id, "error", reason)
        client.set_terminated(run_id, status)
