"""One training step for every variant, its config and its result (checkpoints and signals: vitbench.checkpoints).

AdamW (or Adam), linear warm-up then cosine decay, label smoothing, gradient clipping, bf16 autocast,
optional torch.compile, and on CUDA a whole-step CUDA graph. The loop around the step (epochs,
evaluation, stopping rules, progress) is vitbench.loop.
"""

from __future__ import annotations

import importlib.util
import math
import random
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from vitbench.conditions import Conditions
from vitbench.config import TrainConfig, ViTConfig
from vitbench.data import DeviceLoader, Splits, TorchLoader, loader_kind
from vitbench.distributed import rank, sum_over_ranks, world_size
from vitbench.errors import VitbenchError
from vitbench.models import ViT
from vitbench.models.attention import ATTENTION
from vitbench.models.patchify import PATCHIFY
from vitbench.timing import (
    resolve_device,
    side_stream,
    synchronize,
    time_steps,
)


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
    stopped_by: str = "epochs"  # epochs | max_steps | time_budget
    fast_path: str = ""  # what the step ran as: eager / cuda_graph / compile, and why not
    eval_scope: str = ""  # what final_val_acc was measured on
    predictions: torch.Tensor | None = None  # (N_eval,) predicted classes of the final evaluation
    labels: torch.Tensor | None = None
    model: nn.Module | None = None  # the trained model
    conditions: Conditions = field(default_factory=Conditions)  # the CPU's load while training was timed

    def final_metrics(self) -> dict[str, float]:
        return {
            "best_val_acc": self.best_val_acc, "final_val_acc": self.final_val_acc,
            "train_seconds": self.train_seconds, "warmup_seconds": self.warmup_seconds,
            "infer_images_per_sec": self.infer_images_per_sec, "peak_memory_mb": self.peak_memory_mb,
            "param_count": float(self.param_count), "steps": float(self.steps),
            "images_seen": float(self.images_seen),
            "train_images_per_sec_mean": self.images_seen / max(self.train_seconds, 1e-9),
            **self.conditions.metrics(),
        }

    @property
    def images_seen(self) -> int:
        return self.steps * self.batch_size


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


NAIVE_REASON = "off for the naive loop implementations (they stay the eager baseline)"


def naive_parts(model_cfg: ViTConfig | None) -> bool:
    """The from-scratch loop implementations (those with a ``batched_twin``): never captured or compiled
    (compiling would unroll their Python loops over samples and heads), so they stay the eager baseline."""
    return model_cfg is not None and (ATTENTION[model_cfg.attention].batched_twin is not None
                                      or PATCHIFY[model_cfg.patchify].batched_twin is not None)


def compiles(requested: bool, model_cfg: ViTConfig | None) -> bool:
    """Whether ``--compile`` applies: everywhere but the naive parts (``model_cfg`` None: a peer's model)."""
    return requested and not naive_parts(model_cfg)


def autocast_to(device_type: str, amp: torch.dtype | None) -> torch.autocast:
    """Autocast to ``amp`` (an ``AMP_DTYPES`` value); off for None (fp32)."""
    return torch.autocast(device_type, dtype=amp or torch.bfloat16, enabled=amp is not None)


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


# Autocast dtype per precision. fp8: torchao swaps the Linear layers for Float8Linear (e4m3 forward, e5m2
# gradients, dynamic per-tensor scales); everything else runs under bf16 autocast, as torchao recommends.
AMP_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16,
                                             "fp8": torch.bfloat16}


