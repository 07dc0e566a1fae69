"""Long runs you can see: the projection line, progress lines in a log file, live metrics, --quiet."""

from __future__ import annotations

import pytest

from tests.helpers import TINY, invoke
from vitbench.errors import VitbenchError
from vitbench.progress import Display, Every, duration


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

