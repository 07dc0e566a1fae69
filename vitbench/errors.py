"""The one exception type users see: a message that fits on one line, and exit code 2 from the CLI."""

from __future__ import annotations

import dataclasses
import errno
import shutil
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class VitbenchError(ValueError):
    """Bad input or an unusable environment; the message says what was given and what is expected."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM whose outcome was already reported (e.g. by a suite's worker pool)."""


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


def check_field_types(obj: object) -> None:
    """Each field of a config dataclass holds a value of its declared type (a YAML file's ``batch_size:
    "eight"`` or ``repeats: two``, a sweep space's ``lr: [1e-3]`` read as text): one line naming it."""
    for f in dataclasses.fields(obj):
        value, declared = getattr(obj, f.name), str(f.type)
        allowed = tuple(t for name in declared.split("|") for t in _TYPES.get(name.strip(), (object,)))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) and float in allowed else ""
            raise VitbenchError(f"{f.name} must be {declared.replace(' | None', '')}, got {value!r}{hint}")
