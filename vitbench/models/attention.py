"""Six implementations of one multi-head self-attention function.

Every class holds the same parameters -- a fused QKV projection ``qkv`` (dim -> 3*dim) and an output
projection ``proj`` (dim -> dim) -- so a state_dict from one loads into any other, and they compute
softmax(Q K^T / sqrt(d_head)) V per head, then ``proj``. Only speed and memory differ.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from vitbench.models.triton_limits import kernels_unavailable


class Attention(nn.Module):
    """Parameters and the reference math shared by all implementations.

    What an implementation cannot do, checked when a model or a run is set up: ``attention_dropout`` (dropout on
    the attention weights), ``cpu_backward`` (training on the CPU). ``counts_flops``: False where torch's FLOP
    counter cannot see inside (bench counts the batched-matmul twin).
    ``batched_twin``: for the from-scratch loops, the implementation of the same function that evaluations run
    through (and what makes a part "eager only": never compiled or captured, it stays the baseline).
    ``reads_weights``: its projections that it reads as tensors instead of calling (a layer swapped for another
    kind, FP8's, would not be used there). ``computes``: the function; implementations of the same one are tested
    against each other (tests/unit/test_models.py), so another function (cosine, linear attention) is its own group.
    """

    computes = "softmax(q k^T / sqrt(head_dim)) v, per head"
    reads_weights: tuple[str, ...] = ()
    attention_dropout = True
    cpu_backward = True
    counts_flops = True  # torch.utils.flop_counter sees its matmuls
    batched_twin: str | None = None

    @classmethod
    def unavailable(cls, device: torch.device, training: bool = True) -> str | None:
        """Why this implementation cannot run there (None: it can)."""
        return None

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = dropout  # dropout on the attention weights
        self.proj_drop = nn.Dropout(dropout)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim)  # (B, N, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, N, hd)
        return q, k, v

    @torch.no_grad()
    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, H, N, N) attention weights; the same for every implementation."""
        q, k, _ = self.split_heads(x)
        return (q @ k.transpose(-2, -1) * self.head_dim**-0.5).softmax(dim=-1)


class NaiveAttention(Attention):
    """The from-scratch tutorial version: Python loops over the samples and over the heads.

    Slow on purpose -- it is the baseline every other implementation is measured against.
    """

    batched_twin = "vectorized"  # the loops are the baseline: trained and timed as they are
    reads_weights = ("qkv",)  # cut into per-head maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D)
        D, hd = self.proj.in_features, self.head_dim
        # Each head's query, key and value maps: rows of the shared qkv projection, cut once per call as a
        # tutorial's per-head nn.Linear layers would hold them (not once per sample: that only adds work).
        w, b = self.qkv.weight, self.qkv.bias
        maps = []
        for h in range(self.heads):
            rows = [slice(part * D + h * hd, part * D + (h + 1) * hd) for part in range(3)]
            maps.append([(w[r], b[r] if b is not None else None) for r in rows])
        results = []
        for sequence in x:  # (N, D)
            head_outputs = []
            for (wq, bq), (wk, bk), (wv, bv) in maps:
                q, k, v = F.linear(sequence, wq, bq), F.linear(sequence, wk, bk), F.linear(sequence, wv, bv)
                scores = q @ k.T / math.sqrt(hd)  # (N, N)
                weights = F.dropout(torch.softmax(scores, dim=-1), self.attn_drop, self.training)
                head_outputs.append(weights @ v)  # (N, hd)
            results.append(torch.cat(head_outputs, dim=-1))  # (N, D)
        out = torch.stack(results)  # (B, N, D)
        return self.proj_drop(self.proj(out))


class VectorizedAttention(Attention):
    """All samples and heads at once with batched matmuls; the attention matrix is materialised."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D)
        B, N, D = x.shape
        q, k, v = self.split_heads(x)  # (B, H, N, hd)
        attn = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5  # (B, H, N, N)
        attn = F.dropout(attn.softmax(dim=-1), self.attn_drop, self.training)
        out = (attn @ v).transpose(1, 2).reshape(B, N, D)  # (B, N, H, hd) -> (B, N, D)
        return self.proj_drop(self.proj(out))


class SDPAAttention(Attention):
    """PyTorch's fused ``scaled_dot_product_attention`` (flash / memory-efficient kernels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D)
        B, N, D = x.shape
        q, k, v = self.split_heads(x)  # (B, H, N, hd)
        p = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, H, N, hd)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, D)))


