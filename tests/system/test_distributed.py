"""`vitbench run --gpus N`: data-parallel ranks through torch.distributed.run, here on the CPU (gloo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import invoke, runs

SMALL = ("--device", "cpu", "--depth", "1", "--dim", "32", "--heads", "2", "--mlp-dim", "64", "--batch-size", "64",
         "--quiet")


def vitbench(*args: str, data, **kw) -> subprocess.Popen:
    env = {**os.environ, "VITBENCH_DATA": str(data)}
    return subprocess.Popen([sys.executable, "-m", "vitbench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def curve(run_id: str, key: str = "train_loss") -> list[float]:
    from mlflow.tracking import MlflowClient

    return [m.value for m in sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: m.step)]



def test_two_ranks_give_the_loss_curve_of_one_process(workdir, tiny_mnist):
    """Same seed, same global batch (64 = 2 x 32): the ranks together see the single process's samples in
    its order and average their gradients, so the curves agree to float rounding (relative 1e-4)."""
    one = invoke("run", *SMALL, "--loader", "gpu", "--epochs", "2", "--data-dir", str(tiny_mnist))
    assert one.exit_code == 0, one.output
    proc = vitbench("run", *SMALL, "--gpus", "2", "--epochs", "2", data=tiny_mnist)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "global batch 64 (32 per rank)" in out and out.count("done:") == 1
    single, ddp = sorted(runs(), key=lambda r: r.data.tags.get("world_size", "1"))
    assert ddp.data.tags["world_size"] == "2" and ddp.data.tags["rank.1.gpu"].endswith("cpu")
    assert ddp.data.params["train.batch_size"] == "64"
    a, b = curve(single.info.run_id), curve(ddp.info.run_id)
    assert len(a) == len(b) == 2 and a[0] > a[-1]
    assert b == pytest.approx(a, rel=1e-4)
    assert curve(ddp.info.run_id, "val_acc") == pytest.approx(curve(single.info.run_id, "val_acc"), abs=1 / 256)



def test_two_nodes_meet_at_a_rendezvous_and_train_as_one_process(workdir, tiny_mnist):
    """Two hosts, played by two launchers on this one (gloo on the CPU): the same command with --nodes 2 and one
    rendezvous endpoint; their two ranks train as the single process does, and one MLflow run records it."""
    import socket

    one = invoke("run", *SMALL, "--loader", "gpu", "--epochs", "1", "--data-dir", str(tiny_mnist))
    assert one.exit_code == 0, one.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ("run", *SMALL, "--epochs", "1", "--gpus", "1", "--nodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "--rdzv-id", "two-nodes")
    hosts = [vitbench(*args, data=tiny_mnist) for _ in range(2)]
    outs = [h.communicate(timeout=300)[0] for h in hosts]
    assert [h.returncode for h in hosts] == [0, 0], outs
    assert all(f"1 rank(s) on each of 2 hosts meeting at 127.0.0.1:{port}" in o for o in outs)
    assert sum(o.count("done:") for o in outs) == 1  # rank 0, on whichever host the rendezvous made it
    single, ddp = sorted(runs(), key=lambda r: r.data.tags.get("world_size", "1"))
    assert ddp.data.tags["world_size"] == "2" and {"rank.0.gpu", "rank.1.gpu"} <= set(ddp.data.tags)
    assert curve(ddp.info.run_id) == pytest.approx(curve(single.info.run_id), rel=1e-4)



def test_ctrl_c_ends_every_rank_and_resume_continues(workdir, tiny_mnist):
    proc = vitbench("run", *SMALL, "--gpus", "2", "--epochs", "1000", "--progress-interval", "1",
                    "--live-every", "off", data=tiny_mnist)
    deadline, seen = time.time() + 240, ""
    while time.time() < deadline and "step" not in seen:
        seen += proc.stdout.readline()
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out = seen + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "ended KILLED and a checkpoint written" in out and "Traceback" not in out
    (run,) = runs()
    rid = run.info.run_id
    assert run.info.status == "KILLED" and (workdir / "checkpoints" / rid / "last.pt").exists()
    stopped_at = int(run.data.metrics["steps"])
    assert stopped_at > 0

    epochs = stopped_at // (512 // 64) + 1  # the interrupted epoch is finished, no more
    proc = vitbench("run", "--resume", rid, "--gpus", "2", "--device", "cpu", "--epochs", str(epochs), "--quiet",
                    data=tiny_mnist)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    (run,) = runs()
    assert run.info.status == "FINISHED" and run.data.metrics["steps"] == epochs * (512 // 64)
    assert "resumed_at_step" in run.data.tags

