"""The Vision Transformer, assembled from interchangeable parts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from vitbench import names
from vitbench.errors import VitbenchError, check_field_types
from vitbench.models.attention import ATTENTION
from vitbench.models.mlp import MLPS
from vitbench.models.patchify import PATCHIFY
from vitbench.models.positions import POS_EMBED, PositionEmbedding

POOL = names.POOL
NORM = names.NORM


def _choice(field: str, value: str, valid) -> None:
    if value not in valid:
        raise VitbenchError(f"unknown {field} {value!r}; valid: {', '.join(valid)}")


@dataclass(frozen=True)
class ViTConfig:
    attention: str = "sdpa"  # vitbench.names.ATTENTION -- same function, other cost
    patchify: str = "conv"  # vitbench.names.PATCHIFY -- same function, other cost
    mlp: str = "torch"  # vitbench.names.MLP -- same function, other cost
    pos_embed: str = "learned"  # learned | sinusoidal | sincos2d | none
    pool: str = "cls"  # cls: classify the CLS token; mean: average the patch tokens
    norm: str = "pre"  # pre: LayerNorm before attention/MLP; post: after the residual add
    image_size: int = 28  # pixels, square images
    in_chans: int = 1
    num_classes: int = 10
    patch_size: int = 7  # pixels; must divide image_size
    dim: int = 64  # token width
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads; must divide dim
    mlp_dim: int = 128  # hidden width of each block's MLP
    dropout: float = 0.0  # on attention weights, projections and the MLP
    patch_drop: float = 0.0  # training only: this fraction of each image's patch tokens dropped at random
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)
        _choice("attention", self.attention, ATTENTION)
        _choice("patchify", self.patchify, PATCHIFY)
        _choice("mlp", self.mlp, MLPS)
        _choice("pos_embed", self.pos_embed, POS_EMBED)
        _choice("pool", self.pool, POOL)
        _choice("norm", self.norm, NORM)
        for name in ("image_size", "in_chans", "num_classes", "patch_size", "dim", "depth", "heads",
                     "mlp_dim"):
            if getattr(self, name) < 1:
                raise VitbenchError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise VitbenchError(
                f"patch size {self.patch_size} does not divide image size {self.image_size}; "
                f"valid patch sizes: {', '.join(str(p) for p in range(1, self.image_size + 1) if self.image_size % p == 0)}"
            )
        if self.dim % self.heads:
            raise VitbenchError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.pos_embed == "sincos2d" and self.dim % 4:
            raise VitbenchError(f"pos_embed 'sincos2d' needs dim divisible by 4, got dim {self.dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise VitbenchError(f"dropout must be in [0, 1), got {self.dropout}")
        impl = ATTENTION[self.attention]
        if not 0.0 <= self.patch_drop < 1.0:  # so at least one patch is kept
            raise VitbenchError(f"patch_drop must be in [0, 1), got {self.patch_drop}")
        if self.dropout and not impl.attention_dropout:
            raise VitbenchError(f"attention {self.attention!r} has no dropout on the attention weights; "
                                f"use dropout 0 or another attention")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def kept_patches(self) -> int:
        """The patch tokens a training forward keeps (all of them in evaluation)."""
        return self.num_patches - int(self.num_patches * self.patch_drop)

    @property
    def tokens(self) -> int:
        """The sequence length the attention sees: the patches, and the CLS token with CLS pooling."""
        return self.num_patches + (self.pool == "cls")

    def to_dict(self) -> dict:
        return asdict(self)

    def unavailable(self, device: torch.device, training: bool = True) -> str | None:
        """Why a model of these parts cannot run on ``device`` (train there, where ``training``); None: it can."""
        return ATTENTION[self.attention].unavailable(device, training) or MLPS[self.mlp].unavailable(device)


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.pre_norm = cfg.norm == "pre"
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = ATTENTION[cfg.attention](cfg.dim, cfg.heads, cfg.qkv_bias, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = MLPS[cfg.mlp](cfg.dim, cfg.mlp_dim, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class ViT(nn.Module):
    """(B, C, H, W) floats -> (B, num_classes) logits."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PATCHIFY[cfg.patchify](cfg.image_size, cfg.patch_size, cfg.in_chans, cfg.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.pool == "cls" else None
        self.pos_embed = PositionEmbedding(cfg.pos_embed, self.patch_embed.grid, cfg.dim, cfg.pool == "cls")
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.Sequential(*(Block(cfg) for _ in range(cfg.depth)))
        # Post-norm blocks already end in a LayerNorm.
        self.norm = nn.LayerNorm(cfg.dim) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.dim, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, T, D)
        B, C, H, W = x.shape
        cfg = self.cfg
        if (C, H, W) != (cfg.in_chans, cfg.image_size, cfg.image_size):
            raise VitbenchError(
                f"input of shape (C, H, W) = {(C, H, W)} does not match the model's "
                f"{(cfg.in_chans, cfg.image_size, cfg.image_size)}"
            )
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)  # (B, 1+N, D)
        x = self.drop(self.pos_embed(x))
        if self.training and cfg.kept_patches < cfg.num_patches:
            x = self.drop_patches(x)
        return self.norm(self.blocks(x))

    def drop_patches(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T - dropped, D)
        """PatchDropout (Liu et al., 2022; timm's ``patch_drop_rate``): each image keeps a random
        ``kept_patches`` of its patch tokens, positions already added; the CLS token always stays."""
        B, _, D = x.shape
        prefix = 1 if self.cls_token is not None else 0
        keep = torch.rand(B, self.cfg.num_patches, device=x.device).argsort(dim=1)[:, : self.cfg.kept_patches]
        patches = x[:, prefix:].gather(1, keep.unsqueeze(-1).expand(-1, -1, D))
        return torch.cat((x[:, :prefix], patches), dim=1)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, classes)
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=1)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
