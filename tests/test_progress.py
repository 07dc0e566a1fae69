"""Long runs you can see: the projection line, progress lines in a log file, live metrics, --quiet."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.helpers import TINY, runs
from vitbench.cli import app
from vitbench.errors import VitbenchError
from vitbench.progress import Display, Every, duration

# naive-msa: slow enough on the CPU (Python loops) that a short interval sees several lines
SLOW = ["run", "--variant", "naive-msa", "--epochs", "2", "--batch-size", "16", *TINY]  # 512 / 16 = 32 steps/epoch
LINE = re.compile(r"^naive-msa: step (\d+)/64 \(\d+%\) \| epoch [12]/2 \| img/s [\d,]+ \| loss [\d.]+ \| "
                  r"acc [\d.]+ \| ETA .+ \| elapsed .+$", re.M)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


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


def test_cadences_parse():
    assert Every.parse("10s") == Every(10.0, None)
    assert Every.parse("2.5s") == Every(2.5, None)
    assert Every.parse("200") == Every(None, 200) == Every.parse("200 steps")
    assert not Every.parse("off").on
    for bad in ("fast", "-3", "0s"):
        with pytest.raises(VitbenchError, match="cadence"):
            Every.parse(bad)
    res = invoke("run", "--live-every", "sometimes", *TINY)
    assert res.exit_code == 2 and res.stderr.startswith("error: cannot read 'sometimes'")


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (3.21, 42, 245, 4620)] == ["3.2 s", "42 s", "4 min 05 s", "1 h 17 min"]


def test_display_lines_mode_rate_limits(capsys):
    out: list[str] = []
    with Display("lines", interval=3600, log=out.append) as d:
        task = d.task("job", 10, unit="cell")
        for i in range(10):
            task.update(i + 1, fields={"ETA": "1 s"})
        task.update(10, force_line=True)
        d.note("a note")
    assert out == ["job: cell 10/10 (100%) | ETA 1 s | elapsed 0.0 s", "a note"]


def test_display_bar_mode_draws_a_bar(monkeypatch):
    import io

    from rich.console import Console

    buf = io.StringIO()
    import rich.progress

    real = rich.progress.Progress

    def to_buffer(*a, **k):
        return real(*a, console=Console(file=buf, force_terminal=True, width=120), **k)

    monkeypatch.setattr(rich.progress, "Progress", to_buffer)
    with Display("bar") as d:
        task = d.task("sdpa", 100)
        task.update(50, fields={"img/s": "1,234", "loss": "0.5", "ETA": "3 s"})
        d.note("projection")
    text = buf.getvalue()
    assert "sdpa" in text and "50/100" in text and "img/s 1,234" in text and "projection" in text
