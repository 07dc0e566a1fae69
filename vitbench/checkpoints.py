"""Checkpoints and the signals that stop a run between two steps: a checkpoint is written with its SHA-256 so that
a kill at any instant leaves a resumable pair, verified before it is loaded, and Ctrl-C / SIGTERM are deferred to
a point where the checkpoint holds a whole step."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import signal
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from vitbench.errors import VitbenchError, write_error

if TYPE_CHECKING:
    from vitbench.train import Trainer


def checksum_path(path: Path) -> Path:
    """Beside every checkpoint: its SHA-256 in ``sha256sum`` format (``sha256sum -c last.pt.sha256`` checks it)."""
    return path.with_name(path.name + ".sha256")


def save_checkpoint(state: dict, path: Path) -> None:
    """Atomic, with its checksum, so that a kill at any instant leaves a resumable pair: both are written beside
    as ``.tmp`` files, then the checksum and then the checkpoint are renamed over the old ones. Killed between the
    two renames, the new checksum names the ``.tmp`` checkpoint, and loading completes the save
    (``complete_interrupted_save``). A full disk is one line saying so, and no partial file is left."""
    path, sums = Path(path), checksum_path(Path(path))
    tmp, sums_tmp = path.with_name(path.name + ".tmp"), sums.with_name(sums.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()  # torch.save on a full disk raises a RuntimeError that does not say so
        torch.save(state, buffer)
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        sums_tmp.write_text(f"{hashlib.sha256(buffer.getbuffer()).hexdigest()}  {path.name}\n")
        os.replace(sums_tmp, sums)
        os.replace(tmp, path)
    except OSError as e:
        for t in (tmp, sums_tmp):
            with contextlib.suppress(OSError):
                t.unlink(missing_ok=True)
        raise write_error(path, e, "checkpoint") from None


def recorded_sum(path: Path) -> str:
    sums = checksum_path(Path(path))
    return (sums.read_text().split() or [""])[0] if sums.exists() else ""


def complete_interrupted_save(path: Path) -> None:
    """A save killed between its two renames left the new checksum beside the old checkpoint and the new one
    as ``.tmp``: finish it, so the new pair is what loads (the old checkpoint no longer matches anything)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists() and (want := recorded_sum(path)):
        if (not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != want) and \
                hashlib.sha256(tmp.read_bytes()).hexdigest() == want:
            os.replace(tmp, path)


def verify_checkpoint(path: Path, data: bytes) -> None:
    """A checkpoint whose bytes (``data``) are not the ones written (a bad disk, a cut download) is refused."""
    sums = checksum_path(Path(path))
    if not sums.exists():
        raise VitbenchError(f"checkpoint {path} has no checksum ({sums.name} is missing): it cannot be trusted")
    recorded = recorded_sum(path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        raise VitbenchError(f"checkpoint {path} is corrupt: its SHA-256 is {actual[:12]}..., {sums.name} recorded "
                            f"{recorded[:12] or 'nothing'}...; nothing was loaded")


def load_checkpoint(path: Path) -> dict:
    """The checkpoint, read once: its bytes are checked against the checksum beside it, then loaded."""
    complete_interrupted_save(path)
    if not Path(path).exists():
        raise VitbenchError(f"no checkpoint at {path}")
    data = Path(path).read_bytes()
    verify_checkpoint(path, data)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise VitbenchError(f"could not load checkpoint {path}: {str(e).splitlines()[0] if str(e) else e}") from None


def state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """What a model's state is: its parameters, then its buffers."""
    return [*model.parameters(), *model.buffers()]


def trainer_state(trainer: Trainer, position: dict) -> dict:
    """Everything a resumed run needs: weights, optimizer, schedule, RNGs, configs, where it stood, the EMA."""
    cuda = trainer.device.type == "cuda"
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if cuda else [],
                "python": list(random.getstate()[1])},
        "train_config": asdict(trainer.cfg),
        "model_config": trainer.model_cfg.to_dict(),
        "position": position,
        **({"ema": trainer.ema} if trainer.ema else {}),
    }


def restore_trainer(trainer: Trainer, ckpt: dict) -> None:
    """``trainer`` as ``ckpt`` left it, in place: a captured graph keeps pointing at the same tensors."""
    model, optimizer = trainer.model, trainer.optimizer
    sd, live = ckpt["model"], dict(model.named_buffers())
    names = [n for n, _ in model.named_parameters()] + list(live)
    if missing := [n for n in names if n not in sd and n.split(".")[-1] != "pos"]:
        raise VitbenchError(f"checkpoint does not match the model: missing {missing[:3]}")
    with torch.no_grad():
        for t, n in zip(state_tensors(model), names, strict=True):
            t.copy_(sd[n] if n in sd else live[n])
    if trainer.use_graph:  # lr and step stay device tensors, filled in place
        for group, saved in zip(optimizer.param_groups, ckpt["optimizer"]["param_groups"], strict=True):
            group["lr"].fill_(float(saved["lr"]))
        # warm_up ran first, so every parameter's state exists and the graph points at it
        by_index = dict(enumerate(p for g in optimizer.param_groups for p in g["params"]))
        for idx, saved in ckpt["optimizer"]["state"].items():
            for k, v in saved.items():
                optimizer.state[by_index[int(idx)]][k].copy_(v)
    else:
        optimizer.load_state_dict(ckpt["optimizer"])
    trainer.scheduler.load_state_dict(ckpt["scheduler"])
    with torch.no_grad():
        for e, saved in zip(trainer.ema, ckpt.get("ema", []), strict=True):
            e.copy_(saved)
    torch.set_rng_state(ckpt["rng"]["torch"])
    if trainer.device.type == "cuda" and ckpt["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    random.setstate((3, tuple(ckpt["rng"]["python"]), None))


class DeferredSignals:
    """SIGINT / SIGTERM set a flag that ``check`` turns into KeyboardInterrupt at a safe point, so a
    checkpoint never holds a half-applied optimizer step. A second Ctrl-C interrupts at once, unless
    ``escalate`` is off (a data-parallel rank: its launcher kills it if it does not stop in time)."""

    def __init__(self, escalate: bool = True) -> None:
        self.received: int | None = None
        self.escalate = escalate
        self.previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None and self.escalate:
            raise KeyboardInterrupt(f"signal {signum}")
        self.received = signum

    def check(self) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"signal {self.received}")

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
