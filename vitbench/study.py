"""The Optuna side of a sweep: its search space, storage (SQLite, a journal file, PostgreSQL), pruner and sampler,
and the trials of dead workers -- found by the RDB heartbeat, or for the journal by the worker's PID and a heartbeat
attribute on its trial -- failed, their MLflow runs ended FAILED and the same parameters retried."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from vitbench.config import SEARCHABLE
from vitbench.errors import VitbenchError, check_number
from vitbench.names import is_timm
from vitbench.yamlfile import read_yaml

if TYPE_CHECKING:
    from vitbench.options import Options

SPACE_DIR = Path(str(resources.files("vitbench") / "space_files"))  # shipped in the wheel (pyproject.toml)
OBJECTIVES = ("val_acc", "train_images_per_sec")


# -- the search space ----------------------------------------------------------------------------
def space_names() -> list[str]:
    """The search spaces that ship with vitbench (vitbench/space_files/), by name."""
    return sorted(p.stem for p in SPACE_DIR.glob("*.yaml"))


def load_space(path: str | Path | None) -> dict[str, dict]:
    """Read and check a YAML space: ``name: {type: float|int|categorical, low, high, log, step, choices}``.
    ``path``: a YAML file, or the name of a space that ships with vitbench (None: ``default``)."""
    path = Path(path or "default")
    if not path.suffix and not path.exists():  # a shipped space's name
        if str(path) not in space_names():
            raise VitbenchError(f"no search space {str(path)!r}: give a YAML file or one of {', '.join(space_names())}")
        path = SPACE_DIR / f"{path}.yaml"
    space = read_yaml(path, "search space")
    if not isinstance(space, dict) or not space:
        raise VitbenchError(f"search space {path} must map parameter names to distributions")
    for name, spec in space.items():
        where = f"search space {path}: {name}"
        if name not in SEARCHABLE:
            raise VitbenchError(f"{where}: not a searchable option; valid: {', '.join(SEARCHABLE)}")
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
            raise VitbenchError(f"{where}: needs type float, int or categorical")
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise VitbenchError(f"{where}: categorical needs a non-empty list of choices")
        else:
            for k in ("low", "high", "step"):  # YAML 1.1 reads 1e-4 as a string: accept it as a number
                if isinstance(spec.get(k), str):
                    with contextlib.suppress(ValueError):
                        spec[k] = float(spec[k])
            if not all(isinstance(spec.get(k), (int, float)) for k in ("low", "high")):
                raise VitbenchError(f"{where}: {spec['type']} needs numeric low and high")
            if spec["low"] > spec["high"] or (spec.get("log") and spec["low"] <= 0):
                raise VitbenchError(f"{where}: needs 0 < low <= high for log, low <= high otherwise")
    return space


def check_space_for(base: Options, space: dict[str, dict]) -> dict[str, dict]:
    """``space``, where the variant can take every option it searches: a timm:NAME model has none of vitbench's parts
    and sizes to search, and a patch size only where it cuts patches."""
    from vitbench.config import MODEL_OPTIONS
    from vitbench.options import model_config
    from vitbench.peers import TIMM_SHAPE, check_timm

    variant = base.variant
    if not is_timm(variant):
        return space
    if model := [k for k in space if k in MODEL_OPTIONS and k not in TIMM_SHAPE]:
        raise VitbenchError(f"the search space varies {model[0]}, a part or size of vitbench's ViT; {variant} is timm's "
                            "model as timm builds it: --space train-only, or a file of training options")
    if "patch_size" in space and "patch_size" not in check_timm(variant, model_config(base)):
        raise VitbenchError(f"the search space varies patch_size; {variant} cuts no patches (it has no patch size of "
                            "its own)")
    return space


def suggest(trial, space: dict[str, dict]) -> dict:
    params = {}
    for name, s in space.items():
        if s["type"] == "float":
            params[name] = trial.suggest_float(name, s["low"], s["high"], log=bool(s.get("log")), step=s.get("step"))
        elif s["type"] == "int":
            params[name] = trial.suggest_int(name, int(s["low"]), int(s["high"]), log=bool(s.get("log")),
                                             step=int(s.get("step", 1)))
        else:
            params[name] = trial.suggest_categorical(name, s["choices"])
    return params


# -- storage, study, parent run -----------------------------------------------------------------------
def redact(url: str) -> str:
    """A storage URL without its password, fit for logs and MLflow params."""
    from vitbench.secrets import mask_secrets

    return mask_secrets(url)


def journal_storage(url: str):
    """``journal:PATH``: Optuna's append-only journal in one file, locked for several processes."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    raw = url.split(":", 1)[1]
    if not raw:
        raise VitbenchError("--storage journal:PATH needs a file path, e.g. journal:optuna.journal")
    path = Path(raw).expanduser()
    if not path.parent.is_dir():  # a typo is not a reason to create folders anywhere
        raise VitbenchError(f"cannot open Optuna journal {path}: folder {path.parent} does not exist")
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as e:
        raise VitbenchError(f"cannot open Optuna journal {path}: {e.strerror or e}") from None


