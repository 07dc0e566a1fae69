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

from vitbench import __version__, serving
from vitbench.conditions import cores, cpu_model
from vitbench.errors import VitbenchError
from vitbench.liveness import Heartbeat, process_tags, reap_orphans
from vitbench.mlflow_ui import EXPERIMENT_KIND, mark_experiment
from vitbench.outbox import Outbox
from vitbench.secrets import mask_secrets


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


def connect(uri: str | None = None, existing: bool = False) -> str:
    """Point MLflow at the store, checking first that it can be written (one-line errors). ``existing``: a command
    that only reads (report, inspect, sync) finds a SQLite store there or says so, and makes none."""
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
        if existing and not db.exists():
            raise VitbenchError(f"no tracking store at {db}: nothing was recorded there (run a command first, or "
                                "give --tracking-uri)")
    elif uri.startswith(("http://", "https://")):
        check_server(uri)
    else:
        check_database(uri)
    mlflow.set_tracking_uri(uri)
    return uri


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock held on a folder (flock on its descriptor): several vitbench commands started together
    on a new SQLite store take turns creating its schema (MLflow's migrations race each other otherwise)."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@lru_cache(maxsize=8)
def open_store(uri: str) -> None:
    """Open the store once per process, before the first experiment is read or made: a new SQLite database gets
    its tables (an old one its migrations) here, one command at a time. Not in `connect`, so that a command
    whose data turns out missing has written no store."""
    from mlflow.tracking import MlflowClient

    db = _sqlite_path(uri)
    if db is not None:  # imported before the lock: commands opening the store together wait for its work only
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    lock = folder_lock(db.parent if str(db.parent) else Path(".")) if db is not None else contextlib.nullcontext()
    try:
        with lock:
            try:
                MlflowClient().search_experiments(max_results=1)
            except Exception as e:
                if db is None or not half_created(db):
                    raise
                # Ctrl-C while MLflow made its tables (e.g. "table _alembic_tmp_experiments already exists"
                # ever after): a store that holds no run yet loses nothing by being made anew
                make_empty(db)
                sys.stderr.write(f"note: the tracking store {db} was left half-made by an interrupted command "
                                 f"({type(e).__name__}); it held no run and was made anew\n")
                MlflowClient().search_experiments(max_results=1)
    except Exception as e:  # SQLAlchemy / MLflow errors: one line
        raise VitbenchError(mask_secrets(f"tracking store {uri} is not usable: {type(e).__name__}: "
                                         f"{str(e).splitlines()[0][:200]}")) from None


def make_empty(db: Path) -> None:
    """Drop every table of a SQLite file, in place (MLflow keeps connections to the file open)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            if not name.startswith("sqlite_"):
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        conn.commit()


def half_created(db: Path) -> bool:
    """A SQLite store that exists but holds no run (its schema may be half made)."""
    import sqlite3

    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return "runs" not in tables or conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    except sqlite3.Error:
        return False


def check_database(uri: str, timeout: int = 5) -> None:
    """A database server (PostgreSQL, MySQL) must answer within ``timeout`` seconds: one line otherwise (MLflow
    itself retries for ~100 s). Later connections are bounded too (libpq's PGCONNECT_TIMEOUT)."""
    from mlflow.store.db.db_types import DATABASE_ENGINES

    if uri.split(":", 1)[0].split("+")[0] not in DATABASE_ENGINES:
        return
    os.environ.setdefault("PGCONNECT_TIMEOUT", str(timeout))
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": timeout})
        with engine.connect():
            pass
        engine.dispose()
    except ImportError as e:
        raise VitbenchError(f"tracking store {mask_secrets(uri)} needs a driver: {e}; for PostgreSQL: "
                            "pip install 'vitbench[postgres]'") from None
    except Exception as e:
        why = (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise VitbenchError(mask_secrets(f"tracking store {uri} is not reachable within {timeout} s ({why}); "
                                         "start it or pass another --tracking-uri")) from None


def check_server(uri: str, timeout: float = 5.0) -> None:
    """A tracking server must answer before anything else happens: one line naming it otherwise. Later
    requests are bounded too (MLflow waits 120 s and retries for minutes by default): a server that hangs
    costs seconds, then the run's records go to its outbox."""
    import requests

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    try:
        r = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as e:
        reason = type(e).__name__.replace("Error", " error").replace("ConnectTimeout", "timeout").lower()
        raise VitbenchError(f"tracking server {mask_secrets(uri)} is not reachable ({reason} within "
                            f"{timeout:g} s); start it or pass another --tracking-uri") from None
    if r.status_code >= 400:
        raise VitbenchError(f"tracking server {mask_secrets(uri)} answered HTTP {r.status_code} at /health; "
                            "is it an MLflow server?")


def get_experiment_id(name: str, uri: str | None = None, description: str | None = None,
                      columns: tuple[str, ...] | None = None, grouped: bool | None = None) -> str:
    """The experiment's id (made if new, marked as model training, ``description`` as its note, its view grouped
    by suite cell where ``grouped``: ``mark_experiment``); its dead runs are ended on the way."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(uri)
    open_store(uri)
    try:
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            reap_orphans([exp.experiment_id])
            exp_id = exp.experiment_id
        else:
            try:
                exp_id = mlflow.create_experiment(name, artifact_location=default_artifact_root(uri),
                                                  tags=EXPERIMENT_KIND)
            except MlflowException as e:  # another command created it a moment ago
                if e.error_code != "RESOURCE_ALREADY_EXISTS" or mlflow.get_experiment_by_name(name) is None:
                    raise
                exp_id = mlflow.get_experiment_by_name(name).experiment_id
        mark_experiment(exp_id, description, columns, grouped)
        return exp_id
    except MlflowException as e:
        raise VitbenchError(mask_secrets(f"tracking store {uri} failed: {str(e).splitlines()[0][:200]}")) from None
    except Exception as e:  # SQLAlchemy / network errors
        raise VitbenchError(mask_secrets(f"tracking store {uri} is not usable: {type(e).__name__}: "
                                         f"{str(e).splitlines()[0][:200]}")) from None


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
        # which of the host's GPUs: a suite's or sweep's worker sees only its own
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "all") if cuda else "none",
        "cpu": cpu_model(), "cpu_cores": str(cores()),  # the cores this process may use
        "torch_threads": str(torch.get_num_threads()),  # a suite's workers share the host's cores
        "process": serving.process_tag(),  # a warm process (vitbench.warm_server) or one of the run's own
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda or "none"),
        "cudnn_version": str(torch.backends.cudnn.version() or "none") if cuda else "none",
        "driver_version": _driver_version() if cuda else "none",
        "python_version": platform.python_version(),
        "vitbench_version": __version__,
        "git_commit": _git_commit(),
        "command": mask_secrets(" ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])),
        # MLflow's own source columns in the UI
        "mlflow.source.name": "vitbench " + (sys.argv[1] if len(sys.argv) > 1 else ""),
        "mlflow.source.type": "LOCAL",
        **({"mlflow.source.git.commit": _git_commit().removesuffix("-dirty")} if _git_commit() != "unknown" else {}),
    }


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = "None" if v is None else mask_secrets(str(v))
    return out


def error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


@contextlib.contextmanager
def tracked_run(experiment_id: str, run_name: str | None = None, run_id: str | None = None,
                tags: dict | None = None, parent_run_id: str | None = None,
                system_metrics: bool = False,
                stopped_on: tuple[type[BaseException], ...] = (), outbox: Outbox | None = None) -> Iterator[str]:
    """Start (or, with ``run_id``, continue) a run; yield its id; end it FINISHED, KILLED or FAILED.

    KeyboardInterrupt (Ctrl-C, and SIGTERM as the engine maps it) and a deliberate early stop (``stopped_on``: a
    pruned Optuna trial, as MLflow's own Optuna storage ends one) end the run KILLED; any other exception FAILED
    with the error as the ``error`` tag. No Python-level exit leaves it RUNNING.
    """
    import mlflow

    run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                           run_name=None if run_id else run_name, tags={**(tags or {}), **process_tags()},
                           parent_run_id=parent_run_id, log_system_metrics=system_metrics or None,
                           nested=mlflow.active_run() is not None)
    rid = run.info.run_id
    box = outbox or Outbox("checkpoints", mlflow.get_tracking_uri())
    box.run_id = rid
    beat = Heartbeat(rid)

    def end(status: str, tags: dict | None = None, ended: str | None = None) -> None:
        """``ended``: what ENDED records, where it differs from the run's status."""
        beat.stop()
        try:
            if tags:
                box.tags(tags)
        finally:  # a full disk on the way still ends the run
            ENDED[rid] = ended or status
            box.end(status)

    try:
        yield rid
    except KeyboardInterrupt:
        end("KILLED", {"error": "interrupted (Ctrl-C or SIGTERM)"})
        raise
    except stopped_on as e:  # not a failure, nor a finished result
        end("KILLED", {"stopped_early": error_line(e)}, ended="STOPPED")  # not a run the user interrupted
        raise
    except BaseException as e:
        end("FAILED", {"error": mask_secrets(error_line(e))})
        raise
    else:
        end("FINISHED")


ENDED: dict[str, str] = {}  # run id -> status, for the runs this process ended


def reset() -> None:
    """Forget what belongs to one command (a warm process runs many): the runs it ended, the checkout's commit
    (a commit may have been made since), the stores it opened (one may have been removed)."""
    ENDED.clear()
    _git_commit.cache_clear()
    open_store.cache_clear()
