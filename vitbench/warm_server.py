"""The warm process (see ``vitbench.warm``, the caller's side): it imports torch, MLflow and the CLI once, then
runs the callers' commands through the same Typer app, one at a time on its main thread. The top of the import
order: it alone may import the CLI.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import queue
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from vitbench import serving
from vitbench.warm import _HEADER, COMMANDS_PER_PROCESS


def _preload() -> None:
    """What every ``run`` would import and set up, done before the first command arrives."""
    import mlflow  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401  (building any optimizer imports it: seconds)
    import torch._inductor.compile_fx  # noqa: F401  (the first torch.compile() imports it: seconds)

    import vitbench.cli  # noqa: F401
    import vitbench.loop  # noqa: F401
    import vitbench.models.fused_attention  # noqa: F401  (Triton)
    import vitbench.plots  # noqa: F401  (seaborn, matplotlib)
    import vitbench.runner  # noqa: F401

    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")  # the CUDA context
    _rehearse()


def _rehearse() -> None:
    """A tiny run into a throwaway store, so that what every run does for the first time in a process -- a
    SQLite store's set-up, cuBLAS and the optimizer's kernels, a CUDA graph, the plots' fonts -- is done
    before the first command rather than in it. Its records go with the folder."""
    with tempfile.TemporaryDirectory(prefix="vitbench-warm-") as tmp:
        code = _invoke(["run", "--dataset", "synthetic", "--epochs", "1", "--max-steps", "4", "--batch-size", "16",
                        "--depth", "1", "--dim", "32", "--heads", "2", "--mlp-dim", "64", "--no-compile", "--quiet",
                        "--live-every", "off", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--checkpoint-dir",
                        f"{tmp}/checkpoints", "--experiment", "warm-up"])
    print(f"rehearsal run: exit code {code}", flush=True)


RECEIVE_SECONDS = 5.0  # a caller sends its whole request at once: one that falls silent is dropped after this


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    """One request, read with a time limit and checked for its shape (``ValueError`` otherwise), so that a silent,
    slow or malformed client costs no other caller anything."""
    conn.settimeout(RECEIVE_SECONDS)
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    try:
        size = None
        while size is None or len(data) < _HEADER.size + size:
            if size is None and len(data) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(data)
                if size > 1 << 24:
                    raise ValueError(f"a request of {size} bytes")
                continue
            more = conn.recv(1 << 16)
            if not more:  # a caller that only looked whether anyone listens, or that left mid-request
                raise ConnectionError("no request")
            data += more
        request = json.loads(data[_HEADER.size:_HEADER.size + size])
        check_request(request, len(fds))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    conn.settimeout(None)
    return request, list(fds)


def check_request(request: object, fds: int) -> None:
    """``{"op": "status" | "stop"}`` or ``{"op": "run", "argv": [str], "cwd": str, "env": {str: str}}`` with the
    caller's three descriptors; anything else is a ``ValueError``."""
    if not isinstance(request, dict) or request.get("op") not in ("run", "status", "stop"):
        raise ValueError("not a request")
    if request["op"] != "run":
        return
    argv, cwd, env = request.get("argv"), request.get("cwd"), request.get("env")
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv) and isinstance(cwd, str)
            and isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
            and fds == 3):
        raise ValueError("a run request of the wrong shape")


