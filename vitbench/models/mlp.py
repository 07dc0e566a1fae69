"""Two implementations of a block's MLP: fc1 -> GELU (erf, ``nn.GELU``'s) -> fc2, dropout after each.

Both hold the same parameters (``fc1``, ``fc2``), so a state_dict from one loads into the other, and compute the
same function; only speed and memory differ.

``torch``: ``nn.Linear``, ``nn.GELU``, ``nn.Linear``, as timm and the tutorials write it. Compiled, inductor
keeps fc1's output for the backward pass and recomputes the GELU there, in a kernel of its own, then sums fc1's
bias gradient in another that recomputes the GELU's derivative: at ViT-B/16 a visible share of the step
(results/real_sizes.md).

``triton``: fc1 as one custom operator whose forward is cuBLAS's matmul with its bias (as ``nn.Linear``'s) and our
GELU kernel, keeping the GELU's input and output (fc2 needs the output for its weight gradient: nothing is
recomputed), and whose backward is one kernel for the GELU's derivative that also sums the bias gradient (per
block of rows, added up after), then cuBLAS's matmuls for the input and weight gradients. The kernels are
Triton's; on the CPU they run in Triton's interpreter (``TRITON_INTERPRET=1``, as the tests set), slowly.
"""

from __future__ import annotations

import torch
from torch import nn

from vitbench.models.triton_limits import kernels_unavailable


class MLP(nn.Module):
    """fc1 -> GELU -> fc2, ``nn`` modules throughout (timm's ``Mlp``)."""

    computes = "fc2(gelu(fc1(x))), nn.GELU's erf form"  # implementations of one function are tested against each other
    reads_weights: tuple[str, ...] = ()  # layers read as tensors rather than called (see vitbench.train)

    @classmethod
    def unavailable(cls, device: torch.device) -> str | None:
        """Why this implementation cannot run there (None: it can)."""
        return None

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TritonMLP(MLP):
    """fc1 and its GELU as one operator of ours (cuBLAS matmuls, Triton kernels for the GELU and its backward)."""

    reads_weights = ("fc1",)  # fp8 keeps it as it is: the operator reads its weight and bias

    @classmethod
    def unavailable(cls, device: torch.device) -> str | None:
        return kernels_unavailable(device, "fused_mlp", "mlp 'triton'")

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(dim, hidden, dropout)  # self.act stays unused: the same modules as nn's MLP
        # Here, not at the first forward: a FLOP counter made before then would miss the operators' formulas.
        from vitbench.models import fused_mlp  # noqa: F401 -- imports triton, registers the operators

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        from vitbench.models.fused_mlp import linear_gelu

        return self.drop(self.fc2(self.drop(linear_gelu(x, self.fc1.weight, self.fc1.bias))))


MLPS: dict[str, type[MLP]] = {
    "torch": MLP,
    "triton": TritonMLP,
}
