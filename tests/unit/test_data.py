from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from torch.nn import functional as F

from tests.conftest import gz, learnable_images, write_tiny_mnist
from vitbench import VitbenchError
from vitbench.data import (
    DATASETS,
    DeviceLoader,
    TorchLoader,
    data_root,
    epoch_order,
    load_splits,
    random_affine,
    random_crop_flip,
    resolve_augment,
)


def write_cifar(root: Path, name: str, n_per_batch: int = 20, monkeypatch=None) -> Path:
    """Small files in CIFAR's own pickle-batch format, registered with torchvision's MD5 lists."""
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    classes = 10 if name == "cifar10" else 100
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def dump(fname: str, obj) -> list[str]:
        (folder / fname).write_bytes(pickle.dumps(obj))
        return [fname, hashlib.md5((folder / fname).read_bytes()).hexdigest()]

    lists = {"train_list": [], "test_list": []}
    for key in lists:
        for i, (fname, _) in enumerate(getattr(cls, key)):
            x, y = learnable_images(n_per_batch, seed=i, shape=(3, 32, 32), classes=classes)
            lists[key].append(dump(fname, {"data": x.reshape(n_per_batch, -1).numpy(), label_key: y.tolist()}))
    meta_name = cls.meta["filename"]
    meta_md5 = dump(meta_name, {cls.meta["key"]: [f"class{i}" for i in range(classes)]})[1]
    monkeypatch.setattr(cls, "train_list", lists["train_list"])
    monkeypatch.setattr(cls, "test_list", lists["test_list"])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})
    return root



@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loader_reads_cifar_pickle_batches(name, tmp_path, monkeypatch):
    root = write_cifar(tmp_path, name, monkeypatch=monkeypatch)
    splits = load_splits(name, str(root))
    n_train = 20 * len(torchvision.datasets.CIFAR10.train_list if name == "cifar10" else [0])  # 5 batches / 1 file
    assert splits.train_images.shape == (n_train, 3, 32, 32) and splits.train_images.dtype == torch.uint8
    assert splits.eval_images.shape == (20, 3, 32, 32) and splits.eval_set == "test"
    assert int(splits.train_labels.max()) < DATASETS[name].num_classes
    # Both loaders see the same images in the same (shuffled) order; augmentation off to compare.
    dev = DeviceLoader(splits.train_images, splits.train_labels, splits.info, 16, torch.device("cpu"), True, seed=3)
    dev.augment = "none"
    tl = TorchLoader(splits, 16, torch.device("cpu"), train=True, seed=3)
    tl.loader.dataset.transform = torchvision.transforms.Compose(tl.loader.dataset.transform.transforms[2:])
    for (a, ya), (b, yb) in zip(dev.batches(1), tl.batches(1), strict=True):
        torch.testing.assert_close(a, b)
        assert torch.equal(ya, yb)



def test_mnist_gz_files_are_decompressed_and_read(tmp_path):
    root = write_tiny_mnist(tmp_path)
    for f in (root / "MNIST" / "raw").iterdir():
        gz(f)
    splits = load_splits("mnist", str(root))
    assert splits.train_images.shape == (512, 1, 28, 28) and splits.eval_labels.shape == (256,)



def test_gz_files_decompressed_by_two_processes_at_once_stay_whole(tmp_path, monkeypatch):
    """A suite's two workers found .gz-only MNIST together: one wrote the shared part file while the other
    replaced it, and a run FAILED. Here the other process's whole decompression happens in the middle of this
    one's copy; both must finish and leave whole files, no part file behind."""
    import shutil

    from vitbench import data

    root = write_tiny_mnist(tmp_path)
    folder = root / "MNIST" / "raw"
    originals = {f.name: f.read_bytes() for f in folder.iterdir()}
    for f in folder.iterdir():
        gz(f)
    copy, interleaved = shutil.copyfileobj, []

    def copy_with_another_process_meanwhile(src, dst):
        if not interleaved:
            interleaved.append(True)
            data._gunzip_idx(folder, data.DATASETS["mnist"].files)  # the other worker, start to end
        copy(src, dst)

    monkeypatch.setattr(shutil, "copyfileobj", copy_with_another_process_meanwhile)
    data._gunzip_idx(folder, data.DATASETS["mnist"].files)
    assert {name: (folder / name).read_bytes() for name in originals} == originals
    assert not list(folder.glob("*.part"))



def test_fashion_mnist_reads_its_own_folder(tmp_path):
    root = write_tiny_mnist(tmp_path, folder="FashionMNIST")
    assert load_splits("fashion-mnist", str(root)).info.num_classes == 10



