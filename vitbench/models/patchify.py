"""Three implementations of one patch embedding: cut (C, p, p) patches, flatten, project to dim.

All hold ``weight`` (dim, C, p, p) and ``bias`` (dim,) -- a Conv2d's parameters -- so state_dicts
are interchangeable and the outputs agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    batched_twin: str | None = None  # for the loop: the implementation of the same function evaluations run through
    computes = "linear patch embedding"  # implementations that compute the same function are tested against each other

    def __init__(self, image_size: int, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.num_patches = self.grid**2
        self.weight = nn.Parameter(torch.empty(dim, in_chans, patch_size, patch_size))
        self.bias = nn.Parameter(torch.empty(dim))
        # The initialisation of nn.Conv2d (and of nn.Linear over the flattened patch).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(in_chans * patch_size * patch_size)
        nn.init.uniform_(self.bias, -bound, bound)


class ConvPatchEmbed(PatchEmbed):
    """A Conv2d with kernel = stride = patch size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, N, D)
        x = F.conv2d(x, self.weight, self.bias, stride=self.patch_size)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # NCHW -> NLC


class LoopPatchEmbed(PatchEmbed):
    """The tutorial way: Python loops cut every patch of every image, then a Linear."""

    batched_twin = "unfold"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, N, D)
        B, C, _, _ = x.shape
        p, g = self.patch_size, self.grid
        patches = torch.zeros(B, g * g, C * p * p, dtype=x.dtype, device=x.device)
        for idx, image in enumerate(x):
            for i in range(g):
                for j in range(g):
                    patch = image[:, i * p : (i + 1) * p, j * p : (j + 1) * p]  # (C, p, p)
                    patches[idx, i * g + j] = patch.flatten()
        return F.linear(patches, self.weight.flatten(1), self.bias)


class UnfoldPatchEmbed(PatchEmbed):
    """Tensor unfold/reshape into patches, then a Linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, N, D)
        B, C, _, _ = x.shape
        p = self.patch_size
        x = x.unfold(2, p, p).unfold(3, p, p)  # (B, C, H/p, W/p, p, p)
        x = x.permute(0, 2, 3, 1, 4, 5).reshape(B, -1, C * p * p)  # (B, N, C*p*p)
        return F.linear(x, self.weight.flatten(1), self.bias)


PATCHIFY: dict[str, type[PatchEmbed]] = {
    "conv": ConvPatchEmbed,
    "loop": LoopPatchEmbed,
    "unfold": UnfoldPatchEmbed,
}
