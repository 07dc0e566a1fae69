"""The training step: model, optimizer and schedule, precision, torch.compile, DDP and the whole-step CUDA graph;
and the run's result. The loop around the step is vitbench.loop; evaluation, vitbench.evaluation; checkpoints,
vitbench.checkpoints."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vitbench.checkpoints import state_tensors
from vitbench.compute import (
    AMP_DTYPES,
    NAIVE_REASON,
    autocast_to,
    compiled,
    compiles,
    count_compiled,
    naive_parts,
    precision_unavailable,
    to_float8,
)
from vitbench.conditions import Conditions
from vitbench.config import TrainConfig, ViTConfig
from vitbench.distributed import sum_over_ranks, world_size
from vitbench.errors import VitbenchError
from vitbench.models import ViT
from vitbench.timing import side_stream, synchronize


def ended(stopped_by: str, steps: int, planned_steps: int | None) -> str:
    """What ended a run, in the console's words: a schedule fitted to --time-budget that ran to its end is not a run
    the budget cut short."""
    if stopped_by == "time_budget" and planned_steps:
        left = planned_steps - steps
        return "its schedule fitted to --time-budget, complete" if left <= 0 else \
            f"stopped by time_budget {left:,} steps before its fitted end"
    return f"stopped by {stopped_by}"


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # per-epoch metrics
    best_val_acc: float = 0.0
    final_val_acc: float = 0.0
    train_seconds: float = 0.0
    warmup_seconds: float = 0.0  # compile, graph capture and warm-up steps, outside train_seconds
    infer_images_per_sec: float = 0.0
    peak_memory_mb: float = 0.0
    peak_memory_source: str = ""
    param_count: int = 0
    steps: int = 0
    batch_size: int = 0  # global batch
    stopped_by: str = "epochs"  # epochs | max_steps | time_budget | target_acc
    planned_steps: int | None = None  # --budget-mode fit: the steps the schedule was fitted to
    time_to_target: float | None = None  # --target-acc: training seconds until the evaluation set reached it
    steps_to_target: int | None = None
    fast_path: str = ""  # what the step ran as: eager / cuda_graph / compile, and why not
    eval_scope: str = ""  # what final_val_acc was measured on
    predictions: torch.Tensor | None = None  # (N_eval,) predicted classes of the final evaluation
    labels: torch.Tensor | None = None
    model: nn.Module | None = None  # the trained model
    conditions: Conditions = field(default_factory=Conditions)  # the CPU's load while training was timed
    profile: dict[str, float] = field(default_factory=dict)  # --profile: ms per step by kind (vitbench.profiling)
    profile_dir: str | None = None  # its trace.json and breakdown.csv

    def final_metrics(self) -> dict[str, float]:
        return {
            "best_val_acc": self.best_val_acc, "final_val_acc": self.final_val_acc,
            "train_seconds": self.train_seconds, "warmup_seconds": self.warmup_seconds,
            "infer_images_per_sec": self.infer_images_per_sec, "peak_memory_mb": self.peak_memory_mb,
            "param_count": float(self.param_count), "steps": float(self.steps),
            "images_seen": float(self.images_seen), "train_images_per_sec_mean": self.images_per_sec,
            **self.conditions.metrics(),
            **({"time_to_target": self.time_to_target, "steps_to_target": float(self.steps_to_target)}
               if self.time_to_target is not None else {}),
            **{f"train_prof_{k}_ms": v for k, v in self.profile.items()},
            **({"budget_planned_steps": float(self.planned_steps)} if self.planned_steps else {}),
        }

    @property
    def images_seen(self) -> int:
        return self.steps * self.batch_size

    @property
    def images_per_sec(self) -> float:
        """The run's training throughput: images seen over the timed training seconds (warm-up excluded)."""
        return self.images_seen / max(self.train_seconds, 1e-9)


class NonFiniteLoss(VitbenchError):
    def __init__(self, step: int, lr: float) -> None:
        self.step = step
        super().__init__(f"loss became NaN/inf at step {step} (lr {lr:g}); try a lower --lr")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, position tables and the CLS token (1-D or named so)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "pos_embed" in name or "cls_token" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak LR before optimizer step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def loss_and_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float,
                     amp: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's forward: the loss and how many of the batch the model got right (autocast to ``amp``)."""
    with autocast_to(x.device.type, amp):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    return loss, (logits.detach().argmax(-1) == y).sum()