def precision_unavailable(precision: str, device: torch.device) -> str:
    """Why ``precision`` cannot run on ``device`` ('' when it can): fp8 needs tensor cores with FP8 (compute
    capability 8.9: Ada, Hopper and later) and torchao."""
    if precision != "fp8":
        return ""
    if device.type != "cuda":
        return (f"--precision fp8 needs an NVIDIA GPU with FP8 tensor cores (H100, H200, L4, L40S, RTX 4090); "
                f"this run is on {device.type}: use bf16")
    if torch.cuda.get_device_capability(device) < (8, 9):
        return (f"--precision fp8 needs FP8 tensor cores (compute capability 8.9 or newer); "
                f"{torch.cuda.get_device_name(device)} has {'.'.join(map(str, torch.cuda.get_device_capability(device)))}: use bf16")
    if importlib.util.find_spec("torchao") is None:
        return "--precision fp8 needs torchao: pip install 'vitbench[fp8]'"
    return ""


def inference(precision: str):
    """No autograd for evaluation: inference_mode, or no_grad for fp8 (under inference_mode autocast tries to cast
    torchao's float8 tensors inside its matmul, which they refuse)."""
    return torch.no_grad() if precision == "fp8" else torch.inference_mode()


def fp8_linear(module: nn.Module) -> bool:
    """A layer FP8 can take: a plain nn.Linear with both dimensions multiples of 16, as FP8 matmuls need."""
    return type(module) is nn.Linear and module.in_features % 16 == 0 and module.out_features % 16 == 0


def fp8_layers(model: nn.Module) -> list[str]:
    """The names of the layers ``to_float8`` swaps: every FP8-able Linear the model calls (not the projections an
    attention implementation reads as tensors: ``reads_weights``)."""
    read = {f"{name}.{w}" for name, m in model.named_modules() for w in getattr(m, "reads_weights", ())}
    return [name for name, m in model.named_modules() if fp8_linear(m) and name not in read]


def to_float8(model: nn.Module) -> int:
    """Swap ``model``'s FP8-able Linear layers for torchao's Float8Linear (same weights); how many were swapped."""
    from torchao.float8 import convert_to_float8_training

    taken = set(fp8_layers(model))
    convert_to_float8_training(model, module_filter_fn=lambda m, fqn: fqn in taken)
    return len(taken)


_COMPILED: dict[tuple[Callable, str], Callable] = {}
MODELS_PER_PROCESS = 64  # distinct model shapes one process compiles the step for (bench, suites, sweeps)
_MODELS: set[str] = set()  # the distinct models (with precision, batch and mode) this process compiled it for


def models_compiled() -> int:
    """Distinct models this process compiled its step for: each is one more version of the same compiled
    function, of which torch keeps MODELS_PER_PROCESS before it runs the function eagerly."""
    return len(_MODELS)


def room_to_compile() -> bool:
    """Whether a process that goes on serving commands (a warm process, a suite's kept worker) has room for as
    many models again: past half of MODELS_PER_PROCESS it makes way for a fresh process, so that no later
    command's step runs uncompiled while its runs say compiled."""
    return models_compiled() < MODELS_PER_PROCESS // 2


def _compiled(fn: Callable, mode: str = "default") -> Callable:
    """One compiled wrapper per function for the process. Its arguments are a module, tensors and plain
    values, never an object of ours: a guard on such an object's identity would miss for every new Trainer.
    Each distinct model (attention, preset, dims, a peer's) is one more version of the same compiled
    function; torch runs a function eagerly once it has 8 versions, so a bench of ten models in one process
    timed its last ones uncompiled. The limit is raised to MODELS_PER_PROCESS."""
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.6
    setattr(config, limit, max(getattr(config, limit), MODELS_PER_PROCESS))
    if (fn, mode) not in _COMPILED:
        _COMPILED[fn, mode] = torch_compile(fn, mode)
    return _COMPILED[fn, mode]


def torch_compile(fn: Callable, mode: str = "default") -> Callable:
    """``torch.compile`` in one of its modes (vitbench.names.COMPILE_MODES; "default": torch's own)."""
    return torch.compile(fn, mode=None if mode == "default" else mode)


