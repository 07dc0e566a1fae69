"""`vitbench run` in a warm process (vitbench.warm): the same runs as in a process of their own, the caller's
terminal, Ctrl-C and exit code; the protocol's parts (status, stop, idle, busy) in-process."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

from vitbench import warm, warm_server


@pytest.fixture
def socket_folder(monkeypatch) -> Path:
    monkeypatch.setenv("VITBENCH_WARM_DIR", tempfile.mkdtemp(prefix="vw", dir="/tmp"))
    return warm.folder()



def test_a_warm_process_answers_status_and_stop_and_leaves_when_idle(socket_folder):
    server = warm_server.Server(socket_folder / "a.sock", idle=30)
    answers: list = []

    def ask() -> None:
        time.sleep(0.2)
        answers.append(warm.status())
        answers.append(warm.status(stop=True))

    asking = threading.Thread(target=ask)
    asking.start()
    t0 = time.perf_counter()
    server.serve()  # returns on the stop, long before its 30 s of idleness
    assert time.perf_counter() - t0 < 10
    asking.join(timeout=10)  # the stop's answer may still be on its way when serve() returns
    assert [a[0]["pid"] for a in answers] == [os.getpid()] * 2 and answers[0][0]["busy"] is False
    assert not (socket_folder / "a.sock").exists() and warm.status() == []

    idle = warm_server.Server(socket_folder / "b.sock", idle=0.2)
    t0 = time.perf_counter()
    idle.serve()
    assert time.perf_counter() - t0 < 5 and not (socket_folder / "b.sock").exists()



def test_a_warm_process_that_compiled_many_models_takes_no_more_commands(socket_folder, monkeypatch):
    """torch runs a compiled function eagerly past MODELS_PER_PROCESS versions: a warm process whose commands
    compiled half as many models leaves (the next caller starts a fresh one) rather than time a run uncompiled."""
    from vitbench import compute

    monkeypatch.setattr(compute, "_MODELS", {str(i) for i in range(compute.MODELS_PER_PROCESS // 2 - 1)})
    assert not warm_server.Server(socket_folder / "a.sock", idle=30).full()
    compute.count_compiled("one more")
    server = warm_server.Server(socket_folder / "b.sock", idle=30)
    t0 = time.perf_counter()
    server.serve()  # leaves at once instead of waiting 30 s for a command
    assert server.full() and time.perf_counter() - t0 < 5 and not (socket_folder / "b.sock").exists()



def test_a_busy_or_importing_warm_process_sends_the_caller_back_to_run_it_itself(socket_folder, monkeypatch):
    monkeypatch.setattr(warm, "key", lambda: "k")
    server = warm_server.Server(socket_folder / "k.sock", idle=30)
    assert warm.forward(["run", "--device", "cpu"], note=print) is None  # still importing
    server.ready = server.busy = True  # a command is running
    assert warm.forward(["run", "--device", "cpu"], note=print) is None
    server.leave()
    assert not (socket_folder / "k.sock").exists()



@pytest.mark.parametrize("argv,env,gpu,expected", [
    (["run"], {}, True, False),  # by default: only a warm process the user started (none here)
    (["suite", "a.yaml", "--gpus", "2"], {}, True, False),
    (["run"], {"VITBENCH_WARM": "auto"}, False, False),  # auto: no GPU, no warm process
    (["run"], {"VITBENCH_WARM": "auto"}, True, True),
    (["run", "--device", "cpu"], {"VITBENCH_WARM": "auto"}, True, False),
    (["run", "--gpus", "2"], {"VITBENCH_WARM": "auto"}, True, False),  # data-parallel ranks: processes of their own
    (["run"], {"CUDA_VISIBLE_DEVICES": "", "VITBENCH_WARM": "auto"}, True, False),
    (["run"], {"CUDA_VISIBLE_DEVICES": "1", "VITBENCH_WARM": "auto"}, False, True),
    (["run", "--help"], {"VITBENCH_WARM": "on"}, False, False),
    (["run", "--device=cpu"], {"VITBENCH_WARM": "on"}, False, True),
    (["run"], {"VITBENCH_WARM": "off"}, True, False),
    (["bench"], {"VITBENCH_WARM": "on"}, True, False),
    (["suite", "a.yaml", "--gpus", "2"], {"VITBENCH_WARM": "auto"}, True, True),
    (["suite", "a.yaml", "--worker", "0"], {"VITBENCH_WARM": "on"}, True, False),  # a suite's worker: its own
    (["suite", "a.yaml"], {"VITBENCH_WARM": "auto"}, False, False),
    (["suite", "a.yaml", "--gpus", "2", "--device", "cpu"], {"VITBENCH_WARM": "on"}, False, True),
])
def test_which_commands_go_to_a_warm_process(monkeypatch, tmp_path, argv, env, gpu, expected):
    monkeypatch.delenv("VITBENCH_WARM", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("VITBENCH_WARM_DIR", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(warm, "nvml_gpus", lambda: ["0"] if gpu else [])  # what NVML sees
    assert warm.wanted(argv) is expected
    assert not (tmp_path / f"vitbench-warm-{os.getuid()}").exists()  # asking made nothing on disk


def test_a_warm_process_the_user_started_serves_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv("VITBENCH_WARM", raising=False)
    monkeypatch.setenv("VITBENCH_WARM_DIR", str(tmp_path))
    assert not warm.wanted(["run"])
    (warm.folder() / f"{warm.key()}.sock").touch()  # as `vitbench warm --start` leaves it
    assert warm.wanted(["run"]) and warm.wanted(["suite", "a.yaml"])


def test_the_environment_torch_reads_at_import_picks_the_warm_process(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    first = warm.key()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITBENCH_WARM_IDLE", "5")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")  # read per command: the same process
    assert warm.key() == first
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert warm.key() != first



def test_no_warm_process_in_a_folder_others_can_write(monkeypatch, tmp_path):
    monkeypatch.setenv("VITBENCH_WARM_DIR", str(tmp_path))
    shared = tmp_path / f"vitbench-warm-{os.getuid()}"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # as another user could have made it in a shared /tmp
    with pytest.raises(PermissionError):
        warm.forward(["run"], note=print)
    shared.chmod(0o700)
    assert warm.folder() == shared



def test_a_silent_or_malformed_client_costs_no_other_caller_anything(socket_folder, monkeypatch):
    import json
    import socket

    monkeypatch.setattr(warm_server, "RECEIVE_SECONDS", 0.5)
    server = warm_server.Server(socket_folder / "a.sock", idle=30)
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(str(socket_folder / "a.sock"))  # connects and says nothing
    t0 = time.perf_counter()
    assert warm.status()[0]["pid"] == os.getpid() and time.perf_counter() - t0 < 3
    for bad in ([1, 2], {"op": "run", "argv": "run"}, {"op": 3}, "x"):  # well-formed JSON, the wrong shape
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(socket_folder / "a.sock"))
        data = json.dumps(bad).encode()
        s.sendall(warm._HEADER.pack(len(data)) + data)
        assert s.recv(64) == b""  # dropped, not answered
        s.close()
    assert warm.status()[0]["pid"] == os.getpid()  # the listener lives on
    silent.close()
    server.leave()


def test_ctrl_c_before_the_warm_process_takes_the_command_stops_the_caller(socket_folder, monkeypatch):
    """A warm process that never answers (a Ctrl-C 0.1-0.4 s after the command started used to hang the caller,
    deaf to more Ctrl-C): the caller stops at the first one."""
    import signal
    import socket

    monkeypatch.setattr(warm, "key", lambda: "k")
    deaf = socket.socket(socket.AF_UNIX)
    deaf.bind(str(socket_folder / "k.sock"))
    deaf.listen(4)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            warm.forward(["run", "--device", "cpu"], note=print)
    finally:
        timer.cancel()
    assert time.perf_counter() - t0 < 5
    assert signal.getsignal(signal.SIGINT) is not None and signal.getsignal(signal.SIGTERM) is not warm.forward
    deaf.close()