class Server:
    """The warm process: one thread takes connections, the main thread runs the commands, one at a time."""

    def __init__(self, path: Path, idle: float) -> None:
        self.path, self.idle = path, idle
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.inode = path.stat().st_ino
        self.lock = threading.Lock()
        self.ready = self.busy = self.closing = False
        self.served, self.since = 0, time.time()
        self.commands: queue.Queue = queue.Queue()
        self.acceptor = threading.Thread(target=self._accept, name="vitbench-warm-accept", daemon=True)
        self.acceptor.start()

    def describe(self) -> dict:
        return {"pid": os.getpid(), "ready": self.ready, "served": self.served, "busy": self.busy, "since": self.since,
                "socket": str(self.path), "log": str(self.path.with_suffix(".log"))}

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                request, fds = _receive(conn)
            except Exception:  # silent, gone, malformed: this caller alone is dropped
                conn.close()
                continue
            op = request.get("op")
            with self.lock:
                if op == "run" and self.ready and not (self.busy or self.closing):
                    self.busy = True
                    self.commands.put((conn, request, fds))
                    continue
                if op == "stop":
                    self.closing = True
                    self.commands.put(None)
            for fd in fds:
                os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall(b"busy\n" if op == "run" else (json.dumps(self.describe()) + "\n").encode())
            conn.close()

    def full(self) -> bool:
        """No more commands here: as many as one process serves, or half as many compiled models as torch keeps
        versions of the step (``vitbench.compute.room_to_compile``); the next caller starts a fresh process."""
        compute = sys.modules.get("vitbench.compute")
        return self.served >= COMMANDS_PER_PROCESS or (compute is not None and not compute.room_to_compile())

    def _terminate(self, signum, frame) -> None:
        self.closing = True  # leave after this command (a command's own handler makes it end KILLED)
        raise KeyboardInterrupt(f"signal {signum}")

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, self._terminate)
        while not (self.full() or self.closing):
            try:
                item = self.commands.get(timeout=self.idle)
            except (queue.Empty, KeyboardInterrupt):
                break
            if item is None:
                break
            with contextlib.suppress(KeyboardInterrupt):  # an interrupt that arrived as the command ended
                try:
                    self.served += 1
                    self.run(*item)
                finally:
                    with self.lock:
                        self.busy = False
        self.leave()

    def leave(self) -> None:
        with self.lock:
            self.closing = True
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self.inode:  # not a successor's socket
                self.path.unlink()
        while True:  # commands accepted meanwhile: their callers run them themselves
            try:
                item = self.commands.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                conn, _, fds = item
                for fd in fds:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    conn.sendall(b"busy\n")
                conn.close()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the acceptor (Linux) before its descriptor is closed
        self.acceptor.join(timeout=2)
        self.sock.close()

    def run(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        conn.sendall(f"ok {os.getpid()}\n".encode())
        guard, active = threading.Lock(), [True]

        def watch() -> None:  # the caller's Ctrl-C, or the caller gone: the command is interrupted
            while True:
                try:
                    data = conn.recv(64)
                except OSError:
                    data = b""
                with guard:
                    if active[0]:
                        _thread.interrupt_main(signal.SIGINT)
                if not data:
                    return

        code, caller = 1, Caller(request, fds)
        watcher = threading.Thread(target=watch, name="vitbench-warm-watch", daemon=True)
        try:
            caller.enter()
            serving.SERVING = (os.getpid(), self.served)
            watcher.start()
            code = _invoke(request["argv"])
        finally:
            with guard:
                active[0] = False
            while True:  # no interrupt is asked for from here on; one asked for just before may still land
                try:
                    serving.SERVING = None
                    caller.leave()
                    break
                except KeyboardInterrupt:
                    continue
        with self.lock:  # the next caller is taken from here on; it waits for the clean-up below
            self.busy, self.since = False, time.time()
        with contextlib.suppress(OSError):
            conn.sendall(f"exit {code}\n".encode())
            conn.shutdown(socket.SHUT_RDWR)  # wakes the watcher: it must not outlive this socket's descriptor,
        if watcher.is_alive():  # which the next caller's connection may get
            watcher.join()
        conn.close()
        serving.release_memory()


class Caller:
    """The caller's stdin/stdout/stderr, working directory, environment and command line, for one command;
    ``leave`` puts the warm process's own back and may be called again if it was interrupted."""

    def __init__(self, request: dict, fds: list[int]) -> None:
        self.request, self.fds = request, fds
        self.saved: tuple | None = None

    def enter(self) -> None:
        from vitbench import tracking, wall

        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = ([os.dup(fd) for fd in (0, 1, 2)], dict(os.environ), os.getcwd(), sys.argv)
        for target, fd in enumerate(self.fds):
            os.dup2(fd, target)
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
        os.environ.clear()
        os.environ.update(self.request["env"])
        os.chdir(self.request["cwd"])
        sys.argv = ["vitbench", *self.request["argv"]]
        wall.restart("the warm process took the command")
        tracking.reset()  # the runs ended, the commit and the stores opened belong to the last command

    def leave(self) -> None:
        if self.saved is not None:
            fds, env, cwd, argv = self.saved
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()
                sys.stderr.flush()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            sys.stdout.reconfigure(line_buffering=False)
            os.environ.clear()
            os.environ.update(env)
            os.chdir(cwd)
            sys.argv = argv
            for fd in fds:
                os.close(fd)
            self.saved = None
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def _invoke(argv: list[str]) -> int:
    from vitbench.cli import app

    try:
        app(args=argv, prog_name="vitbench")
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 1
        return e.code or 0
    except BaseException:  # what a process of its own would print before exiting 1
        import traceback

        traceback.print_exc()
        return 1
    return 0


def main(path: str, idle: str) -> None:
    from vitbench.secrets import guard_streams

    guard_streams()  # the callers' commands print through these streams
    started = time.time()
    server = Server(Path(path), float(idle))  # listening at once: callers are told 'busy' until it is ready
    print(f"warm process {os.getpid()} on {path}, leaves after {float(idle):g} s idle", flush=True)
    os.chdir("/")  # not the first caller's folder: each command runs in its caller's
    _preload()
    with server.lock:
        server.ready, server.since = True, time.time()
    print(f"ready after {time.time() - started:.1f} s", flush=True)
    server.serve()
    print(f"leaving after {server.served} command(s)", flush=True)
    os._exit(0)  # as `vitbench run` does: no interpreter teardown (compile workers, the CUDA context)


if __name__ == "__main__":  # `python -m vitbench.warm_server SOCKET IDLE`, as vitbench.warm starts it
    main(*sys.argv[1:3])
