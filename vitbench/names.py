"""Every name a user can give -- parts, datasets, presets, peers -- in one torch-free place. The CLI's choices
and help are made from these tuples. The registries' names are read from the registries' own source (the keys of
the dict each module registers its implementations in) without importing them, so adding an implementation is a
class and its registration line in one file, and ``vitbench --help`` still imports no torch."""

from __future__ import annotations

import ast
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def called(module: str, function: str) -> tuple[str, ...]:
    """The first argument (a string) of each top-level call of ``function`` in ``module``, in order."""
    calls = (n.value for n in ast.parse((_PACKAGE / module).read_text()).body if isinstance(n, ast.Expr))
    return tuple(c.args[0].value for c in calls if isinstance(c, ast.Call) and getattr(c.func, "id", "") == function)


def registered(module: str, registry: str) -> tuple[str, ...]:
    """The string keys of the dict literal ``registry`` at the top of ``module`` (a file of this package), in order."""
    for node in ast.parse((_PACKAGE / module).read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [None])[0]
        if getattr(target, "id", None) == registry and isinstance(node.value, ast.Dict):
            return tuple(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    raise LookupError(f"vitbench/{module} registers no {registry} dict")


VARIANTS = called("models/registry.py", "register_variant")
ATTENTION = registered("models/attention.py", "ATTENTION")
PATCHIFY = registered("models/patchify.py", "PATCHIFY")
MLP = registered("models/mlp.py", "MLPS")
POS_EMBED = ("learned", "sinusoidal", "sincos2d", "none")
POOL = ("cls", "mean")
NORM = ("pre", "post")
DATASETS = registered("data.py", "DATASETS")  # torchvision's
DATASET_FORMS = ("synthetic", "imagefolder:PATH")  # vitbench.images
PRESETS = registered("models/registry.py", "PRESETS")
PEERS = registered("peers.py", "PEER_BUILDERS")
AUGMENTS = ("none", "crop", "crop-flip", "affine")
# fp32; bf16 / fp16 autocast (fp16 with a gradient scaler); fp8: the Linear layers through torchao's float8
# training (dynamic scaling), bf16 autocast around them -- vitbench.compute.AMP_DTYPES
PRECISIONS = ("fp32", "bf16", "fp16", "fp8")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


def is_timm(variant: str) -> bool:
    """``timm:NAME``: timm's model as ``timm.create_model`` builds it, trained as vitbench trains its own."""
    return variant.startswith("timm:")


def choices(names: tuple[str, ...]) -> str:
    return " | ".join(names)