def test_missing_data_names_files_folder_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens
    with pytest.raises(VitbenchError) as e:
        load_splits("mnist", str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    assert "--data-dir" in msg and "\n" not in msg



def test_missing_cifar_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar.tar.gz")
    with pytest.raises(VitbenchError, match="data_batch_1.*cifar-10-python.tar.gz"):
        load_splits("cifar10", str(tmp_path))



def test_truncated_file_is_reported_as_corrupt(tmp_path):
    root = write_tiny_mnist(tmp_path)
    f = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(VitbenchError, match="truncated or corrupt"):
        load_splits("mnist", str(root))



def test_corrupt_cifar_pickle_is_reported(tmp_path, monkeypatch):
    root = write_cifar(tmp_path, "cifar10", monkeypatch=monkeypatch)
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(VitbenchError, match="corrupt"):
        load_splits("cifar10", str(root))



def test_data_root_precedence(monkeypatch):
    monkeypatch.setenv("VITBENCH_DATA", "/env/data")
    assert data_root("/cli") == Path("/cli") and data_root() == Path("/env/data")
    monkeypatch.delenv("VITBENCH_DATA")
    assert data_root() == Path("data")



def test_val_split_holds_out_part_of_training_set(tmp_path):
    root = write_tiny_mnist(tmp_path)
    s = load_splits("mnist", str(root), val_split=0.25, seed=5)
    assert (len(s.train_labels), len(s.eval_labels), s.eval_set) == (384, 128, "val:0.25")
    assert not set(s.train_index.tolist()) & set(s.eval_index.tolist())
    assert torch.equal(load_splits("mnist", str(root), val_split=0.25, seed=5).eval_index, s.eval_index)



def test_a_dataloader_run_on_the_cpu_evaluates_the_same_images_from_memory(tmp_path):
    """`--loader dataloader` trains through torch's DataLoader; its evaluation on the CPU reads the images already in
    memory, batch for batch what the DataLoader's transforms give (on CUDA it stays the DataLoader: no device memory)."""
    from dataclasses import replace

    from vitbench.data import RunContext, make_loaders
    from vitbench.options import Options, configs

    cfg, _ = configs(Options(dataset="mnist", loader="dataloader", eval_batch_size=100))
    splits = load_splits("mnist", str(write_tiny_mnist(tmp_path)))
    ctx = RunContext(torch.device("cpu"), 1, "dataloader", splits.info, False)
    kind, train, evaluation = make_loaders(cfg, splits, ctx)
    assert (kind, type(train), type(evaluation)) == ("dataloader", TorchLoader, DeviceLoader)
    tutorial = TorchLoader(splits, 100, torch.device("cpu"), train=False)
    for (x, y), (tx, ty) in zip(evaluation.batches(), tutorial.batches(), strict=True):
        assert torch.equal(y, ty) and torch.allclose(x, tx, atol=1e-6)
    streamed = replace(splits, resident=False)  # an ImageFolder too large for memory: read from disk as it trains
    assert type(make_loaders(cfg, streamed, ctx)[2]) is TorchLoader


def test_one_seed_gives_one_order():
    assert torch.equal(epoch_order(100, 1, 2), epoch_order(100, 1, 2))
    assert not torch.equal(epoch_order(100, 1, 2), epoch_order(100, 1, 3))
    assert sorted(epoch_order(100, 1, 2).tolist()) == list(range(100))



def test_gpu_augmentation_crops_and_flips_deterministically():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    g = torch.Generator()
    a = random_crop_flip(x, g.manual_seed(0), pad=2)
    b = random_crop_flip(x, g.manual_seed(0), pad=2)
    assert a.shape == x.shape and torch.equal(a, b)
    # every output row is a shifted (maybe flipped) window of the padded input: values come from x or 0
    assert set(a.unique().tolist()) <= set(x.unique().tolist()) | {0.0}
    seeds = [random_crop_flip(x, g.manual_seed(s), pad=2) for s in range(8)]
    assert any(not torch.equal(other, a) for other in seeds[1:]), "augmentation ignores its seed"
    # with no padding a crop is the identity, so the output is x or its mirror image
    for img, src in zip(random_crop_flip(x, g.manual_seed(0), pad=0), x, strict=True):
        assert torch.equal(img, src) or torch.equal(img, src.flip(2))



def test_gpu_affine_augmentation_is_torchvisions_random_affine():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = torch.zeros(6, 1, 28, 28)
    x[:, :, 8:20, 12:15], x[:, :, 5:8, 5:22] = 200, 100  # a "T", so rotations, zooms and shifts all show
    g = torch.Generator()
    out = random_affine(x, g.manual_seed(0), shift=2)
    assert out.shape == x.shape and torch.equal(out, random_affine(x, g.manual_seed(0), shift=2))
    assert not torch.equal(out, random_affine(x, g.manual_seed(1), shift=2)), "augmentation ignores its seed"
    # the draws, replayed: each image is torchvision's affine with that angle, shift and zoom
    u = torch.rand((4, 6), generator=g.manual_seed(0))
    angles, zooms = (2 * u[0] - 1) * 10, 0.9 + 0.2 * u[1]
    shifts = torch.round((2 * u[2:] - 1) * 2).int()
    assert angles.abs().max() > 3 and shifts.abs().max() == 2  # the draws cover the ranges
    for i in range(6):
        ref = TF.affine(x[i], angle=float(angles[i]), translate=shifts[:, i].tolist(), scale=float(zooms[i]),
                        shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR)
        torch.testing.assert_close(out[i], ref, atol=1e-2, rtol=0)
    # no rotation, zoom or shift: the identity; a data-parallel rank's part equals that part of the whole
    torch.testing.assert_close(random_affine(x, g, shift=0, degrees=0, scale=(1, 1)), x, atol=1e-3, rtol=0)
    part = random_affine(x[2:4], g.manual_seed(0), shift=2, whole=6, part=slice(2, 4))
    torch.testing.assert_close(part, out[2:4])



def test_augment_policy_per_dataset_and_option(tmp_path):
    splits = load_splits("mnist", str(write_tiny_mnist(tmp_path)))
    cpu = torch.device("cpu")

    def first(augment, seed=0):
        loader = DeviceLoader(splits.train_images, splits.train_labels, splits.info, 32, cpu, True, seed, augment)
        return loader.augment, next(loader.batches(0))

    # digits are not flipped by default: auto is "none" for MNIST, crop-flip for CIFAR
    assert resolve_augment("auto", DATASETS["mnist"]) == "none"
    assert resolve_augment(None, DATASETS["cifar10"]) == "crop-flip"
    kind, (plain, y0) = first("auto")
    assert kind == "none"
    kind, (crop, y1) = first("crop")
    assert kind == "crop" and torch.equal(y0, y1), "augmentation must not change the sample order"
    assert crop.shape == plain.shape and not torch.equal(crop, plain)
    # a crop only shifts: with MNIST's 2-pixel padding no image moves more than 2 pixels either way
    info = DATASETS["mnist"]
    background = (0.0 - info.mean[0]) / info.std[0]  # a black pixel, normalized: padding is black
    for a, b in zip(crop, plain, strict=True):
        shifts = [torch.allclose(a, torch.roll(F.pad(b, (2, 2, 2, 2), value=background), (dy, dx), (1, 2))[:, 2:-2, 2:-2])
                  for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(shifts)
    assert torch.equal(first("crop")[1][0], crop), "the same seed gives the same crops"
    kind, (affine, y2) = first("affine")
    assert kind == "affine" and torch.equal(y0, y2) and affine.shape == plain.shape
    assert affine.dtype == plain.dtype and not torch.equal(affine, plain) and not torch.equal(affine, crop)
    # the tutorials' pipeline applies torchvision's RandomAffine with the same ranges
    tl = TorchLoader(splits, 32, cpu, train=True, seed=0, augment="affine")
    (rand_affine,) = [t for t in tl.loader.dataset.transform.transforms if type(t).__name__ == "RandomAffine"]
    assert (rand_affine.degrees, rand_affine.translate, rand_affine.scale) == ([-10.0, 10.0], (2 / 28, 2 / 28),
                                                                                (0.9, 1.1))
    assert next(tl.batches(0))[0].shape == plain.shape
    # evaluation batches are never augmented
    ev = DeviceLoader(splits.eval_images, splits.eval_labels, splits.info, 32, cpu, False, 0, "crop-flip")
    assert ev.augment == "none"
    with pytest.raises(VitbenchError, match="valid: auto, none, crop, crop-flip"):
        first("cutmix")



def test_a_decoded_copy_spares_torchvision_until_the_files_change(workdir, tiny_mnist, monkeypatch):
    import os

    from vitbench import data

    reads = []
    real = data._read_tensors
    monkeypatch.setattr(data, "_read_tensors", lambda *a: reads.append(a) or real(*a))
    x1, y1 = data.load_tensors("mnist", tiny_mnist, train=True)
    x2, y2 = data.load_tensors("mnist", tiny_mnist, train=True)
    assert len(reads) == 1 and (tiny_mnist / "MNIST" / "raw" / "vitbench-decoded" / "train.pt").exists()
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x2.dtype == torch.uint8
    labels = tiny_mnist / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    blob = bytearray(labels.read_bytes())
    blob[-1] = (blob[-1] + 1) % 10  # one label changed, same size: the modification time tells
    labels.write_bytes(bytes(blob))
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    _, y3 = data.load_tensors("mnist", tiny_mnist, train=True)
    assert len(reads) == 2 and y3[-1] == (y1[-1] + 1) % 10



def test_a_dataset_carries_its_class_names_and_format():
    """What a dataset is lives in its entry (vitbench.data.DATASETS): class names for the plots, the IDX format."""
    from vitbench.data import DATASETS

    assert DATASETS["cifar10"].class_names[:3] == ["plane", "car", "bird"]
    assert DATASETS["fashion-mnist"].class_names[0] == "T-shirt" and DATASETS["mnist"].class_names[9] == "9"
    assert [n for n, d in DATASETS.items() if d.idx_files] == ["mnist", "fashion-mnist"]

