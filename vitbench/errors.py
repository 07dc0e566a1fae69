"""The one exception type users see: a message that fits on one line, and exit code 2 from the CLI."""


class VitbenchError(ValueError):
    """Bad input or an unusable environment; the message says what was given and what is expected."""
