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
os.environ["VITBENCH_WARM"] = "off"  # every `vitbench` a test starts runs in its own process; tests/system/test_warm.py: on
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
def space(workdir) -> Path:
    """A sweep's search space of two options (tests.helpers.SPACE)."""
    from tests.helpers import SPACE

    path = workdir / "space.yaml"
    path.write_text(SPACE)
    return path


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


# Tiers by folder: tests/unit (no store, no subprocess) is what plain `python -m pytest` runs; tests/integration
# (a tracking store, in-process) and tests/system (servers, processes, browser, signals, wheel) are marked by their
# folder, and `python -m pytest tests` runs all three.
def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in ("integration", "system"):
            item.add_marker(getattr(pytest.mark, tier))
    # the slowest tier first, so that the parallel workers end together (the unit tests fill the gaps)
    items.sort(key=lambda item: {"system": 0, "integration": 1}.get(Path(str(item.fspath)).parent.name, 2))


@pytest.fixture(scope="session")
def store_template(tmp_path_factory) -> Path:
    """One SQLite tracking store with MLflow's tables made, for the whole test run (of this worker)."""
    import mlflow

    from vitbench.tracking import open_store

    db = tmp_path_factory.mktemp("store-template") / "mlflow.db"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    open_store(f"sqlite:///{db}")
    mlflow.set_tracking_uri(previous or "")
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    return db


@pytest.fixture
def stores_from_the_template(store_template, monkeypatch):
    """A new SQLite store a command opens in this process starts as a copy of the template (MLflow's migrations
    take ~3 s per store): what it holds, and where none was made, are as they would be."""
    from vitbench import tracking

    made = tracking.open_store

    def open_store(uri: str) -> None:
        db = tracking._sqlite_path(uri)
        if db is not None and not db.exists() and db.parent.is_dir():
            shutil.copy(store_template, db)
        return made(uri)

    monkeypatch.setattr(tracking, "open_store", open_store)
