"""Evaluation: loss and accuracy over the evaluation set in its fixed order (of the moving average of the weights
with --ema; through a batched twin for the naive loop parts), and inference throughput."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from vitbench.compute import inference, naive_parts
from vitbench.config import ViTConfig
from vitbench.models import ViT
from vitbench.models.attention import ATTENTION
from vitbench.models.patchify import PATCHIFY
from vitbench.timing import synchronize, time_steps

if TYPE_CHECKING:
    from vitbench.train import Trainer


def load_ema(model: nn.Module, ema: list[torch.Tensor]) -> None:
    """Put ``ema`` (a checkpoint's "ema": the moving average of the parameters, or any tensors in
    ``parameters()`` order) into ``model``'s parameters, in place; nothing without one."""
    if ema:
        with torch.no_grad():
            torch._foreach_copy_(list(model.parameters()), ema)


@contextmanager
def ema_weights(trainer: Trainer) -> Iterator[None]:
    """The model holds the moving average of its weights inside (with --ema; else as it is), its own after."""
    live = [p.detach().clone() for p in trainer.model.parameters()] if trainer.ema else []
    load_ema(trainer.model, trainer.ema)  # in place: a captured graph keeps pointing at the same tensors
    try:
        yield
    finally:
        load_ema(trainer.model, live)


def evaluation_twin(model: nn.Module, model_cfg: ViTConfig | None, device: torch.device) -> nn.Module:
    """The model that computes evaluations: the model itself, or for the from-scratch loop parts a batched twin
    holding the same weights (vectorized attention, unfold patchify: the same function, proven in
    tests/unit/test_models.py), so that a bounded naive run does not wait minutes in evaluation. Training and the
    inference timing run the loops themselves."""
    if not naive_parts(model_cfg):
        return model
    m = model_cfg
    twin = ViT(replace(m, attention=ATTENTION[m.attention].batched_twin or m.attention,
                          patchify=PATCHIFY[m.patchify].batched_twin or m.patchify)).to(device)
    twin.load_state_dict(model.state_dict())
    return twin


def evaluate(trainer: Trainer, loader, labels: torch.Tensor, max_seconds: float | None = None
             ) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, predictions) over the evaluation set in its fixed order; with ``max_seconds``, over
    the first batches that fit in that time (at least one)."""
    with ema_weights(trainer), inference(trainer.cfg.precision):
        model = evaluation_twin(trainer.model, trainer.model_cfg, trainer.device)
        model.eval()
        loss_sum = torch.zeros((), device=trainer.device)
        preds = []
        t0 = time.perf_counter()
        for x, y in loader.batches():
            with trainer.autocast:
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            preds.append(logits.argmax(-1))
            if max_seconds is not None:
                synchronize(trainer.device)
                if time.perf_counter() - t0 > max_seconds:
                    break
        trainer.model.train()
        preds = torch.cat(preds)
        acc = (preds == labels[: len(preds)].to(preds.device)).float().mean().item()
        return loss_sum.item() / len(preds), acc, preds.cpu()


def infer_images_per_sec(trainer: Trainer, x: torch.Tensor, max_seconds: float = 10.0) -> float:
    """Images per second of the model's forward on the batch ``x`` (the median of 20 timed repeats)."""
    trainer.model.eval()

    def forward() -> None:
        with inference(trainer.cfg.precision), trainer.autocast:
            trainer.model(x)

    times = time_steps(forward, trainer.device, warmup=3, repeats=20, max_seconds=max_seconds)
    trainer.model.train()
    return len(x) / sorted(times)[len(times) // 2]


STOP_EVAL_SECONDS = 5.0  # a stopped run's validation pass: the whole set if it fits, else what fits


def eval_scope(n: int, total: int, eval_set: str) -> str:
    if n >= total:
        return f"{eval_set}: all {total:,} images"
    return f"{eval_set}: the first {n:,} of {total:,} images (a stopped run evaluates for {STOP_EVAL_SECONDS:g} s at most)"
