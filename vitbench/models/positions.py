"""Position embeddings, added to the (B, T, D) token sequence (T includes the CLS token if any)."""

from __future__ import annotations

import torch
from torch import nn

from vitbench import names


def sinusoidal_1d(tokens: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(T, D) fixed table of "Attention is all you need": sin on even channels, cos on odd."""
    pos = torch.arange(tokens, dtype=torch.float64)[:, None]  # (T, 1)
    freq = temperature ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (D/2,)
    table = torch.zeros(tokens, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table.float()


def sincos_2d(grid: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(grid*grid, D) fixed 2-D table of "Better plain ViT baselines" (dim divisible by 4)."""
    y, x = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4 - 1 or 1))
    y = y.flatten()[:, None] * omega[None, :]  # (N, D/4)
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).float()  # (N, D)


class PositionEmbedding(nn.Module):
    """kind: ``learned`` | ``sinusoidal`` | ``sincos2d`` | ``none``.

    Fixed tables are non-persistent buffers: they are not in the state_dict (nothing to learn).
    """

    def __init__(self, kind: str, grid: int, dim: int, cls_token: bool) -> None:
        super().__init__()
        self.kind = kind
        tokens = grid * grid + int(cls_token)
        if kind == "learned":
            self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        elif kind == "sinusoidal":
            self.register_buffer("pos", sinusoidal_1d(tokens, dim)[None], persistent=False)
        elif kind == "sincos2d":
            table = sincos_2d(grid, dim)
            if cls_token:  # the CLS token gets no position, as it has none in the image
                table = torch.cat((torch.zeros(1, dim), table))
            self.register_buffer("pos", table[None], persistent=False)
        elif kind == "none":
            self.pos = None
        else:
            raise ValueError(f"unknown position embedding {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return x if self.pos is None else x + self.pos.to(x.dtype)


POS_EMBED = names.POS_EMBED
