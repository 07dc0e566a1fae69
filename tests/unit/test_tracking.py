"""The record never lies about a run: secrets masked, an absent server named at once, dead runs ended."""

from __future__ import annotations

import os
import sys
import time
import types

import pytest
from typer.testing import CliRunner

from tests.helpers import TINY
from vitbench import liveness, tracking
from vitbench.cli import app


def _run_object(host: str, pid: str, beat_ago: float | None, started_ago: float = 3600):
    now = time.time()
    tags = {"vitbench.host": host, "vitbench.pid": pid}
    if beat_ago is not None:
        tags["vitbench.heartbeat"] = f"{now - beat_ago:.0f}"
    return types.SimpleNamespace(data=types.SimpleNamespace(tags=tags),
                                 info=types.SimpleNamespace(start_time=int((now - started_ago) * 1000), run_id="r1"))



def test_passwords_are_masked_everywhere_they_could_show(monkeypatch):
    assert tracking.mask_secrets("postgresql+psycopg://ann:s3cr3t@db:5432/optuna and http://bob:pw@h:5000") == \
        "postgresql+psycopg://ann:***@db:5432/optuna and http://bob:***@h:5000"
    assert tracking.mask_secrets("sqlite:///mlflow.db http://host:5000") == "sqlite:///mlflow.db http://host:5000"
    monkeypatch.setattr(sys, "argv", ["vitbench", "sweep", "--storage", "postgresql+psycopg://ann:s3cr3t@db/optuna"])
    assert "s3cr3t" not in tracking.environment_tags()["command"]
    assert tracking.flatten({"storage": "postgresql://ann:s3cr3t@db/x"}) == {"storage": "postgresql://ann:***@db/x"}



def test_an_unreachable_server_is_one_line_within_seconds_before_any_data(workdir):
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["run", "--tracking-uri", "http://ann:s3cr3t@127.0.0.1:1", "--data-dir",
                                   str(workdir / "no-data-here"), *TINY])
    assert time.perf_counter() - t0 < 10
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "tracking server http://ann:***@127.0.0.1:1 is not reachable" in err, err
    assert "s3cr3t" not in res.output and "Traceback" not in res.output



def test_orphan_rules():
    import socket

    here = socket.gethostname()
    assert liveness.orphan_reason(_run_object(here, str(os.getpid()), 5, started_ago=0)) is None  # this process
    # the same PID started after the run: another process that reused it
    assert "no longer runs" in liveness.orphan_reason(_run_object(here, str(os.getpid()), 5, started_ago=10 ** 7))
    assert "pid 999999999 on" in liveness.orphan_reason(_run_object(here, "999999999", 5))
    assert liveness.orphan_reason(_run_object("elsewhere", "12", 60)) is None
    stale = liveness.orphan_reason(_run_object("elsewhere", "12", liveness.HEARTBEAT_TIMEOUT + 60))
    assert "no heartbeat from elsewhere since" in stale and "the timeout is 15 min" in stale
    assert liveness.orphan_reason(types.SimpleNamespace(data=types.SimpleNamespace(tags={}), info=None)) is None



@pytest.mark.parametrize("args", [["report", "--experiment", "x"], ["bench", "--variants", "sdpa"]])
def test_unreachable_server_for_other_commands(workdir, args):
    res = CliRunner().invoke(app, [*args, "--tracking-uri", "http://127.0.0.1:1"])
    assert res.exit_code == 2 and "is not reachable" in res.stderr, res.output