def make_storage(url: str, heartbeat: int, on_stale: Callable | None):
    import optuna

    # Heartbeats and the matplotlib plots are marked experimental; they are what we rely on.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from optuna.storages import RDBStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # progress is ours; Optuna's INFO lines repeat it
    if url.startswith("journal:"):
        return journal_storage(url)

    kwargs = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat} if heartbeat else {}
    if url.startswith(("postgresql", "mysql")):  # an unreachable server: one line in seconds, not minutes
        kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": 5}}
    if on_stale is not None:
        kwargs["heartbeat_stale_trial_callback"] = on_stale
    try:
        return RDBStorage(url, **kwargs)
    except TypeError:  # Optuna 4.x names the callback failed_trial_callback
        kwargs["failed_trial_callback"] = kwargs.pop("heartbeat_stale_trial_callback", None)
        return RDBStorage(url, **kwargs)
    except (ImportError, ModuleNotFoundError) as e:
        raise VitbenchError(f"storage {redact(url)} needs a driver: {e}; for PostgreSQL: pip install 'vitbench[postgres]'") from None
    except Exception as e:
        raise VitbenchError(f"cannot open Optuna storage {redact(url)}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


@dataclass(frozen=True)
class SweepSpec:
    variant: str
    dataset: str
    n_trials: int
    space: dict
    space_path: str
    objectives: tuple[str, ...] = ("val_acc",)
    pruner: str = "median"
    storage: str = "sqlite:///optuna.db"
    study_name: str = ""
    timeout: float | None = None
    heartbeat: int = 10  # seconds between a running trial's heartbeats; stale after 3 of them
    pruner_startup: int = 5  # trials the median pruner lets finish before it prunes
    pruner_warmup: int = 1  # epochs of each trial it never prunes in
    seed: int = 0  # the sampler's (a worker's: the base seed + its number)

    def __post_init__(self) -> None:
        check_number("--n-trials", self.n_trials, 1)
        check_number("--heartbeat", self.heartbeat, 1, 3600)
        check_number("--pruner-startup-trials", self.pruner_startup, 0)
        check_number("--pruner-warmup-epochs", self.pruner_warmup, 0)
        if self.timeout is not None:
            check_number("--timeout", self.timeout, 0.0, low_open=True)

    @property
    def journal(self) -> bool:
        """Optuna's journal file: no heartbeat of its own (see TrialBeat, fail_dead_trials)."""
        return self.storage.startswith("journal:")

    @property
    def directions(self) -> list[str]:
        return ["maximize"] * len(self.objectives)


def check_objectives(text: str) -> tuple[str, ...]:
    objs = tuple(o.strip() for o in text.split(",") if o.strip())
    if not objs or any(o not in OBJECTIVES for o in objs) or len(set(objs)) != len(objs):
        raise VitbenchError(f"unknown objective {text!r}; valid: val_acc or val_acc,train_images_per_sec")
    return objs


def make_pruner(name: str, epochs: int, multi: bool, log: Callable[[str], None], startup: int, warmup: int):
    """Optuna's pruner on the per-epoch val_acc. ``startup``: trials the median pruner lets finish before it prunes;
    ``warmup``: epochs of each trial it never prunes in (Hyperband: the fewest epochs a trial gets)."""
    import optuna

    if name not in ("median", "hyperband", "none"):
        raise VitbenchError(f"unknown pruner {name!r}; valid: median, hyperband, none")
    if multi and name != "none":
        log("note: Optuna cannot prune multi-objective studies; pruning is off")
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(warmup, 1), max_resource=max(epochs, warmup, 1))
    return optuna.pruners.NopPruner()


COUNTED = ("COMPLETE", "PRUNED")


def counts(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


class ExcessTrial(Exception):
    """Started after the study already had its n_trials (a race between workers); not run."""


def on_stale_trial(study, trial) -> None:
    """A worker died mid-trial: end its MLflow run FAILED and retry the same parameters."""
    import optuna

    from vitbench.liveness import end_orphaned

    with contextlib.suppress(Exception):
        if run_id := trial_run(study, trial):
            end_orphaned(run_id, "FAILED", "worker died: its Optuna heartbeat stopped")
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # its name since Optuna 4.9
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8: not a line for the user
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        (retry or optuna.storages.RetryFailedTrialCallback)(max_retry=3)(study, trial)


def trial_run(study, trial) -> str | None:
    """The RUNNING MLflow run of this attempt at a trial, found by the trial its tags name from the run's creation
    (a worker killed before it wrote the run's id on the trial included). Not the trial's ``mlflow_run_id``: a
    retried trial carries its earlier attempt's until its own run starts."""
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`optuna.study` = '{study.study_name}' and tags.`optuna.trial` = "
                                            f"'{trial.number}' and attributes.status = 'RUNNING'")
    return runs[0].info.run_id if runs else None


