"""When the tracking server is lost in the middle of a run, the training is not thrown away.

Every record of a run (metrics, tags, artifacts, its final status) goes through an ``Outbox``. While the
store answers, records are sent as usual. The first record that cannot be sent switches the run to
offline: that record and every later one are appended to ``<checkpoint dir>/<run id>/unsent.jsonl``, one
line says so, and training goes on. ``vitbench sync RUN_ID`` sends the file once the server is back.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vitbench.errors import VitbenchError


class Outbox:
    def __init__(self, folder: str | Path, uri: str, run_id: str = "") -> None:
        self.folder, self.uri, self.run_id = Path(folder), uri, run_id
        self.offline = False

    @property
    def path(self) -> Path:
        return self.folder / self.run_id / "unsent.jsonl"

    def _send(self, record: dict, send: Callable[[], object]) -> None:
        if not self.offline:
            try:
                send()
                return
            except Exception as e:  # the store is gone (connection refused, timeouts, HTTP 5xx)
                self._go_offline(e)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({**record, "time": int(time.time() * 1000)}) + "\n")

    def _go_offline(self, e: Exception) -> None:
        from vitbench.tracking import mask_secrets

        self.offline = True
        sys.stderr.write(mask_secrets(
            f"tracking store {self.uri} lost ({type(e).__name__}): run {self.run_id} goes on; what could not be "
            f"sent is kept in {self.path}; send it with `vitbench sync {self.run_id}` once the store is back\n"))
        sys.stderr.flush()

    def metrics(self, metrics: dict[str, float], step: int | None = None, wait: bool = True) -> None:
        """``wait=False`` (live metrics): queued, the training thread does not wait on the store."""
        import mlflow

        self._send({"metrics": metrics, "step": step},
                   lambda: mlflow.log_metrics(metrics, step=step, synchronous=wait))

    def flush(self) -> None:
        """Send what ``wait=False`` queued (a store that is gone already switched the run offline)."""
        import mlflow

        with contextlib.suppress(Exception):
            mlflow.flush_async_logging()

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
            mlflow.end_run(status)  # pops the local run first, then tells the store
        except Exception as e:
            if not self.offline:
                self._go_offline(e)
        if self.offline:
            self._send({"end": status}, lambda: None)


def sync(run_id: str, folder: str | Path, log: Callable[[str], None] = print) -> int:
    """Send what a run could not send while its tracking store was away; returns the records sent."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    path = Outbox(folder, "", run_id).path
    if not path.exists():
        raise VitbenchError(f"nothing to send for run {run_id}: no {path}")
    client = MlflowClient()
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
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
            client.set_terminated(run_id, r["end"], end_time=r["time"])
    path.rename(path.with_name("sent.jsonl"))
    log(f"sent {len(records)} record(s) of run {run_id}; {path} is now {path.with_name('sent.jsonl').name}")
    return len(records)
