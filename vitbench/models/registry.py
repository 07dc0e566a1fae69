"""Named variants and size presets; ``create_model`` lets unset (None) overrides fall through."""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import nn

from vitbench.config import ViTConfig
from vitbench.errors import VitbenchError
from vitbench.models.vit import ViT, check_parts


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    parts: dict  # attention, patchify, pos_embed, pool, norm


VARIANTS: dict[str, Variant] = {}

# Sizes of the classic tutorials; a run on a dataset picks its preset unless told otherwise.
PRESETS: dict[str, dict] = {
    "mnist": dict(image_size=28, in_chans=1, num_classes=10, patch_size=7, dim=64, depth=4, heads=4,
                  mlp_dim=128),
    "cifar10": dict(image_size=32, in_chans=3, num_classes=10, patch_size=4, dim=48, depth=4, heads=4,
                    mlp_dim=192),
    # timm's vit_tiny_patch16_224 and vit_small_patch16_224: sizes where data-parallel scaling means something
    "vit-ti16": dict(image_size=224, in_chans=3, num_classes=1000, patch_size=16, dim=192, depth=12, heads=3,
                     mlp_dim=768),
    "vit-s16": dict(image_size=224, in_chans=3, num_classes=1000, patch_size=16, dim=384, depth=12, heads=6,
                    mlp_dim=1536),
    # timm's vit_base_patch16_224 (ViT-B/16): the size most ViT papers and benchmarks report
    "vit-b16": dict(image_size=224, in_chans=3, num_classes=1000, patch_size=16, dim=768, depth=12, heads=12,
                    mlp_dim=3072),
}

MODEL_FIELDS = tuple(f.name for f in fields(ViTConfig))


def register_variant(name: str, description: str, **parts: str) -> None:
    VARIANTS[name] = Variant(name, description, parts)


register_variant("naive-msa", "from-scratch notebook: loop attention, loop patchify, sinusoidal positions",
                 attention="naive", patchify="loop", pos_embed="sinusoidal", pool="cls", norm="pre")
register_variant("vectorized-msa", "the same notebook vectorized: batched-matmul attention, unfold patchify",
                 attention="vectorized", patchify="unfold", pos_embed="sinusoidal", pool="cls", norm="pre")
register_variant("torch-mha", "nn.MultiheadAttention notebook: Conv2d patchify, learned positions",
                 attention="torch-mha", patchify="conv", pos_embed="learned", pool="cls", norm="pre")
register_variant("sdpa", "fused scaled_dot_product_attention, Conv2d patchify, learned positions",
                 attention="sdpa", patchify="conv", pos_embed="learned", pool="cls", norm="pre")
register_variant("simple-vit", "'Better plain ViT baselines': SDPA, 2-D sin-cos positions, mean pooling",
                 attention="sdpa", patchify="conv", pos_embed="sincos2d", pool="mean", norm="pre")


def list_variants() -> list[str]:
    return sorted(VARIANTS)


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise VitbenchError(f"unknown variant {name!r}; valid: {', '.join(list_variants())}")
    return VARIANTS[name]


def get_preset(name: str) -> dict:
    """A size preset's dimensions; an unknown name is one line listing the valid ones."""
    if name not in PRESETS:
        raise VitbenchError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


def resolve_config(variant: str, preset: str | None = None, **overrides) -> ViTConfig:
    """The variant's parts, then the preset's sizes, then every override that is not None."""
    sizes = get_preset(preset or "mnist")
    unknown = set(overrides) - set(MODEL_FIELDS)
    if unknown:
        raise VitbenchError(f"unknown model option(s) {sorted(unknown)}; valid: {', '.join(MODEL_FIELDS)}")
    kwargs = {**get_variant(variant).parts, **sizes}
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return check_parts(ViTConfig(**kwargs))


def create_model(variant: str, preset: str | None = None, **overrides) -> nn.Module:
    """Build a named variant; ``create_model("sdpa", attention="naive", dim=None)`` keeps dim."""
    return ViT(resolve_config(variant, preset, **overrides))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