class TrialBeat:
    """For storages without Optuna's heartbeat (the journal): the running trial carries its worker's host
    and PID and a ``worker.heartbeat`` time, renewed every ``every`` seconds from a daemon thread."""

    def __init__(self, trial, every: int) -> None:
        from vitbench.liveness import host

        self.trial, self.every, self.done = trial, every, threading.Event()
        trial.set_user_attr("worker.host", host())
        trial.set_user_attr("worker.pid", os.getpid())
        trial.set_user_attr("worker.heartbeat", time.time())
        trial.set_user_attr("worker.trial", trial.number)  # last: the attributes above are this attempt's
        self.thread = threading.Thread(target=self._loop, name="vitbench-trial-heartbeat", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(self.every):
            with contextlib.suppress(Exception):
                self.trial.set_user_attr("worker.heartbeat", time.time())

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def dead_worker(trial, heartbeat: int, now: float | None = None) -> str | None:
    """Why a RUNNING trial's worker is gone, or None: on this host, whether its process still runs; else
    whether its heartbeat is older than three intervals (or the trial never got its first beat)."""
    from vitbench.liveness import host, process_alive

    a = trial.user_attrs
    start = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
    if a.get("worker.trial") != trial.number:  # no beat of this attempt yet: a retried trial carries the host, PID
        a = {}  # and last beat of its earlier attempt's worker until its own worker's first beat
    if a.get("worker.host") == host() and "worker.pid" in a:
        alive = process_alive(int(a["worker.pid"]), start * 1000)
        return None if alive else f"worker died: pid {a['worker.pid']} no longer runs"
    silent = (now or time.time()) - float(a.get("worker.heartbeat", start))
    if silent > 3 * heartbeat:
        return f"worker died: its heartbeat stopped {silent:.0f} s ago"
    return None


def fail_dead_trials(study, heartbeat: int, own_beats: bool) -> None:
    """Fail the trials of dead workers (their MLflow runs FAILED, their trials queued again). ``own_beats``:
    trials that carry a ``TrialBeat`` (the journal, a suite's queue), else Optuna's RDB heartbeat. For the journal,
    one process does this (the coordinator, or a lone worker): it has no transaction to stop two processes from
    retrying the same trial twice; a database refuses the second ``tell``."""
    import optuna

    if not own_beats:
        optuna.storages.fail_stale_trials(study)  # the RDB heartbeat
        return
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if dead_worker(t, heartbeat) is None:
            continue
        try:  # Optuna's public tell; it refuses a trial another worker failed a moment ago
            study.tell(t.number, state=TrialState.FAIL)
        except Exception:
            continue
        on_stale_trial(study, study.get_trials(deepcopy=False)[t.number])


def open_study(spec: SweepSpec, base_epochs: int, log: Callable[[str], None]):
    import optuna

    storage = make_storage(spec.storage, spec.heartbeat, on_stale_trial)
    pruner = make_pruner(spec.pruner, base_epochs, len(spec.objectives) > 1, log, spec.pruner_startup,
                         spec.pruner_warmup)
    sampler = trial_sampler(spec, 0)  # work() reseeds it before each trial
    try:
        study = optuna.create_study(study_name=spec.study_name, storage=storage, directions=spec.directions,
                                    pruner=pruner, sampler=sampler, load_if_exists=True)
    except ValueError as e:  # e.g. directions differ from the stored study's
        raise VitbenchError(f"study {spec.study_name!r}: {e}") from None
    if study.metric_names != list(spec.objectives):  # optuna-dashboard and the plots name the objectives
        study.set_metric_names(list(spec.objectives))
    return study


def trial_sampler(spec: SweepSpec, trials_so_far: int):
    """TPE seeded for the next trial from the study's seed and the trials it holds, so a resumed sweep does not
    draw its first trials again; where several workers may share the study (a journal, a database server), from
    the worker too (host and process), so two workers never draw alike. One worker on SQLite stays reproducible.
    constant_liar: trials other workers are running count as bad for now, so TPE does not suggest their
    neighbourhood twice."""
    import zlib

    import optuna

    worker = "" if spec.storage.startswith("sqlite") else f":{socket.gethostname()}:{os.getpid()}"
    seed = zlib.crc32(f"{spec.seed}:{trials_so_far}{worker}".encode())
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


@contextlib.contextmanager
def study_lock(spec: SweepSpec):
    """An exclusive lock per study and storage on this host (a file in the temp folder, flock)."""
    import fcntl
    import hashlib

    key = hashlib.sha256(f"{spec.storage}\0{spec.study_name}".encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"vitbench-study-{key}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def default_study_name(variant: str, dataset: str, objectives: tuple[str, ...]) -> str:
    return f"{variant}-{dataset}-{'-'.join(objectives)}"


def dashboard_command(storage: str) -> str:
    """The optuna-dashboard command that shows this storage's studies as they run (a journal: its file)."""
    import shlex

    return f"optuna-dashboard {shlex.quote(storage.split(':', 1)[1] if storage.startswith('journal:') else redact(storage))}"
