"""Everything MLflow: where runs go, what conditions they carry, and how they end."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import torch

from vitbench import __version__
from vitbench.errors import VitbenchError


def resolve_tracking_uri(uri: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    return uri


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


def default_artifact_root(uri: str) -> str | None:
    """Local stores keep artifacts in ./mlruns beside the database; servers choose their own."""
    db = _sqlite_path(uri)
    return (db.parent.resolve() / "mlruns").as_uri() if db is not None else None


def connect(uri: str | None = None) -> str:
    """Point MLflow at the store, checking first that it can be written (one-line errors)."""
    import mlflow

    for name in ("mlflow", "alembic"):  # schema-migration chatter is not news to a user
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = resolve_tracking_uri(uri)
    db = _sqlite_path(uri)
    if db is not None:
        parent = db.parent if str(db.parent) else Path(".")
        if not parent.is_dir():
            raise VitbenchError(f"cannot use tracking store {uri}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise VitbenchError(f"cannot write the tracking store {uri}: {parent} is not writable")
    mlflow.set_tracking_uri(uri)
    return uri


def get_experiment_id(name: str, uri: str | None = None) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(uri)
    try:
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return mlflow.create_experiment(name, artifact_location=default_artifact_root(uri))
    except MlflowException as e:
        raise VitbenchError(f"tracking store {uri} failed: {str(e).splitlines()[0][:200]}") from None
    except Exception as e:  # SQLAlchemy / network errors
        raise VitbenchError(f"tracking store {uri} is not usable: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


@lru_cache(maxsize=1)
def _git_commit() -> str:
    """The checkout's commit (-dirty with local changes); $VITBENCH_GIT_COMMIT where there is no .git
    (a copied tree, a container)."""
    if os.environ.get("VITBENCH_GIT_COMMIT"):
        return os.environ["VITBENCH_GIT_COMMIT"]
    here = Path(__file__).resolve().parent.parent
    for cwd in (here, Path.cwd()):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
            if out.returncode == 0:
                dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                       capture_output=True, text=True, timeout=5).stdout.strip()
                return out.stdout.strip() + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


@lru_cache(maxsize=1)
def _driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "none"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "none"


def environment_tags(device: torch.device | None = None) -> dict[str, str]:
    """The conditions a number is reported with: hardware, versions, code, command."""
    cuda = device is not None and device.type == "cuda"
    return {
        "gpu": torch.cuda.get_device_name(device) if cuda else "none",
        "device": str(device) if device is not None else "",
        "cpu": platform.processor() or platform.machine(),
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda or "none"),
        "cudnn_version": str(torch.backends.cudnn.version() or "none") if cuda else "none",
        "driver_version": _driver_version() if cuda else "none",
        "python_version": platform.python_version(),
        "vitbench_version": __version__,
        "git_commit": _git_commit(),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = "None" if v is None else str(v)
    return out


def error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


@contextlib.contextmanager
def tracked_run(experiment_id: str, run_name: str | None = None, run_id: str | None = None,
                tags: dict | None = None, parent_run_id: str | None = None,
                system_metrics: bool = False,
                finished_on: tuple[type[BaseException], ...] = ()) -> Iterator[str]:
    """Start (or, with ``run_id``, continue) a run; yield its id; end it FINISHED, KILLED or FAILED.

    KeyboardInterrupt (Ctrl-C, and SIGTERM as the engine maps it) ends the run KILLED; any other
    exception FAILED with the error as the ``error`` tag. No Python-level exit leaves it RUNNING.
    """
    import mlflow

    run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                           run_name=None if run_id else run_name, tags=tags or None,
                           parent_run_id=parent_run_id, log_system_metrics=system_metrics or None,
                           nested=mlflow.active_run() is not None)
    rid = run.info.run_id
    try:
        yield rid
    except KeyboardInterrupt:
        mlflow.set_tag("error", "interrupted (Ctrl-C or SIGTERM)")
        mlflow.end_run("KILLED")
        raise
    except finished_on as e:  # a deliberate early stop (a pruned Optuna trial): not a failure
        mlflow.set_tag("stopped_early", error_line(e))
        mlflow.end_run("FINISHED")
        raise
    except BaseException as e:
        with contextlib.suppress(Exception):
            mlflow.set_tag("error", error_line(e))
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def end_orphaned(run_id: str, status: str = "FAILED", reason: str = "") -> None:
    """Terminate a run left RUNNING by a process that died (SIGKILL, power loss)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    if run.info.status == "RUNNING":
        if reason:
            client.set_tag(run_id, "error", reason)
        client.set_terminated(run_id, status)
