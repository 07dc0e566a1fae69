"""No password reaches a terminal, a log, a tag or an artifact: ``scheme://user:password@`` becomes
``scheme://user:***@`` and ``?password=...`` ``?password=***`` wherever vitbench writes text, and wherever a library it calls prints (MLflow's
"View run at" lines and its request warnings go through the guarded streams). A leaf module: it imports
nothing of vitbench."""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

# The password runs to the last @ before the host (a password may hold an unencoded @ or :).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^/\s?#]+)@")
# A query parameter or a libpq keyword whose name says secret: ?password=..., &token=..., api_key=..., password=...
_SECRET_VALUE = re.compile(r"(?P<name>(?:^|(?<=[\s?&;]))(?:[\w.-]*[_.-])?(?:password|passwd|pwd|secret|token|key|apikey))"
                           r"=(?P<value>[^&\s#]*)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` with the password replaced by ***, and the value of every
    ``password=``, ``token=``, ``secret=``, ``*key=`` parameter (a URL's query, a libpq connection string)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _SECRET_VALUE.sub(lambda m: f"{m['name']}=***", text)


class MaskedStream:
    """A text stream that masks secrets in what is written through it and passes everything else
    (``isatty``, ``fileno``, ``reconfigure``, ``encoding``) to the stream it wraps. Each write is masked
    whole: MLflow, logging and vitbench write a URL in one piece."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask_secrets(text) if "://" in text or "=" in text else text)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_streams() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once) so that nothing printed through them shows a password."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, MaskedStream):
            setattr(sys, name, MaskedStream(stream))
