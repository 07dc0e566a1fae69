"""Peer libraries' models, measured beside vitbench's variants: timm's VisionTransformer at the same dimensions
(``timm``), or any model ``timm.create_model`` builds (``timm:NAME``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import lru_cache

from torch import nn

from vitbench import names
from vitbench.config import ViTConfig
from vitbench.errors import VitbenchError
from vitbench.names import is_timm


def timm_vit(c: ViTConfig) -> nn.Module:
    """timm's VisionTransformer at vitbench's dimensions (``--peers timm``)."""
    VisionTransformer = _timm().models.vision_transformer.VisionTransformer
    return VisionTransformer(
        img_size=c.image_size, patch_size=c.patch_size, in_chans=c.in_chans, num_classes=c.num_classes,
        embed_dim=c.dim, depth=c.depth, num_heads=c.heads, mlp_ratio=c.mlp_dim / c.dim, qkv_bias=c.qkv_bias,
        class_token=c.pool == "cls", global_pool="token" if c.pool == "cls" else "avg",
    )


def timm_named(name: str) -> Callable[[ViTConfig], nn.Module]:
    """Any model ``timm.create_model`` builds (``--peers timm:resnet50``), at the preset's image size, patch size,
    channels and classes, with random weights: a reference beside the ViTs, ViT or not."""
    timm = _timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        raise VitbenchError(f"timm has no model {name!r}{'; e.g. ' + ', '.join(close) if close else ''}")
    return lambda c: timm_create(name, c)[0]


def timm_create(name: str, c: ViTConfig) -> tuple[nn.Module, tuple[str, ...]]:
    """timm's model ``name`` and what its run records of TIMM_SHAPE: a ViT cuts the dataset's images into the preset's
    patches (timm's own 16 px would not tile 28-px MNIST: it would see one patch); a CNN takes no patch size."""
    import timm

    kwargs = dict(pretrained=False, num_classes=c.num_classes, in_chans=c.in_chans)
    with contextlib.suppress(TypeError):  # a model without a patch size of its own
        return timm.create_model(name, img_size=c.image_size, patch_size=c.patch_size, **kwargs), TIMM_SHAPE
    with contextlib.suppress(TypeError):  # nor an image size (a CNN)
        return timm.create_model(name, img_size=c.image_size, **kwargs), TIMM_SHAPE[:3]
    return timm.create_model(name, **kwargs), TIMM_SHAPE[:3]


def _timm():
    from vitbench.errors import require_torchvision

    require_torchvision()  # timm imports it
    try:
        import timm
        import timm.models.vision_transformer  # noqa: F401
    except ImportError:
        raise VitbenchError("--peers timm needs timm: pip install 'vitbench[peers]'") from None
    return timm


PEER_BUILDERS: dict[str, Callable[[ViTConfig], nn.Module]] = {"timm": timm_vit}  # a peer: ViTConfig -> module


def peer_builder(peer: str) -> Callable[[ViTConfig], nn.Module]:
    if peer in PEER_BUILDERS:
        return PEER_BUILDERS[peer]
    if is_timm(peer) and peer[5:]:
        return timm_named(peer[5:])
    raise VitbenchError(f"unknown peer {peer!r}; valid: {', '.join(names.PEERS)}, or timm:MODEL (any timm model name)")


TIMM_SHAPE = ("image_size", "in_chans", "num_classes", "patch_size")  # what a timm:NAME variant may take of ours


def model_for(variant: str, model_cfg: ViTConfig) -> nn.Module | None:
    """The model a variant names when it is not vitbench's ViT (``timm:NAME``, at the dataset's image size, channels
    and classes, and the preset's patch size); None for vitbench's own."""
    return peer_builder(variant)(model_cfg) if is_timm(variant) else None


@lru_cache(maxsize=8)
def check_timm(variant: str, model_cfg: ViTConfig) -> tuple[str, ...]:
    """What a ``timm:NAME`` variant's run records of TIMM_SHAPE (the patch size where it took one), where it builds
    and takes the dataset's images -- tried on the meta device, no memory spent -- else one line naming why."""
    import torch

    peer_builder(variant)  # an unknown name: its own line
    c = model_cfg
    try:
        with torch.device("meta"):
            model, taken = timm_create(variant[5:], c)
            model(torch.empty(2, c.in_chans, c.image_size, c.image_size))
    except Exception as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise VitbenchError(f"{variant} does not take {c.image_size}x{c.image_size}x{c.in_chans} images with "
                            f"{c.num_classes} classes: {why}") from None
    return taken
