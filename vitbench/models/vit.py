"""The Vision Transformer, assembled from interchangeable parts."""

from __future__ import annotations

import torch
from torch import nn

from vitbench.config import ViTConfig
from vitbench.errors import VitbenchError
from vitbench.models.attention import ATTENTION
from vitbench.models.mlp import MLPS
from vitbench.models.patchify import PATCHIFY
from vitbench.models.positions import PositionEmbedding


def unavailable(cfg: ViTConfig, device: torch.device, training: bool = True) -> str | None:
    """Why a model of these parts cannot run on ``device`` (train there, where ``training``); None: it can."""
    return ATTENTION[cfg.attention].unavailable(device, training) or MLPS[cfg.mlp].unavailable(device)


def check_parts(cfg: ViTConfig) -> ViTConfig:
    """The parts are registered, and what they refuse is said before a run starts."""
    for part, registry in (("attention", ATTENTION), ("patchify", PATCHIFY), ("mlp", MLPS)):
        if getattr(cfg, part) not in registry:
            raise VitbenchError(f"unknown {part} {getattr(cfg, part)!r}; valid: {', '.join(registry)}")
    if cfg.dropout and not ATTENTION[cfg.attention].attention_dropout:
        raise VitbenchError(f"attention {cfg.attention!r} has no dropout on the attention weights; "
                            f"use dropout 0 or another attention")
    return cfg


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
        self.cfg = check_parts(cfg)
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
