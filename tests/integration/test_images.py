"""Datasets at any preset's shape: `--dataset synthetic` and `--dataset imagefolder:PATH`, end to end."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.helpers import TINY, invoke, runs, write_folder


def test_synthetic_data_at_any_preset_is_marked_as_such(workdir):
    res = invoke("run", "--dataset", "synthetic", "--preset", "cifar10", "--max-steps", "3", "--batch-size", "32",
                 *TINY)
    assert res.exit_code == 0, res.output
    assert "synthetic data: throughput only" in res.output
    (run,) = runs("vitbench-synthetic")
    assert run.info.status == "FINISHED" and run.data.tags["synthetic"].startswith("true")
    assert run.data.tags["eval_set"] == "synthetic" and run.data.params["model.image_size"] == "32"
    assert run.data.params["model.in_chans"] == "3"



@pytest.mark.parametrize("loader", ["gpu", "dataloader"])  # decoded into memory, or read per batch
def test_imagefolder_trains_resized_to_the_preset(workdir, loader):
    folder = write_folder(workdir / "pets")
    res = invoke("run", "--dataset", f"imagefolder:{folder}", "--preset", "cifar10", "--epochs", "2",
                 "--batch-size", "16", "--loader", loader, "--val-split", "0.25", *TINY)
    assert res.exit_code == 0, res.output
    (run,) = runs("vitbench-imagefolder-pets")
    assert run.info.status == "FINISHED"
    assert run.data.params["model.num_classes"] == "3" and run.data.params["model.image_size"] == "32"
    assert run.data.tags["eval_set"] == "val:0.25" and run.data.metrics["val_acc"] > 0.5
    assert f"loader={loader}" in run.data.tags["fast_path"]
    res = invoke("inspect", run.info.run_id, "--images", "2", "--out", str(workdir / "insp"))
    assert res.exit_code == 0, res.output  # the folder's class names, resident or streamed
    assert (workdir / "insp" / "attention_maps.png").exists()



def test_imagefolder_with_train_and_val_folders(workdir):
    write_folder(workdir / "set" / "train")
    write_folder(workdir / "set" / "val", per_class=4)
    res = invoke("run", "--dataset", f"imagefolder:{workdir / 'set'}", "--preset", "cifar10", "--epochs", "1",
                 "--batch-size", "16", *TINY)
    assert res.exit_code == 0, res.output
    (run,) = runs("vitbench-imagefolder-set")
    assert run.data.tags["eval_set"] == "val" and run.data.metrics["final_val_acc"] >= 0



def test_an_image_folder_takes_its_preset_from_its_images(workdir):
    """28x28 grayscale digits in a folder get the digits' preset (not a 224-pixel one: 3,137 tokens), and say so."""
    g = torch.Generator().manual_seed(0)
    root = workdir / "digits"
    for k in range(3):
        (root / str(k)).mkdir(parents=True)
        for i in range(12):
            pixels = torch.randint(0, 60, (28, 28), generator=g, dtype=torch.uint8) + 60 * k
            Image.fromarray(pixels.numpy(), mode="L").save(root / str(k) / f"{i}.png")
    res = invoke("run", "--dataset", f"imagefolder:{root}", "--attention", "triton", "--patch-size", "4",
                 "--max-steps", "2", "--batch-size", "8", *TINY)
    assert res.exit_code == 0, res.output
    assert "28x28 grayscale images (e.g. 0.png) -> preset mnist" in res.output
    (run,) = runs("vitbench-imagefolder-digits")
    assert run.data.params["model.image_size"] == "28" and run.data.params["model.in_chans"] == "1"

