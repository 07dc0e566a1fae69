"""The one exception type users see: a message that fits on one line, and exit code 2 from the CLI."""

from __future__ import annotations

import dataclasses
import errno
import math
import re
import shutil
import sys
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class VitbenchError(ValueError):
    """Bad input or an unusable environment; the message says what was given and what is expected."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM whose outcome was already reported (e.g. by a suite's worker pool)."""


def check_run_id(run_id: str, what: str = "run id") -> str:
    """An MLflow run id as `run` prints it (32 hex digits; letters and digits only, whatever the store): it
    becomes a folder name (checkpoints/RUN) and a query, so nothing else is taken."""
    if not re.fullmatch(r"[0-9A-Za-z]{8,64}", run_id or ""):
        raise VitbenchError(f"{what} must be an MLflow run id (32 hex digits, as `vitbench run` prints it), got "
                            f"{run_id!r}")
    return run_id


def write_error(path: str | Path, e: OSError, what: str = "") -> VitbenchError:
    """One line for a file that could not be written: a full disk says so, with where and what is free."""
    path = Path(path)
    if e.errno in DISK_FULL:
        where = next((p for p in (path.parent, *path.parents) if p.exists()), Path("."))
        try:
            free = f"{shutil.disk_usage(where).free / 2**20:,.1f} MiB free"
        except OSError:
            free = "free space unknown"
        return VitbenchError(f"disk full: could not write {what + ' ' if what else ''}{path} ({e.strerror}; {free} "
                             f"in {where}); free some space there or choose another folder")
    return VitbenchError(f"could not write {what + ' ' if what else ''}{path}: {e.strerror or e}")


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}
LARGEST = 2**31 - 1  # no count, size or seed vitbench takes is larger; beyond it torch and MLflow break obscurely


def check_field_types(obj: object) -> None:
    """Each field of a config dataclass holds a value of its declared type (a YAML file's ``batch_size:
    "eight"`` or ``repeats: two``, a sweep space's ``lr: [1e-3]`` read as text): one line naming it."""
    for f in dataclasses.fields(obj):
        value, declared = getattr(obj, f.name), str(f.type)
        allowed = tuple(t for name in declared.split("|") for t in _TYPES.get(name.strip(), (object,)))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) and float in allowed else ""
            raise VitbenchError(f"{f.name} must be {declared.replace(' | None', '')}, got {value!r}{hint}")
        check_number(f.name, value)


def check_number(name: str, value: object, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    """A number given for ``name`` is finite (a whole number no larger than LARGEST), and within [low, high] (an
    open end excludes its bound): one line naming the option, the value and the range otherwise. Non-numbers pass."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise VitbenchError(f"{name} must be a finite number, got {value}")
    if isinstance(value, int) and abs(value) > LARGEST:
        raise VitbenchError(f"{name} is out of range: {value} (at most {LARGEST:,})")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise VitbenchError(f"{name} must be in {'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}, "
                            f"got {value:g}")


def require_torchvision():
    """torchvision, imported; or, where it does not work with this torch (a CPU torch beside a CUDA torchvision:
    "operator torchvision::nms does not exist"), one line naming both versions and the command that mends it."""
    try:
        import torchvision

        return torchvision
    except (RuntimeError, ImportError, OSError, AttributeError) as e:
        from importlib.metadata import PackageNotFoundError, version

        def installed(name: str) -> str:
            if name == "torch" and "torch" in sys.modules:  # with its build's label: 2.14.1+cpu
                return sys.modules["torch"].__version__
            try:
                return version(name)
            except PackageNotFoundError:
                return "(not installed)"

        cpu = "+cpu" in installed("torch")
        fix = "pip install --force-reinstall torch torchvision" + (
            " --index-url https://download.pytorch.org/whl/cpu" if cpu else "")
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:150]
        raise VitbenchError(f"torchvision {installed('torchvision')} does not work with torch {installed('torch')} "
                            f"({why}); install the pair from one index: {fix}") from None
