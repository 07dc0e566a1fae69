"""When the tracking server is lost in the middle of a run, the training is not thrown away.

Every record of a run (metrics, tags, artifacts, its final status) goes through an ``Outbox``. While the
store answers, records are sent as usual. The first record that cannot be sent switches the run to
offline: that record and every later one are appended to ``<checkpoint dir>/<run id>/unsent.jsonl``, one
line says so, and training goes on. ``vitbench sync RUN_ID`` sends the file once the server is back.

Live (step-level) metrics are sent by the outbox's own thread, so the training thread never waits on the
store; a batch that thread cannot send goes to the same file, so every point logged reaches the store.
A full disk is not a lost store: it is one line naming the file that could not be written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vitbench.errors import DISK_FULL, VitbenchError, check_run_id, write_error
from vitbench.mlflow_ui import readable
from vitbench.secrets import mask_secrets

PROCESS_GONE = "process gone"  # how the reaper's error tag starts (liveness.orphan_reason)


def pending_folder() -> Path:
    """Where a host keeps one marker per run whose records wait in an outbox: such a run is not an orphan."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vitbench" / "unsent"


def has_pending(run_id: str) -> bool:
    return (pending_folder() / run_id).exists()


def _disk_full(e: BaseException) -> OSError | None:
    """The OSError of a full disk behind ``e`` (MLflow and SQLAlchemy wrap it), else None."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return e
        if "database or disk is full" in str(e):
            return OSError(DISK_FULL[0], "database or disk is full")
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


class Outbox:
    def __init__(self, folder: str | Path, uri: str, run_id: str = "") -> None:
        self.folder, self.uri, self.run_id = Path(folder), uri, run_id
        self.offline = False
        self._file_lock = threading.Lock()
        self._live: list[tuple[dict, int | None, int]] = []
        self._wake = threading.Condition()
        self._sending = 0
        self._sender: threading.Thread | None = None
        self._sender_error: VitbenchError | None = None

    @property
    def path(self) -> Path:
        return self.folder / self.run_id / "unsent.jsonl"

    def _send(self, record: dict, send: Callable[[], object]) -> None:
        if not self.offline:
            try:
                send()
                return
            except Exception as e:  # the store is gone (connection refused, timeouts, HTTP 5xx) or the disk full
                if (full := _disk_full(e)) is not None:
                    raise write_error(record.get("artifact") or "the tracking store", full,
                                      "to the tracking store" if "artifact" not in record else "artifact") from None
                self._go_offline(e)
        self._keep([{**record, "time": record.get("time", int(time.time() * 1000))}])

    def _keep(self, records: list[dict]) -> None:
        try:
            with self._file_lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not self.path.exists():  # which store the records belong to (its password never on disk)
                    records = [{"store": mask_secrets(self.uri)}, *records]
                with self.path.open("a") as f:
                    f.write("".join(json.dumps(r) + "\n" for r in records))
        except OSError as e:
            raise write_error(self.path, e, "the run's unsent records") from None

    def _go_offline(self, e: Exception) -> None:
        with self._file_lock:
            if self.offline:
                return
            self.offline = True
        with contextlib.suppress(OSError):  # the next command must not take this run for a dead one
            pending_folder().mkdir(parents=True, exist_ok=True)
            (pending_folder() / self.run_id).write_text(str(self.path.resolve()) + "\n")
        sys.stderr.write(mask_secrets(
            f"tracking store {self.uri} lost ({type(e).__name__}): run {self.run_id} goes on; what could not be "
            f"sent is kept in {self.path}; send it with `{self.sync_command()}` once the store is back\n"))
        sys.stderr.flush()

    def sync_command(self) -> str:
        """The command that sends this run's records, as it works when pasted here (its store is recorded)."""
        folder = "" if self.folder == Path("checkpoints") else f" --checkpoint-dir {shlex.quote(str(self.folder))}"
        return f"vitbench sync {self.run_id}{folder}"

    def metrics(self, metrics: dict[str, float], step: int | None = None, wait: bool = True, **linked) -> None:
        """``wait=False`` (live metrics): queued; the outbox's thread sends them, the training thread goes on.
        ``linked``: ``model_id`` and ``dataset`` the metrics describe (MLflow 3's logged models)."""
        import mlflow

        metrics = readable(metrics)
        if wait:
            self._send({"metrics": metrics, "step": step}, lambda: mlflow.log_metrics(metrics, step=step, **linked))
            return
        with self._wake:
            self._live.append((metrics, step, int(time.time() * 1000)))
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_live, name="vitbench-outbox", daemon=True)
                self._sender.start()
            self._wake.notify()

    def _send_live(self) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        while True:
            with self._wake:
                while not self._live:
                    self._wake.wait()
                batch, self._live = self._live, []
                self._sending = len(batch)
            records = [{"metrics": m, "step": s, "time": t} for m, s, t in batch]
            try:
                if not self.offline:
                    client.log_batch(self.run_id, metrics=[Metric(k, float(v), t, s or 0)
                                                           for m, s, t in batch for k, v in m.items()])
                    records = []
            except Exception as e:  # whatever the store said, the points are kept
                if (full := _disk_full(e)) is not None:
                    self._sender_error = write_error("the tracking store", full, "live metrics to")
                else:
                    self._go_offline(e)
            if records and self.offline:
                try:
                    self._keep(records)
                except VitbenchError as e:
                    self._sender_error = e
            with self._wake:
                self._sending = 0
                self._wake.notify_all()

    def flush(self) -> None:
        """Wait until every live metric is sent or kept; a full disk on the way is raised here."""
        with self._wake:
            while self._live or self._sending:
                self._wake.wait(0.5)
        if self._sender_error is not None:
            e, self._sender_error = self._sender_error, None
            raise e

    def tags(self, tags: dict[str, str]) -> None:
        import mlflow

        self._send({"tags": tags}, lambda: mlflow.set_tags(tags))

    def artifact(self, path: Path, folder: str | None = None) -> None:
        import mlflow

        self._send({"artifact": str(Path(path).resolve()), "folder": folder},
                   lambda: mlflow.log_artifact(str(path), folder))

    def end(self, status: str) -> None:
        """The run's final status; when offline, recorded for `vitbench sync` (the local run is closed)."""
        import mlflow

        try:
            self.flush()
        finally:
            try:
                mlflow.end_run(status)  # pops the local run first, then tells the store
            except Exception as e:
                if not self.offline:
                    self._go_offline(e)
            if self.offline:
                self._send({"end": status}, lambda: None)


