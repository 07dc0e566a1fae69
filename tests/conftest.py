"""Fixtures: tiny datasets written in the real on-disk formats, real MNIST when ../shared has it,
and an isolated working directory (so mlflow.db / mlruns / checkpoints land in tmp)."""

from __future__ import annotations

import glob
import gzip
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ["VITBENCH_WARM"] = "off"  # every `vitbench` a test starts runs in its own process; tests/test_warm.py: on
if not torch.cuda.is_available():  # the fused Triton attention runs in Triton's interpreter on the CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")
# A shell without job control starts `pytest &` with SIGINT ignored, and every command a test starts would
# inherit that: the Ctrl-C tests' SIGINT would do nothing. Handled here, it is the default again in them.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "datasets" / "MNIST" / "raw"


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """IDX format of the MNIST family: magic (0, 0, uint8=0x08, ndim), big-endian dims, raw bytes."""
    data = tensor.to(torch.uint8).contiguous()
    header = struct.pack(">BBBB", 0, 0, 0x08, data.ndim) + struct.pack(f">{data.ndim}I", *data.shape)
    path.write_bytes(header + data.numpy().tobytes())


def learnable_images(n: int, seed: int, shape=(1, 28, 28), classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images whose class sets their brightness (every patch sees it) and lights one block."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    c, h, w = shape
    level = (labels * (200 // classes)).view(n, 1, 1, 1)
    images = level + torch.randint(0, 40, (n, c, h, w), generator=g)
    for i, y in enumerate(labels.tolist()):
        r, col = divmod(y % 16, 4)
        images[i, :, r * (h // 4):(r + 1) * (h // 4), col * (w // 4):(col + 1) * (w // 4)] = 255
    return images.clamp(0, 255).to(torch.uint8), labels


def write_tiny_mnist(root: Path, folder: str = "MNIST", n_train: int = 512, n_test: int = 256) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        x, y = learnable_images(n, seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", x[:, 0])
        write_idx(raw / f"{split}-labels-idx1-ubyte", y)
    return root


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))  # outbox markers (vitbench.outbox.pending_folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VITBENCH_DATA", raising=False)
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()
    return tmp_path


@pytest.fixture
def tiny_mnist(workdir) -> Path:
    return write_tiny_mnist(workdir / "data")


@pytest.fixture(scope="session")
def real_mnist(tmp_path_factory) -> Path:
    """Real MNIST from ../shared/datasets (as .gz: vitbench decompresses them itself)."""
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"real MNIST not found at {SHARED_MNIST}")
    root = tmp_path_factory.mktemp("mnist")
    (root / "MNIST" / "raw").mkdir(parents=True)
    for f in SHARED_MNIST.glob("*.gz"):
        shutil.copy(f, root / "MNIST" / "raw" / f.name)
    return root


def gz(path: Path) -> None:
    with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL server on loopback; initdb refuses root, so it runs as 'postgres'."""
    if not BIN:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql)")
    bindir = BIN[-1]
    data = Path(tempfile.mkdtemp(prefix="vitbench-pg-"))  # pytest's tmp is private to root
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_user, f"{bindir}/initdb", "-D", str(data), "-U", "vitbench", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", str(data), "-w", "-l", str(data / "log"), "-o",
                    f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=vitbench dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE optuna")
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql+psycopg://vitbench@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)



def start_mlflow_server(backend: str, artifacts: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on loopback with proxied artifacts (no shared filesystem); waits for /health."""
    import requests

    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.5)
    stop_server(proc)
    pytest.fail("mlflow server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


# The fast tier for an edit-test loop, `python -m pytest -m "not e2e"` (~3 min on 2 cores); CI runs everything.
# e2e: the modules whose tests start real servers or processes (mlflow server, PostgreSQL, Chromium, worker
# processes, data-parallel ranks, warm processes, killed runs) or run whole sweeps and suites.
E2E_MODULES = {"test_team_server", "test_sweep_postgres", "test_mlflow_ui", "test_distributed", "test_workers",
               "test_warm", "test_tracking", "test_sweep", "test_reliability"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.split(".")[-1] in E2E_MODULES or item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.e2e)