class TorchMHAAttention(Attention):
    """``nn.MultiheadAttention``, its parameters stored under the shared names ``qkv`` / ``proj``.

    The module is built around the shared Linear layers' tensors, so there is one set of parameters
    and state_dicts are interchangeable with the other implementations.
    """

    reads_weights = ("qkv", "proj")  # nn.MultiheadAttention takes them as tensors

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__(dim, heads, qkv_bias, dropout)
        mha = nn.MultiheadAttention(dim, heads, dropout=dropout, bias=True, batch_first=True)
        # Point the MHA at the shared parameters instead of its own.
        del mha.in_proj_weight, mha.in_proj_bias
        mha.in_proj_weight = self.qkv.weight
        mha.in_proj_bias = self.qkv.bias if qkv_bias else None
        mha.out_proj = self.proj
        # Hidden from state_dict / parameters(): it only borrows tensors owned by qkv and proj.
        object.__setattr__(self, "mha", mha)

    def _apply(self, fn, recurse=True):  # keep the borrowed references valid after .to()/.double()
        out = super()._apply(fn, recurse)
        self.mha.in_proj_weight = self.qkv.weight
        self.mha.in_proj_bias = self.qkv.bias
        self.mha.out_proj = self.proj
        return out

    def train(self, mode: bool = True) -> TorchMHAAttention:
        self.mha.train(mode)
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D)
        out, _ = self.mha(x, x, x, need_weights=False)
        return self.proj_drop(out)


class FlexAttention(Attention):
    """PyTorch's FlexAttention (``torch.nn.attention.flex_attention``), compiled into its fused Triton kernel on
    CUDA. On the CPU torch has only its unfused reference, and no backward: there it evaluates, not trains.
    Its CUDA kernel takes heads of 16 dims or more: smaller heads are zero-padded to 16 (q.k and the kept
    columns of the output are unchanged; the scale stays 1/sqrt(head dim))."""

    attention_dropout = False
    cpu_backward = False
    counts_flops = False
    MIN_CUDA_HEAD_DIM = 16

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__(dim, heads, qkv_bias, dropout)
        _load_flex()  # here, not inside a compiled forward

    @classmethod
    def unavailable(cls, device: torch.device, training: bool = True) -> str | None:
        if device.type == "cpu" and training:
            return ("attention 'flex' cannot train on the CPU: torch's FlexAttention has no CPU backward; "
                    "use a CUDA GPU or another attention")
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D)
        B, N, D = x.shape
        q, k, v = self.split_heads(x)  # (B, H, N, hd)
        hd = self.head_dim
        if not x.is_cuda:
            out = _FLEX["cpu"](q, k, v)
        else:
            pad = max(0, self.MIN_CUDA_HEAD_DIM - hd)
            if pad:
                q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
            out = _FLEX["cuda"](q, k, v, scale=hd**-0.5)[..., :hd]  # (B, H, N, hd)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, D)))


_FLEX: dict = {}


def _load_flex() -> None:
    if _FLEX:
        return
    from torch.nn.attention.flex_attention import flex_attention

    def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # "called without torch.compile()": the CPU has no fused kernel
            warnings.simplefilter("ignore")
            return flex_attention(q, k, v)

    _FLEX.update(cpu=reference, cuda=torch.compile(flex_attention, dynamic=False))


class TritonAttention(Attention):
    """Our own fused Triton kernels (``vitbench.models.fused_attention``): they read q, k, v from the qkv
    projection and write the heads' output and qkv's gradient in place, with no copies around them; one program
    per (sample, head) up to 128 tokens, by blocks of tokens beyond (as FlashAttention-2 cuts them). On the CPU
    they run in Triton's interpreter (slow)."""

    attention_dropout = False
    counts_flops = False

    @classmethod
    def unavailable(cls, device: torch.device, training: bool = True) -> str | None:
        return kernels_unavailable(device, "fused_attention", "attention 'triton'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D)
        from vitbench.models.fused_attention import fused_attention  # imports triton

        return self.proj_drop(self.proj(fused_attention(self.qkv(x), self.heads)))


ATTENTION: dict[str, type[Attention]] = {
    "naive": NaiveAttention,
    "vectorized": VectorizedAttention,
    "torch-mha": TorchMHAAttention,
    "sdpa": SDPAAttention,
    "flex": FlexAttention,
    "triton": TritonAttention,
}
