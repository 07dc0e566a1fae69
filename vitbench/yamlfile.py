"""Reading the user's YAML files (suites, search spaces) with one-line errors."""

from __future__ import annotations

from pathlib import Path

import yaml

from vitbench.errors import VitbenchError


def read_yaml(path: str | Path, what: str) -> object:
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise VitbenchError(f"cannot read {what} {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise VitbenchError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
