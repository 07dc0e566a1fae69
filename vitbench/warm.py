"""`vitbench run` and `vitbench suite` in a process that outlives one command, where the user asks for one.

Each command runs in a fresh process of its own by default, so that what a benchmark measures never depends on
what a process ran before. Asked for (``vitbench warm --start``, or ``VITBENCH_WARM=on``), a *warm process*
imports torch, ``torch._dynamo``, MLflow and seaborn, opens the store and makes the CUDA context once; every
later ``run`` or ``suite`` from the same installation hands its command line to it over a Unix socket and waits:

- the command runs in the warm process with the caller's working directory, environment and command line,
  and its output goes straight to the caller's terminal: the caller's stdin/stdout/stderr are passed over
  the socket (``SCM_RIGHTS``), so progress bars, colours and redirections behave as in a process of its own;
- Ctrl-C (and SIGTERM) at the caller reaches the command as a Ctrl-C would: the run ends KILLED with its
  checkpoint; a caller that disappears (a closed terminal, ``kill -9``) interrupts its command the same way;
- the exit code comes back to the caller; one command at a time: a caller that finds the warm process
  busy or still importing, or cannot reach it, runs the command itself;
- a ``suite --gpus N`` it runs starts its worker processes (one per GPU, ``vitbench.launcher``) as a suite in a
  process of its own does; they end with the command;
- the process leaves after ``VITBENCH_WARM_IDLE`` seconds without a command (300), after
  ``COMMANDS_PER_PROCESS`` commands or once its commands compiled the step for half as many distinct models
  as torch keeps versions of it (``vitbench.compute.room_to_compile``), on
  ``vitbench warm --stop``, and whenever the package's
  source or the environment torch reads at import changes (those select another warm process: ``key``).

``VITBENCH_WARM``: unset (default): a warm process serves a command only if one was started and listens;
``on``: one is started by the first command that finds none (also on the CPU); ``auto``: so, where a CUDA GPU is
likely present; ``off``: every command in a process of its own. Runs record which process trained them (tag
``process``). This module is the caller's side and imports nothing heavy: it is what the ``vitbench`` entry
point runs first. The warm process itself is ``vitbench.warm_server``, the one module allowed to reach the CLI.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vitbench.conditions import nvml_gpus

COMMANDS_PER_PROCESS = 20
IDLE_SECONDS = 300.0
START_SECONDS = 30.0  # how long a caller waits for a new warm process to listen
# Read by torch, CUDA, Triton or Python when they are imported: a warm process made under other values
# of these cannot serve a command (CUDA_VISIBLE_DEVICES picks the GPUs once, for the process's life).
IMPORT_TIME_ENV = ("CUDA_", "NVIDIA_", "TORCH", "PYTORCH_", "TRITON_", "NCCL_", "OMP_", "MKL_", "LD_", "PYTHON",
                   "VITBENCH_")
_HEADER = struct.Struct("!I")

# Set in a warm process while it serves a command: (pid, how many commands it has served, this one included).
def mode() -> str:
    """``started`` (VITBENCH_WARM unset: a warm process the user started, never one of its own), auto, on, off."""
    value = os.environ.get("VITBENCH_WARM", "").strip().lower() or "started"
    if value not in ("started", "auto", "on", "off"):
        raise ValueError(f"VITBENCH_WARM must be auto, on or off, got {value!r}")
    return value


def _folder_path() -> Path:
    base = os.environ.get("VITBENCH_WARM_DIR") or os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base).absolute() / f"vitbench-warm-{os.getuid()}"


def listening() -> bool:
    """Whether a warm process for this caller was started and listens (nothing is made on disk to find out)."""
    return (_folder_path() / f"{key()}.sock").exists()


def _option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def wanted(argv: list[str]) -> bool:
    """Whether this command line goes to a warm process, where ``VITBENCH_WARM`` allows it: ``run`` on one
    device (``run --gpus N`` launches processes of its own), and ``suite``."""
    if not argv or argv[0] not in ("run", "suite") or "--help" in argv or "--worker" in argv:
        return False
    m = mode()
    if m == "off" or (argv[0] == "run" and (_option(argv, "--gpus") or "1") != "1"):
        return False
    if m == "on":
        return True
    if m == "started":
        return listening()
    if (_option(argv, "--device") or "auto") == "cpu":
        return False
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return visible.strip() not in ("", "-1")
    return bool(nvml_gpus())


def folder() -> Path:
    """Where the sockets, locks and logs of this user's warm processes are (``VITBENCH_WARM_DIR``)."""
    path = _folder_path()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    # A caller hands its environment (tokens, passwords) and its terminal to whatever listens here: only to a
    # folder that is ours alone, never to one another user made in a shared /tmp.
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not path.is_dir() or path.is_symlink():
        raise PermissionError(f"{path} is not a folder of this user's alone: no warm process")
    return path


