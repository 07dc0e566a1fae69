"""Reading the user's YAML files (suites, search spaces, recipes) with one-line errors and limits: a file larger
than MAX_BYTES, nested deeper than MAX_DEPTH, or using aliases (``*name``, the way a small file expands into a huge
one) is refused before it is built."""

from __future__ import annotations

from pathlib import Path

import yaml

from vitbench.errors import VitbenchError

MAX_BYTES = 1 << 20
MAX_DEPTH = 16


def read_yaml(path: str | Path, what: str) -> object:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise VitbenchError(f"{what} {path} is {path.stat().st_size:,} bytes; at most {MAX_BYTES:,}")
        text = path.read_text()
        check_events(text, f"{what} {path}")
        return yaml.safe_load(text)
    except OSError as e:
        raise VitbenchError(f"cannot read {what} {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise VitbenchError(f"{what} {path} is not text (UTF-8)") from None
    except yaml.YAMLError as e:
        raise VitbenchError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None


def check_events(text: str, where: str) -> None:
    """No alias, no nesting deeper than MAX_DEPTH: read as YAML's event stream, before any object is built."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise VitbenchError(f"{where}: YAML aliases (*{event.anchor}) are not accepted; write the values out")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise VitbenchError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
