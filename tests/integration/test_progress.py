"""Long runs you can see: the projection line, progress lines in a log file, live metrics, --quiet."""

from __future__ import annotations

import re

from mlflow.tracking import MlflowClient

from tests.helpers import TINY, invoke, runs

# naive-msa: slow enough on the CPU (Python loops) that a short interval sees several lines
SLOW = ["run", "--variant", "naive-msa", "--epochs", "2", "--batch-size", "16", *TINY]  # 512 / 16 = 32 steps/epoch


LINE = re.compile(r"^naive-msa: step (\d+)/64 \(\d+%\) \| epoch [12]/2 \| img/s [\d,]+ \| loss [\d.]+ \| "
                  r"acc [\d.]+ \| ETA .+ \| elapsed .+$", re.M)



def test_projection_and_plain_progress_lines_in_a_log(workdir, tiny_mnist):
    res = invoke(*SLOW, "--progress-interval", "0.05")
    assert res.exit_code == 0, res.output
    proj = [line for line in res.output.splitlines() if "img/s ->" in line]
    assert len(proj) == 1, res.output  # once, before the long part
    assert re.fullmatch(r"naive-msa: [\d,]+ img/s -> 2 epochs \(64 steps\) ~ [\d.]+ (s|min \d+ s) of training.*",
                        proj[0]), proj
    lines = LINE.findall(res.output)
    assert len(lines) >= 3, res.output
    assert [int(s) for s in lines] == sorted(int(s) for s in lines)  # steps only go forward
    assert res.output.index(proj[0]) < res.output.index("epoch 1:")



def test_quiet_turns_progress_off(workdir, tiny_mnist):
    res = invoke(*SLOW, "--progress-interval", "0.05", "--quiet")
    assert res.exit_code == 0, res.output
    assert not LINE.search(res.output), res.output
    assert "done: naive-msa" in res.output



def test_live_metrics_against_the_global_step(workdir, tiny_mnist):
    res = invoke("run", "--epochs", "2", "--batch-size", "32", "--live-every", "4", *TINY)  # 16 steps/epoch
    assert res.exit_code == 0, res.output
    (run,) = runs()
    client = MlflowClient()
    for key in ("live/train_loss", "live/train_acc", "live/train_images_per_sec"):
        hist = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in hist] == list(range(4, 33, 4)), key
        assert all(m.value == m.value and m.value >= 0 for m in hist), key
    # epoch metrics keep their names and their step (the epoch)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    assert run.data.metrics["images_seen"] == 32 * 32



def test_live_metrics_off(workdir, tiny_mnist):
    res = invoke("run", "--epochs", "1", "--batch-size", "32", "--live-every", "off", *TINY)
    assert res.exit_code == 0, res.output
    (run,) = runs()
    assert not [k for k in run.data.metrics if k.startswith("live/")]



def test_a_failed_run_keeps_what_it_did(workdir, tiny_mnist):
    res = invoke("run", "--variant", "sdpa", "--lr", "1e30", "--warmup-epochs", "0", *TINY)
    assert res.exit_code == 2
    (run,) = runs()
    m = run.data.metrics
    assert run.info.status == "FAILED" and run.data.tags["stopped_by"] == "error (NonFiniteLoss)"
    assert m["steps"] >= 1 and m["images_seen"] == m["steps"] * 64 and m["train_seconds"] > 0
    assert "final_val_acc" not in m  # NaN weights are not evaluated

