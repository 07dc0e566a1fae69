"""Faults one step away from the promised ones: a checkpoint killed mid-save, secrets in every URL form, a report
that uploads only what it wrote, sweeps that never repeat a configuration."""

from __future__ import annotations

import os

import pytest
import torch

from vitbench import checkpoints as train
from vitbench.secrets import mask_secrets


class Killed(BaseException):
    """SIGKILL, as far as the code under test can tell: nothing after it runs."""



@pytest.mark.parametrize("kill_at", ["checkpoint written", "checksum written", "first rename", "second rename", "never"])
@pytest.mark.parametrize("first", [True, False])
def test_a_kill_at_any_instant_of_a_save_leaves_a_resumable_pair(tmp_path, monkeypatch, kill_at, first):
    path = tmp_path / "last.pt"
    old, new = {"step": torch.tensor(1)}, {"step": torch.tensor(2)}
    if not first:
        train.save_checkpoint(old, path)
    replaces = []
    real_replace, real_write = os.replace, type(path).write_text

    def replace(a, b):
        if (kill_at, len(replaces)) in (("first rename", 0), ("second rename", 1)):
            raise Killed
        replaces.append(b)
        real_replace(a, b)

    def write_text(self, *a, **k):
        if kill_at == "checkpoint written":
            raise Killed
        out = real_write(self, *a, **k)
        if kill_at == "checksum written":
            raise Killed
        return out

    monkeypatch.setattr(train.os, "replace", replace)
    monkeypatch.setattr(type(path), "write_text", write_text)
    with pytest.raises(Killed) if kill_at != "never" else pytest.raises(AssertionError, match="never killed"):
        train.save_checkpoint(new, path)
        raise AssertionError("never killed")
    monkeypatch.undo()
    if first and kill_at in ("checkpoint written", "checksum written", "first rename"):
        with pytest.raises(train.VitbenchError, match="no checkpoint at"):  # nothing was saved yet: nothing lost
            train.load_checkpoint(path)
        return
    step = int(train.load_checkpoint(path)["step"])
    assert step == (2 if kill_at in ("second rename", "never") else 1)
    assert os.system(f"cd {tmp_path} && sha256sum -c --quiet last.pt.sha256") == 0  # the pair agrees again



@pytest.mark.parametrize("url", [
    "postgresql+psycopg://vitbench:s3cr@t@db.example:5432/optuna",
    "http://user:pa:ss@mlflow.example/",
    "http://mlflow.example/?password=s3cr@t&x=1",
    "https://mlflow.example/api?token=s3cr@t",
    "postgresql://db.example/optuna?sslmode=require&password=s3cr@t",
    "host=db.example user=vitbench password=s3cr@t dbname=optuna",
    "http://db.example/?api_key=s3cr@t",
])
def test_no_secret_survives_in_any_url_form(url):
    masked = mask_secrets(f"storage {url} failed")
    assert "s3cr" not in masked and "t@db" not in masked and "pa:ss" not in masked, masked
    assert "***" in masked and "example" in masked or "db.example" in masked



def test_masking_leaves_what_is_not_a_secret():
    text = "http://127.0.0.1:5000/#/experiments/1/runs?viewStateShareKey=vitbench lr=0.002 sslkey=/etc/k.pem"
    assert mask_secrets(text) == text

