"""Every name a user can give -- parts, datasets, presets, peers -- in one torch-free place. The CLI's choices
and help are made from these tuples; the modules that implement each name are checked against them
(tests/test_cli.py), so a name cannot be added in one place and forgotten in another."""

from __future__ import annotations

ATTENTION = ("naive", "vectorized", "torch-mha", "sdpa", "flex", "triton")  # vitbench.models.attention.ATTENTION
PATCHIFY = ("conv", "loop", "unfold")  # vitbench.models.patchify.PATCHIFY
POS_EMBED = ("learned", "sinusoidal", "sincos2d", "none")
POOL = ("cls", "mean")
NORM = ("pre", "post")
DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100")  # vitbench.data.DATASETS (torchvision's)
DATASET_FORMS = ("synthetic", "imagefolder:PATH")  # vitbench.images
PRESETS = ("mnist", "cifar10", "vit-ti16", "vit-s16", "vit-b16")  # vitbench.models.registry.PRESETS
PEERS = ("timm",)  # vitbench.bench
AUGMENTS = ("none", "crop", "crop-flip", "affine")
# fp32; bf16 / fp16 autocast (fp16 with a gradient scaler); fp8: the Linear layers through torchao's float8
# training (dynamic scaling), bf16 autocast around them -- vitbench.train.AMP_DTYPES
PRECISIONS = ("fp32", "bf16", "fp16", "fp8")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


def choices(names: tuple[str, ...]) -> str:
    return " | ".join(names)