def key() -> str:
    """Which warm process may serve this caller: the same interpreter, the same package source (its files'
    latest change) and the same import-time environment."""
    package = Path(__file__).resolve().parent
    stamp = max(p.stat().st_mtime_ns for p in package.rglob("*.py"))
    env = sorted((k, v) for k, v in os.environ.items()
                 if k.startswith(IMPORT_TIME_ENV) and not k.startswith("VITBENCH_WARM"))
    return hashlib.sha256(repr((sys.executable, str(package), stamp, env)).encode()).hexdigest()[:16]


# ---- the caller's side ------------------------------------------------------------------------------


def _connect(path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return s
    except OSError:
        s.close()
        return None


def _start(where: Path, k: str) -> int | None:
    """Start the warm process for ``k`` (one caller at a time, under a lock); its pid, None where another
    caller started it meanwhile. Returns once it listens: it answers 'busy' until its imports are done."""
    path = where / f"{k}.sock"
    with open(where / f"{k}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (s := _connect(path)) is not None:
            s.close()
            return None
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a process that was killed
        with open(where / f"{k}.log", "wb") as log:
            p = subprocess.Popen([sys.executable, "-m", "vitbench.warm_server", str(path), str(idle_seconds())],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and p.poll() is None and not path.exists():
            time.sleep(0.01)
        return p.pid


def idle_seconds() -> float:
    return float(os.environ.get("VITBENCH_WARM_IDLE", IDLE_SECONDS))


def _send(s: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    packet = _HEADER.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(s, [packet], fds)
        if sent < len(packet):
            s.sendall(packet[sent:])
    else:
        s.sendall(packet)


def _lines(s: socket.socket):
    buffered = b""
    while True:
        try:
            chunk = s.recv(4096)
        except InterruptedError:
            continue
        if not chunk:
            return
        buffered += chunk
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            yield line.decode()


def _own_fds() -> list[int]:
    """stdin, stdout, stderr as they are; /dev/null for one that is closed."""
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def forward(argv: list[str], note: Callable[[str], None]) -> int | None:
    """Run ``vitbench <argv>`` in the warm process and return its exit code; None where it cannot take the
    command (none yet, still importing, busy) -- the caller then runs it itself."""
    where, k = folder(), key()
    s = _connect(where / f"{k}.sock")
    if s is None:  # this command runs here; asked for, the warm process gets ready alongside, for the next
        if mode() != "started" and (pid := _start(where, k)) is not None:
            note(f"vitbench: starting a warm process (pid {pid}) that keeps torch, CUDA and MLflow loaded for the "
                 f"runs after this one; it leaves after {idle_seconds():g} s without one. `vitbench warm --stop` "
                 "ends it; VITBENCH_WARM=off runs every command in a process of its own")
        return None
    pressed: list[int] = []
    started: list[bool] = []

    def interrupt(signum, frame) -> None:
        """The command's Ctrl-C, sent where the command runs once it runs there (from "ok" on); before that, or a
        second time, it stops this caller at once: a caller can always be stopped."""
        pressed.append(signum)
        if not started or len(pressed) > 1:
            raise KeyboardInterrupt(f"signal {signum}")
        with contextlib.suppress(OSError):
            s.sendall(b"i")

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        with s:
            _send(s, {"op": "run", "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}, _own_fds())
            replies = _lines(s)
            first = next(replies, "busy")
            if not first.startswith("ok "):  # nothing ran there: this process runs the command
                return None
            started.append(True)
            pid = int(first.split()[1])
            for line in replies:
                if line.startswith("exit "):
                    return int(line.split()[1])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    note(f"error: the warm process (pid {pid}) ended during the command; its log: {where / (k + '.log')}")
    return 1


def _ask(path: Path, op: str) -> dict | None:
    """What the warm process listening on ``path`` says of itself after ``op`` ('status' or 'stop'); None
    where none listens."""
    s = _connect(path)
    if s is None:
        return None
    with s:
        _send(s, {"op": op})
        reply = next(_lines(s), None)
    return json.loads(reply) if reply else None


def start(timeout: float = 600) -> dict:
    """A warm process for this caller, started if there is none, once it is ready (``vitbench warm --start``)."""
    where, k = folder(), key()
    path = where / f"{k}.sock"
    _start(where, k)  # starts none where one listens already
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state := _ask(path, "status")) and state["ready"]:
            return state
        time.sleep(0.1)
    raise TimeoutError(f"the warm process was not ready after {timeout:g} s; its log: {path.with_suffix('.log')}")


def status(stop: bool = False) -> list[dict]:
    """This user's warm processes (what each says of itself); ``stop``: ask each to leave once idle."""
    if not _folder_path().is_dir():  # asking makes nothing on disk
        return []
    answers = (_ask(path, "stop" if stop else "status") for path in sorted(folder().glob("*.sock")))
    return [a for a in answers if a]


# ---- the warm process ------------------------------------------------------------------------------
