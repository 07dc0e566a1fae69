"""Faults one step away from the promised ones: a checkpoint killed mid-save, secrets in every URL form, a report
that uploads only what it wrote, sweeps that never repeat a configuration."""

from __future__ import annotations

import os

import pytest


class Silent:
    """A loopback TCP server that accepts connections and never answers (a frozen database or API)."""

    def __init__(self, health: bool = False) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port, self.health, self.held = self.sock.getsockname()[1], health, []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.health:  # /health answers, the API hangs
                request = conn.recv(4096)
                if b"/health" in request:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
                    conn.close()

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()



def test_a_store_left_half_made_by_an_interrupted_first_command_is_made_anew(workdir, tiny_mnist):
    """Ctrl-C while MLflow creates its tables left `_alembic_tmp_*` behind, and every later command failed with
    "table _alembic_tmp_experiment_tags already exists": the next command makes the empty store anew, saying so."""
    import sqlite3

    from tests.helpers import TINY, runs
    from vitbench.tracking import connect, open_store

    uri = connect(None)
    open_store(uri)
    with sqlite3.connect(workdir / "mlflow.db") as conn:  # interrupted inside an old migration's batch copy
        conn.execute("UPDATE alembic_version SET version_num = '1971f2d9a75b'")
        conn.execute("CREATE TABLE _alembic_tmp_experiment_tags (key VARCHAR(250))")
        conn.execute("DROP TABLE experiment_tags")
    import subprocess
    import sys

    from tests.conftest import REPO

    command = [sys.executable, "-m", "vitbench", "run", "--epochs", "1", *TINY]
    env = {**os.environ, "PYTHONPATH": str(REPO), "VITBENCH_DATA": str(tiny_mnist)}
    out = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "was left half-made by an interrupted command" in out.stderr and len(runs()) == 1



@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "http"])
def test_a_store_that_never_answers_is_one_line_within_seconds(workdir, scheme):
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    server = Silent(health=scheme == "http")
    uri = f"{scheme}://vitbench:pw@127.0.0.1:{server.port}" + ("/mlflow" if scheme != "http" else "")
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "vitbench", "report", "--experiment", "x", "--tracking-uri", uri],
                             cwd=workdir, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        server.close()
    took = time.perf_counter() - t0
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "127.0.0.1" in line and "pw" not in line and took < 25, (took, line)



@pytest.mark.parametrize("args,needle", [
    (["run", "--epochs", "abc"], "Invalid value for '--epochs'"),
    (["run", "--bogus"], "No such option: --bogus"),
    (["bench", "--repeats", "1e3"], "Invalid value for '--repeats'"),
    (["nosuch"], "No such command 'nosuch'"),
])
def test_what_is_not_a_number_or_not_an_option_is_one_line_too(workdir, args, needle):
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-m", "vitbench", *args], cwd=workdir, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 2 and out.stdout == "", out
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and needle in line and "--help` lists" in line, line
    assert not list(workdir.iterdir())  # nothing written