@torch.no_grad()
def tally(stats: torch.Tensor, first_bad: torch.Tensor, step: torch.Tensor, loss: torch.Tensor,
          correct: torch.Tensor, n: int) -> None:
    """The step's loss and counts added on the device (no sync); the first non-finite step remembered."""
    stats += torch.stack((loss * n, correct.float(), torch.full_like(loss, n)))  # a fill, not a host copy: capturable
    bad = ~torch.isfinite(loss) & (first_bad < 0)
    first_bad.copy_(torch.where(bad, step, first_bad))
    step += 1


def graph_reason(cfg: TrainConfig, model_cfg: ViTConfig | None, device: torch.device, world: int) -> str:
    """Why the whole-step CUDA graph does not apply ('' when it does)."""
    if cfg.cuda_graph is False:
        return "off (--no-cuda-graph)"
    if device.type != "cuda":
        return "needs CUDA"
    if naive_parts(model_cfg):
        return NAIVE_REASON
    if world > 1:
        return "data-parallel steps run eagerly (DDP's all-reduce is not captured)"
    if cfg.precision == "fp16":
        return "off for fp16 (its gradient scaler's skip-or-step is not captured)"
    if cfg.compile and cfg.compile_mode in ("reduce-overhead", "max-autotune"):
        return f"off: --compile-mode {cfg.compile_mode} captures CUDA graphs of its own"
    return ""


def make_optimizer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int, device: torch.device, graph: bool):
    """AdamW (or Adam), its warm-up-then-decay schedule and the schedule's plan. Fused on CUDA; for a captured step
    the LR is a device tensor, so that the schedule changes it inside the graph."""
    extra = {"fused": True} if device.type == "cuda" else {}
    if graph:
        extra["capturable"] = True
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    groups = param_groups(model, cfg.weight_decay if cfg.optimizer == "adamw" else 0.0)
    optimizer = opt_cls(groups, lr=torch.tensor(cfg.lr, device=device) if graph else cfg.lr, **extra)
    plan = Plan(cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, plan.total, plan.warmup,
                                                                                 cfg.scheduler))
    return optimizer, scheduler, plan  # --budget-mode fit re-plans it once the step's time is known


@dataclass
class Plan:
    """The steps the schedule spans and warms up over; ``fit`` re-plans it to another total, warm-up in proportion."""

    total: int
    warmup: int

    def fit(self, total: int) -> None:
        self.warmup = round(self.warmup * total / max(self.total, 1))
        self.total = total