def unsent(run_id: str, folder: str | Path) -> tuple[Path, list[dict]]:
    """The file of a run's unsent records and the records; one line if there is none."""
    path = Outbox(folder, "", check_run_id(run_id)).path
    if not path.exists():
        raise VitbenchError(f"nothing to send for run {run_id}: no {path}")
    try:
        return path, [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise VitbenchError(f"cannot read {path}: {e}") from None


def recorded_store(run_id: str, folder: str | Path) -> str | None:
    """The store the run's records belong to, as the run recorded it (None: a run from before it did)."""
    store = next((r["store"] for r in unsent(run_id, folder)[1] if "store" in r), None)
    if store is not None and ("***@" in store or "=***" in store):
        raise VitbenchError(f"run {run_id} was recorded in {store}, whose password is not kept on disk: give it with "
                            "--tracking-uri (or $MLFLOW_TRACKING_URI)")
    return store


def sync(run_id: str, folder: str | Path, log: Callable[[str], None] = print) -> int:
    """Send what a run could not send while its tracking store was away; returns the records sent. A run the
    reaper ended 'process gone' meanwhile gets its true status back and loses that error tag."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    path, records = unsent(run_id, folder)
    client = MlflowClient()
    try:
        client.get_run(run_id)
    except Exception:
        raise VitbenchError(f"run {run_id} is not in the tracking store {mask_secrets(mlflow.get_tracking_uri())}; "
                            "give the store it was recorded in with --tracking-uri") from None
    for r in records:
        if "metrics" in r:
            client.log_batch(run_id, metrics=[Metric(k, float(v), r["time"], r["step"] or 0)
                                              for k, v in r["metrics"].items()])
        elif "tags" in r:
            for k, v in r["tags"].items():
                client.set_tag(run_id, k, v)
        elif "artifact" in r:
            client.log_artifact(run_id, r["artifact"], r["folder"])
        elif "end" in r:
            error = client.get_run(run_id).data.tags.get("error", "")
            if error.startswith(PROCESS_GONE) and not any("error" in x.get("tags", {}) for x in records):
                client.delete_tag(run_id, "error")  # the reaper's guess, proven wrong by the run's own record
            client.set_terminated(run_id, r["end"], end_time=r["time"])
    path.rename(path.with_name("sent.jsonl"))
    with contextlib.suppress(OSError):
        (pending_folder() / run_id).unlink(missing_ok=True)
    log(f"sent {len(records)} record(s) of run {run_id}; {path} is now {path.with_name('sent.jsonl').name}")
    return len(records)