class Trainer:
    """Holds model, optimizer, schedule and device-side statistics; ``step`` never syncs the host."""

    def __init__(self, cfg: TrainConfig, model_cfg: ViTConfig | None, steps_per_epoch: int,
                 log: Callable[[str], None] = print, model: nn.Module | None = None) -> None:
        """``model`` (a peer such as timm's ViT) replaces the ViT that ``model_cfg`` would build."""
        self.cfg, self.model_cfg, self.log = cfg, model_cfg, log
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        self.model = (model if model is not None else ViT(model_cfg)).to(self.device)
        if why := precision_unavailable(cfg.precision, self.device):
            raise VitbenchError(why)
        self.fp8_layers = to_float8(self.model) if cfg.precision == "fp8" else 0
        self.world = world_size()
        step_model: nn.Module = self.model
        if self.world > 1:  # gradients averaged over the ranks, bucketed and overlapped with backward
            from torch.nn.parallel import DistributedDataParallel

            step_model = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.graph_reason = self._graph_reason()
        self.use_graph = self.graph_reason == ""
        on_cuda = self.device.type == "cuda"
        # A tensor LR lets the schedule change inside a captured graph; fused kernels on CUDA.
        lr = torch.tensor(cfg.lr, device=self.device) if self.use_graph else cfg.lr
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        groups = param_groups(self.model, cfg.weight_decay if cfg.optimizer == "adamw" else 0.0)
        extra = {"fused": True} if on_cuda else {}
        if self.use_graph:
            extra["capturable"] = True
        self.optimizer = opt_cls(groups, lr=lr, **extra)
        total = cfg.epochs * steps_per_epoch
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, warmup, cfg.scheduler))
        self.use_compile = compiles(cfg.compile, model_cfg)
        if self.use_compile:
            what = model_cfg if model_cfg is not None else (type(model).__qualname__, sum(p.numel() for p in
                                                                                          self.model.parameters()))
            _MODELS.add(repr((what, cfg.precision, cfg.batch_size, cfg.compile_mode)))
        self.step_model = step_model
        # Compiled: the loss and this step's counts fuse into the model's last kernels, the tally into one
        # more; a step of a small model is a chain of short kernels, so fewer of them is time saved.
        self.loss_and_correct = _compiled(loss_and_correct, cfg.compile_mode) if self.use_compile else loss_and_correct
        self.tally = _compiled(tally) if self.use_compile else tally
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

    def _graph_reason(self) -> str:
        """Why the whole-step CUDA graph does not apply ('' when it does)."""
        cfg, m = self.cfg, self.model_cfg
        if cfg.cuda_graph is False:
            return "off (--no-cuda-graph)"
        if self.device.type != "cuda":
            return "needs CUDA"
        if naive_parts(m):
            return NAIVE_REASON
        if self.world > 1:
            return "data-parallel steps run eagerly (DDP's all-reduce is not captured)"
        if cfg.precision == "fp16":
            return "off for fp16 (its gradient scaler's skip-or-step is not captured)"
        if cfg.compile and cfg.compile_mode in ("reduce-overhead", "max-autotune"):
            return f"off: --compile-mode {cfg.compile_mode} captures CUDA graphs of its own"
        return ""

    # -- the step ---------------------------------------------------------------------------------
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

    def step_phases(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
        """One step, uncaptured, with forward, backward and the optimizer's update timed apart (seconds each), as
        timm's benchmark.py --detail does: each phase ends in a synchronisation, so the three add up to more than
        a step that flows freely."""
        def timed(fn: Callable):
            synchronize(self.device)
            t0 = time.perf_counter()
            out = fn()
            synchronize(self.device)
            return out, time.perf_counter() - t0

        self.optimizer.zero_grad(set_to_none=True)
        (loss, _), fwd = timed(lambda: self.forward(x, y))
        _, bwd = timed(lambda: self.backward(loss))
        _, opt = timed(self.update)
        self.scheduler.step()
        return fwd, bwd, opt

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
        initial = [t.detach().clone() for t in self._state_tensors()]
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
            for t, t0_ in zip(self._state_tensors(), initial, strict=True):
                t.copy_(t0_)
            if self.ema:
                torch._foreach_copy_(self.ema, list(self.model.parameters()))
            for state in self.optimizer.state.values():  # a fresh Adam state is all zeros
                for v in state.values():
                    if torch.is_tensor(v):
                        v.zero_()
            self.stats.zero_()
            self.first_bad.fill_(-1)
            self.step_count.zero_()
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state(rng[1], self.device)
        synchronize(self.device)
        return time.perf_counter() - t0

    def _state_tensors(self) -> list[torch.Tensor]:
        return [*self.model.parameters(), *self.model.buffers()]

    # -- statistics and evaluation ----------------------------------------------------------------
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

    @contextmanager
    def ema_weights(self):
        """The model holds the moving average of its weights inside (with --ema; else as it is), its own after."""
        if not self.ema:
            yield
            return
        live = [p.detach().clone() for p in self.model.parameters()]
        load_ema(self.model, self.ema)  # in place: a captured graph keeps pointing at the same tensors
        try:
            yield
        finally:
            load_ema(self.model, live)

    def adopt_ema(self) -> None:
        """Training is over: the model keeps the moving average of its weights (with --ema)."""
        load_ema(self.model, self.ema)

    def evaluate(self, loader, labels: torch.Tensor, max_seconds: float | None = None
                 ) -> tuple[float, float, torch.Tensor]:
        """(mean loss, accuracy, predictions) over the evaluation set in its fixed order, of the moving average
        of the weights with --ema; with ``max_seconds``, over the first batches that fit in that time (at least
        one)."""
        with self.ema_weights():
            return self._evaluate(loader, labels, max_seconds)

    def evaluation_twin(self) -> nn.Module:
        """The model that computes evaluations: the model itself, or for the from-scratch loop parts a batched
        twin holding the same weights (vectorized attention, unfold patchify: the same function, proven in
        tests/unit/test_models.py), so that a bounded naive run does not wait minutes in evaluation. Training and
        the inference timing run the loops themselves."""
        if not naive_parts(self.model_cfg):
            return self.model
        m = self.model_cfg
        twin = ViT(replace(m, attention=ATTENTION[m.attention].batched_twin or m.attention,
                              patchify=PATCHIFY[m.patchify].batched_twin or m.patchify)).to(self.device)
        twin.load_state_dict(self.model.state_dict())
        return twin

    def _evaluate(self, loader, labels: torch.Tensor, max_seconds: float | None) -> tuple[float, float, torch.Tensor]:
        with inference(self.cfg.precision):
            return self._evaluate_batches(loader, labels, max_seconds)

    def _evaluate_batches(self, loader, labels: torch.Tensor, max_seconds: float | None
                          ) -> tuple[float, float, torch.Tensor]:
        model = self.evaluation_twin()
        model.eval()
        loss_sum = torch.zeros((), device=self.device)
        preds = []
        t0 = time.perf_counter()
        for x, y in loader.batches():
            with self.autocast:
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            preds.append(logits.argmax(-1))
            if max_seconds is not None:
                synchronize(self.device)
                if time.perf_counter() - t0 > max_seconds:
                    break
        self.model.train()
        preds = torch.cat(preds)
        acc = (preds == labels[: len(preds)].to(preds.device)).float().mean().item()
        return loss_sum.item() / len(preds), acc, preds.cpu()

    def infer_images_per_sec(self, x: torch.Tensor, max_seconds: float = 10.0) -> float:
        self.model.eval()

        def forward() -> None:
            with inference(self.cfg.precision), self.autocast:
                self.model(x)

        times = time_steps(forward, self.device, warmup=3, repeats=20, max_seconds=max_seconds)
        self.model.train()
        return len(x) / sorted(times)[len(times) // 2]

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self, position: dict) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                    "python": list(random.getstate()[1])},
            "train_config": asdict(self.cfg),
            "model_config": self.model_cfg.to_dict(),
            "position": position,
            **({"ema": self.ema} if self.ema else {}),
        }

    def load_state_dict(self, ckpt: dict) -> None:
        with torch.no_grad():  # in place: a captured graph keeps pointing at the same tensors
            for t, v in zip(self._state_tensors(), self._ckpt_tensors(ckpt), strict=True):
                t.copy_(v)
        opt_state = ckpt["optimizer"]
        if self.use_graph:  # lr and step stay device tensors, filled in place
            for group, saved in zip(self.optimizer.param_groups, opt_state["param_groups"], strict=True):
                group["lr"].fill_(float(saved["lr"]))
            # warm_up ran first, so every parameter's state exists and the graph points at it
            by_index = dict(enumerate(p for g in self.optimizer.param_groups for p in g["params"]))
            for idx, saved in opt_state["state"].items():
                state = self.optimizer.state[by_index[int(idx)]]
                for k, v in saved.items():
                    state[k].copy_(v)
        else:
            self.optimizer.load_state_dict(opt_state)
        self.scheduler.load_state_dict(ckpt["scheduler"])
        with torch.no_grad():
            for e, saved in zip(self.ema, ckpt.get("ema", []), strict=True):
                e.copy_(saved)
        torch.set_rng_state(ckpt["rng"]["torch"])
        if self.device.type == "cuda" and ckpt["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        random.setstate((3, tuple(ckpt["rng"]["python"]), None))

    def _ckpt_tensors(self, ckpt: dict) -> list[torch.Tensor]:
        sd = ckpt["model"]
        names = [n for n, _ in self.model.named_parameters()] + [n for n, _ in self.model.named_buffers()]
        missing = [n for n in names if n not in sd and n.split(".")[-1] != "pos"]
        if missing:
            raise VitbenchError(f"checkpoint does not match the model: missing {missing[:3]}")
        live = dict(self.model.named_buffers())
        return [sd[n] if n in sd else live[n] for n in names]


def load_ema(model: nn.Module, ema: list[torch.Tensor]) -> None:
    """Put ``ema`` (a checkpoint's "ema": the moving average of the parameters, or any tensors in
    ``parameters()`` order) into ``model``'s parameters, in place; nothing without one."""
    if ema:
        with torch.no_grad():
            torch._foreach_copy_(list(model.parameters()), ema)


def make_loaders(cfg: TrainConfig, splits: Splits, device: torch.device):
    loader = loader_kind(cfg.loader, device.type, world_size())
    # synthetic images are generated in memory; an ImageFolder too large for it is read from disk
    forced = "gpu" if splits.info.synthetic else None if splits.resident else "dataloader"
    if forced is not None:
        if cfg.loader not in ("auto", forced):
            raise VitbenchError(f"--loader {cfg.loader} does not apply to {splits.info.name}: "
                                f"{'synthetic images live in memory' if splits.info.synthetic else 'it is read from disk'}")
        loader = forced
    if loader == "dataloader" and world_size() > 1:  # a DataLoader would give every rank the whole batch
        raise VitbenchError(f"--gpus N needs {splits.info.name} in memory on every rank; it does not fit "
                            "(train on one GPU, or on a smaller --preset)")
    if loader == "gpu":
        train = DeviceLoader(splits.train_images, splits.train_labels, splits.info, cfg.batch_size, device,
                             train=True, seed=cfg.seed, augment=cfg.augment, shard=(rank(), world_size()))
        evaluation = DeviceLoader(splits.eval_images, splits.eval_labels, splits.info, cfg.eval_batch_size,
                                  device, train=False)
    else:
        train = TorchLoader(splits, cfg.batch_size, device, True, cfg.seed, cfg.num_workers, cfg.augment)
        evaluation = TorchLoader(splits, cfg.eval_batch_size, device, False, cfg.seed, cfg.num_workers)
    if len(train) == 0:
        raise VitbenchError(f"batch size {cfg.batch_size} is larger than the training set ({len(splits.train_labels)})")
    return loader, train, evaluation