class Trainer:
    """Holds model, optimizer, schedule and device-side statistics; ``step`` never syncs the host."""

    def __init__(self, cfg: TrainConfig, model_cfg: ViTConfig | None, steps_per_epoch: int,
                 log: Callable[[str], None] = print, model: nn.Module | None = None,
                 device: torch.device | None = None) -> None:
        """``model`` (a peer such as timm's ViT) replaces the ViT that ``model_cfg`` would build; ``device``: the
        run's, resolved (``runner.run_context``), else ``cfg.device`` names one."""
        self.cfg, self.model_cfg, self.log = cfg, model_cfg, log
        self.device = device or torch.device(cfg.device)
        seed_everything(cfg.seed)
        self.model = (model if model is not None else ViT(model_cfg)).to(self.device)
        if why := precision_unavailable(cfg.precision, self.device):
            raise VitbenchError(why)
        self.fp8_layers = to_float8(self.model) if cfg.precision == "fp8" else 0
        self.world = world_size()
        self.step_model: nn.Module = self.model
        if self.world > 1:  # gradients averaged over the ranks, bucketed and overlapped with backward
            from torch.nn.parallel import DistributedDataParallel

            cuda = self.device.type == "cuda"
            self.step_model = DistributedDataParallel(self.model, device_ids=[self.device] if cuda else None)
        self.graph_reason = graph_reason(cfg, model_cfg, self.device, self.world)
        self.use_graph = self.graph_reason == ""
        self.optimizer, self.scheduler, self.plan = make_optimizer(self.model, cfg, steps_per_epoch, self.device,
                                                                   self.use_graph)
        self.use_compile = compiles(cfg.compile, model_cfg)
        if self.use_compile:
            what = model_cfg if model is None else (type(model).__qualname__, sum(p.numel() for p in model.parameters()))
            count_compiled(repr((what, cfg.precision, cfg.batch_size, cfg.compile_mode)))
        # Compiled: the loss and this step's counts fuse into the model's last kernels, the tally into one
        # more; a step of a small model is a chain of short kernels, so fewer of them is time saved.
        self.loss_and_correct = compiled(loss_and_correct, cfg.compile_mode) if self.use_compile else loss_and_correct
        self.tally = compiled(tally) if self.use_compile else tally
        self.amp = AMP_DTYPES[cfg.precision]
        self.autocast = autocast_to(self.device.type, self.amp)
        # fp16's gradients are scaled so that small ones survive; a step with inf/NaN gradients is skipped
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        self.stats = torch.zeros(3, device=self.device)  # sum of loss, correct, count since reset
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)  # first non-finite step
        self.step_count = torch.zeros((), dtype=torch.long, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_x = self.static_y = None
        # The moving average of the weights (--ema), updated inside the step (and its graph); evaluation and the
        # final model use it.
        self.ema = [p.detach().clone() for p in self.model.parameters()] if cfg.ema > 0 else []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, loss, backward, clip, optimizer step, statistics: device work only."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, correct = self.forward(x, y)
        self.backward(loss)
        self.update()
        self.tally(self.stats, self.first_bad, self.step_count, loss.detach(), correct, y.numel())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss_and_correct(self.step_model, x, y, self.cfg.label_smoothing, self.amp)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def update(self) -> None:
        """Clip, the optimizer's step (fp16: unless the gradients overflowed), the weights' moving average."""
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip, foreach=True)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, list(self.model.parameters()), 1.0 - self.cfg.ema)

    def run_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.graph is None:
            self.step(x, y)
        else:
            self.static_x.copy_(x, non_blocking=True)
            self.static_y.copy_(y, non_blocking=True)
            self.graph.replay()
        self.scheduler.step()

    def warm_up(self, x: torch.Tensor, y: torch.Tensor, steps: int = 3) -> float:
        """Compile / capture / warm the kernels on a real batch, then put every parameter, optimizer
        state and the RNG back as they were: the training that follows starts from step 0."""
        synchronize(self.device)
        t0 = time.perf_counter()
        initial = [t.detach().clone() for t in state_tensors(self.model)]
        rng = torch.get_rng_state(), (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)
        stream = side_stream(self.device) if self.use_graph else None
        with torch.cuda.stream(stream) if stream is not None else nullcontext():
            for _ in range(steps):
                self.step(x, y)
        if stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(stream)
            self.static_x, self.static_y = x.clone(), y.clone()
            self.graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)
            # thread_local: a DataLoader's pin-memory thread may touch CUDA meanwhile; that is not ours
            with torch.cuda.graph(self.graph, stream=stream, capture_error_mode="thread_local"):
                self.step(self.static_x, self.static_y)
        with torch.no_grad():
            torch._foreach_copy_(state_tensors(self.model), initial)
            if self.ema:
                torch._foreach_copy_(self.ema, list(self.model.parameters()))
            for state in self.optimizer.state.values():  # a fresh Adam state is all zeros
                for v in state.values():
                    if torch.is_tensor(v):
                        v.zero_()
            for t in (self.stats, self.step_count):
                t.zero_()
            self.first_bad.fill_(-1)
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state(rng[1], self.device)
        synchronize(self.device)
        return time.perf_counter() - t0

    def read_sums(self, every_rank: bool = False) -> tuple[float, float, float, int]:
        """(loss sum, correct, images, first non-finite step or -1) since the last reset; syncs. This
        rank's share, or with ``every_rank`` (a collective: every rank must call it) the sums over all."""
        stats = sum_over_ranks(self.stats) if every_rank else self.stats
        loss_sum, correct, n = stats.tolist()
        return loss_sum, correct, n, int(self.first_bad)

    def read_stats(self, every_rank: bool = False) -> tuple[float, float, float, int]:
        """(mean loss, accuracy, images, first non-finite step or -1) since the last reset; syncs."""
        loss_sum, correct, n, bad = self.read_sums(every_rank)
        return loss_sum / max(n, 1), correct / max(n, 1), n, bad


def describe_fast_path(cfg: TrainConfig, trainer: Trainer, loader_kind: str, log: Callable[[str], None]) -> str:
    fast = [f"loader={loader_kind}", f"precision={cfg.precision}"
            + (f" ({trainer.fp8_layers} Linear layers in fp8)" if cfg.precision == "fp8" else "")]
    if trainer.use_compile:
        fast.append("compile" + ("" if cfg.compile_mode == "default" else f" ({cfg.compile_mode})"))
    elif cfg.compile:
        log(f"note: torch.compile not used: {NAIVE_REASON}")
    fast.append("cuda_graph" if trainer.use_graph else "eager")
    if not trainer.use_graph and (cfg.cuda_graph or (trainer.world > 1 and trainer.device.type == "cuda")):
        log(f"note: CUDA graph not used: {trainer.graph_reason}")
    return ", ".join(fast)
