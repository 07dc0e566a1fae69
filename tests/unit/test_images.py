"""Datasets at any preset's shape: `--dataset synthetic` and `--dataset imagefolder:PATH`, end to end."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import TINY, invoke, write_folder


def test_vit_presets_match_timm():
    from vitbench.models import count_params, create_model

    # timm's vit_tiny_patch16_224 / vit_small_patch16_224 / vit_base_patch16_224 have 5,717,416 / 22,050,664 /
    # 86,567,656 parameters
    assert count_params(create_model("sdpa", "vit-ti16")) == 5_717_416
    assert count_params(create_model("sdpa", "vit-s16")) == 22_050_664
    assert count_params(create_model("sdpa", "vit-b16")) == 86_567_656



@pytest.mark.parametrize("make, needle", [
    (lambda p: None, "is not a folder"),
    (lambda p: (p / "only").mkdir(parents=True), "needs at least 2"),
])
def test_bad_imagefolder_is_one_line(workdir, make, needle):
    make(workdir / "imgs")
    res = invoke("run", "--dataset", f"imagefolder:{workdir / 'imgs'}", *TINY)
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output



def test_a_suite_process_keeps_each_seeds_own_held_out_split(workdir):
    """A suite's worker keeps loaded data across runs; an ImageFolder without a val folder draws its
    held-out 10 % with the run's seed, so each seed gets its own split, as a run of its own would."""
    from vitbench.cells import splits_for
    from vitbench.config import TrainConfig
    from vitbench.options import Options, model_config

    dataset = f"imagefolder:{write_folder(workdir / 'pets')}"
    model_cfg = model_config(Options(dataset=dataset, preset="cifar10"))
    held_out = [splits_for(TrainConfig(dataset=dataset, seed=s, device="cpu"), model_cfg).eval_index for s in (0, 1)]
    assert not torch.equal(held_out[0], held_out[1])
    again = splits_for(TrainConfig(dataset=dataset, seed=1, device="cpu"), model_cfg)
    assert again.eval_index is held_out[1]  # the same seed: the kept data, not a new load

