"""`vitbench run --gpus N`: data-parallel ranks through torch.distributed.run, here on the CPU (gloo)."""

from __future__ import annotations

import pytest

from tests.helpers import invoke


@pytest.mark.parametrize("args, needle", [
    (("--gpus", "2"), "--gpus 2 needs 2 CUDA GPUs; this machine has 0"),
    (("--gpus", "2", "--device", "cpu", "--batch-size", "63"), "must divide evenly over --gpus 2"),
    (("--gpus", "2", "--device", "cpu", "--loader", "dataloader"), "--loader dataloader does not apply"),
    (("--nodes", "2", "--device", "cpu"), "--nodes 2 needs --rdzv-endpoint HOST:PORT"),
    (("--nodes", "2", "--rdzv-endpoint", "nohost", "--device", "cpu"), "--rdzv-endpoint must be HOST:PORT"),
    (("--nodes", "2", "--gpus", "2", "--rdzv-endpoint", "h:1", "--device", "cpu", "--batch-size", "6"),
     "must divide evenly over 4 ranks (--gpus 2 x --nodes 2)"),
])
def test_bad_launches_are_one_line(workdir, tiny_mnist, args, needle):
    import torch

    if torch.cuda.is_available() and "cpu" not in args:
        pytest.skip("this machine has GPUs")
    res = invoke("run", "--data-dir", str(tiny_mnist), *args)
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
    assert not (workdir / "checkpoints").exists()

