"""The `vitbench` program (and `python -m vitbench`): SIGTERM as Ctrl-C, a command to the warm process where one
serves it, else through the CLI here; every failure of the command line one line on stderr."""

from __future__ import annotations

import os
import signal
import sys

import typer

from vitbench import warm
from vitbench.cli import app
from vitbench.secrets import guard_streams


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    guard_streams()  # no password reaches the terminal, whoever prints it (MLflow's "View run at" lines)
    # SIGTERM (kill, timeout, a scheduler) ends runs KILLED like Ctrl-C, wherever it lands.
    signal.signal(signal.SIGTERM, _terminate)
    argv = sys.argv[1:]
    try:
        to_warm = warm.wanted(argv)
    except ValueError as e:
        leave(f"error: {e}", 2)
    if to_warm:  # `run` in the warm process, where torch, CUDA and MLflow are loaded already
        try:
            code = warm.forward(argv, note=lambda line: print(line, file=sys.stderr, flush=True))
        except OSError:
            code = None  # no warm process to be had (e.g. an unwritable socket folder): run it here
        except KeyboardInterrupt:  # Ctrl-C before the warm process took the command, or twice
            leave("interrupted: the warm process was asked to end the command; its run, if one started, ends KILLED",
                  130)
        if code is not None:
            leave(code)
    if not argv:
        app(prog_name="vitbench")  # the help
    usage_error = typer.BadParameter.__mro__[1]  # click's UsageError, as Typer carries it
    try:
        code = app(prog_name="vitbench", standalone_mode=False)
    except usage_error as e:  # not a number, no such option, a missing argument: one line too
        known = {c.name or c.callback.__name__ for c in app.registered_commands}
        where = f"vitbench {argv[0]} --help` lists its options" if argv[0] in known else "vitbench --help` lists them"
        leave(f"error: {e.format_message()} (`{where})", 2)
    except typer.Abort:
        leave(130)
    except SystemExit as e:
        leave(e.code)
    leave(code if isinstance(code, int) else 0)


def leave(code: int | str | None, message_code: int = 1) -> None:
    """Exit as soon as a command is done. Its work is recorded by then (runs ended, stores committed, files
    closed), and the interpreter's own teardown -- torch's compile workers, the CUDA context, MLflow's thread
    pools -- takes seconds after the result is printed (results/fresh_process.md)."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = message_code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
