"""The one exception type users see: a message that fits on one line, and exit code 2 from the CLI."""


class VitbenchError(ValueError):
    """Bad input or an unusable environment; the message says what was given and what is expected."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM whose outcome was already reported (e.g. by a suite's worker pool)."""
