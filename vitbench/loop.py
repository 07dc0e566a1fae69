"""The training loop: epochs, evaluation and stopping rules.

It leaves the step to ``Trainer`` (vitbench.train) and calls small collaborators for the rest: a
``Monitor`` for what a person and the tracking store see while it runs (progress, the projection of the
run's length, live metrics, the non-finite check), ``Hooks`` for what the caller records (epoch metrics,
live metrics, what a stopped run did), the checkpoint file and ``DeferredSignals``.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vitbench import wall
from vitbench.budget import FITS, apply_plan, fit_schedule
from vitbench.checkpoints import DeferredSignals, restore_trainer, save_checkpoint, trainer_state
from vitbench.conditions import Conditions, GpuSampler
from vitbench.data import RunContext, Splits, first_batch, make_loaders
from vitbench.distributed import AGREE_EVERY, agree, lead
from vitbench.evaluation import STOP_EVAL_SECONDS, eval_scope, evaluate, infer_images_per_sec, load_ema
from vitbench.models import ViTConfig, count_params
from vitbench.peers import model_for
from vitbench.progress import Display, Every, duration
from vitbench.timing import free_memory, peak_memory_mb, reset_peak_memory, synchronize
from vitbench.train import NonFiniteLoss, TrainConfig, Trainer, TrainResult, describe_fast_path, ended

EpochCallback = Callable[[int, dict], None]
TARGET_CHECKS = 10  # --target-acc: evaluations per epoch, between the epoch's own
# Between the first epoch's checkpoint and the last one, one at most this often: a kill loses at most these seconds
# and an epoch, and a run of short epochs (MNIST's on a GPU: 0.2 s) does not write one per epoch.
CHECKPOINT_SECONDS = 10.0


@dataclass
class Hooks:
    """What the loop tells its caller. ``live(step, metrics)``: step-level metrics; ``stopped(metrics,
    tags)``: what a run that did not end normally (Ctrl-C, an error, a pruned trial) did up to then; ``pruned``:
    the exceptions that stop a run on purpose (Optuna's TrialPruned)."""

    epoch: list[EpochCallback] = field(default_factory=list)
    live: Callable[[int, dict], None] | None = None
    stopped: Callable[[dict, dict], None] | None = None
    pruned: tuple[type[BaseException], ...] = ()


def planned_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    total = cfg.epochs * steps_per_epoch
    return min(total, cfg.max_steps) if cfg.max_steps is not None else total


class Monitor:
    """Between two steps the loop calls ``after_step``: one clock read. When something is due -- the
    display, a live-metrics point, the one-time projection, the non-finite check (every ``CHECK``
    seconds) -- it syncs the device once and reads the running sums the step keeps on the device.
    """

    CHECK = 1.0  # seconds between reads of the device statistics

    def __init__(self, trainer: Trainer, cfg: TrainConfig, name: str, steps_per_epoch: int,
                 display: Display | None, live: Every, on_live: Callable[[int, dict], None] | None) -> None:
        self.trainer, self.cfg, self.name, self.spe = trainer, cfg, name, steps_per_epoch
        self.display, self.live, self.on_live = display, live, on_live if live.on else None
        self.total, self.epochs = planned_steps(cfg, steps_per_epoch), cfg.epochs  # both re-planned by a budget fit
        self.task = display.task(name, self.total) if display is not None else None
        intervals = [self.CHECK]
        if display is not None and display.mode == "lines":
            intervals.append(display.interval)
        if self.on_live is not None and live.seconds:
            intervals.append(live.seconds)
        self.every = min(intervals)
        self.next_check = time.perf_counter() + self.every
        self.next_live = time.perf_counter() + (live.seconds or float("inf"))
        self.projected = False
        self.start: tuple[int, float] | None = None  # (step, training seconds) when the monitor started
        self.window = (0.0, 0.0, 0.0, 0.0)  # loss sum, correct, images, time at the last read
        self.live_steps = live.steps if self.on_live is not None else None

    def start_epoch(self, pos: dict, t0: float) -> None:
        self.window = (0.0, 0.0, 0.0, t0)  # the step's sums were just reset
        if self.start is None:
            self.start = (pos["global_step"], pos["train_seconds"])

    def after_step(self, pos: dict, t0: float) -> None:
        step_due = self.live_steps is not None and pos["global_step"] % self.live_steps == 0
        if step_due or time.perf_counter() >= self.next_check:
            self.check(pos, t0, step_due)

    def check(self, pos: dict, t0: float, step_due: bool = False) -> None:
        loss_sum, correct, n, bad = self.trainer.read_sums()  # the sync
        if bad >= 0:
            raise NonFiniteLoss(bad + 1, self.cfg.lr)
        now = time.perf_counter()
        loss0, correct0, n0, time0 = self.window
        self.window = (loss_sum, correct, n, now)
        self.next_check = now + self.every
        images = n - n0  # this rank's; every rank takes an equal share of each batch
        if images <= 0:
            return
        rate = images * self.trainer.world / max(now - time0, 1e-9)
        window = {"train_loss": (loss_sum - loss0) / images, "train_acc": (correct - correct0) / images,
                  "train_images_per_sec": rate}
        elapsed = pos["train_seconds"] + now - t0
        steps = pos["global_step"] - self.start[0]
        mean_rate = steps * self.cfg.batch_size / max(elapsed - self.start[1], 1e-9)  # steadier than the window's
        if not self.projected and steps >= 2:
            self.project(mean_rate, pos, elapsed)
        self.show(pos, window, mean_rate, elapsed)
        if self.on_live is not None and (step_due or now >= self.next_live):
            self.next_live = now + (self.live.seconds or float("inf"))
            self.on_live(pos["global_step"], window)

    def eta(self, pos: dict, rate: float, elapsed: float) -> float:
        left = (self.total - pos["global_step"]) * self.cfg.batch_size / rate
        if self.cfg.time_budget is not None:
            left = min(left, max(self.cfg.time_budget - elapsed, 0.0))
        return left

    def project(self, rate: float, pos: dict, elapsed: float) -> None:
        """One line, once: the measured images/s and how long the requested training will take."""
        self.projected = True
        cfg = self.cfg
        if cfg.time_budget is not None and cfg.budget_mode == "fit":
            return  # the schedule is fitted to the budget, which the fit's own line says
        full = self.total * cfg.batch_size / rate
        plan = (f"--max-steps {cfg.max_steps:,}" if self.total < cfg.epochs * self.spe
                else f"{cfg.epochs} epoch{'s' if cfg.epochs > 1 else ''}")
        line = f"{self.name}: {rate:,.0f} img/s -> {plan} ({self.total:,} steps) ~ {duration(full)} of training"
        if self.start[0] > 0:
            line += f", {duration(self.eta(pos, rate, elapsed))} of it left"
        if cfg.time_budget is not None and cfg.time_budget < full:
            line += f"; --time-budget stops it after {duration(cfg.time_budget)} ({cfg.time_budget / full:.0%} of it)"
        elif full > 120:
            line += "; --time-budget SECONDS or --max-steps N bound it"
        if self.display is not None:
            self.display.note(line)

    def show(self, pos: dict, window: dict, mean_rate: float, elapsed: float) -> None:
        if self.task is None:
            return
        fields = {"": f"epoch {min(pos['epoch'] + 1, self.epochs)}/{self.epochs}",
                  "img/s": f"{window['train_images_per_sec']:,.0f}", "loss": f"{window['train_loss']:.4f}",
                  "acc": f"{window['train_acc']:.4f}", "ETA": duration(self.eta(pos, mean_rate, elapsed))}
        self.task.update(pos["global_step"], fields=fields, total=self.total)

    def close(self) -> None:
        if self.task is not None:
            self.task.close()


def stop_if_signalled(signals: DeferredSignals, world: int, device: torch.device, *flags: bool) -> list[bool]:
    """Raise KeyboardInterrupt if this process (any rank) was signalled; each flag OR-ed over every rank."""
    if world == 1:
        signals.check()
        return list(flags)
    signalled, *flags = agree(device, signals.received is not None, *flags)
    if signalled:
        raise KeyboardInterrupt("signal on a data-parallel rank")
    return flags


class Loop:
    """Epochs of steps, an evaluation after each, checkpoints; stops on epochs, --max-steps,
    --time-budget, Ctrl-C / SIGTERM (a checkpoint of the exact position) or an error."""

    def __init__(self, cfg: TrainConfig, trainer: Trainer, loaders: tuple, splits: Splits, result: TrainResult,
                 monitor: Monitor, hooks: Hooks, checkpoint_path: Path | None, log: Callable[[str], None],
                 eager_only: bool = False) -> None:
        self.cfg, self.trainer, self.splits, self.result, self.eager_only = cfg, trainer, splits, result, eager_only
        self.train_loader, self.eval_loader = loaders
        self.monitor, self.hooks, self.checkpoint_path, self.log = monitor, hooks, checkpoint_path, log
        self.device, self.world, self.lead = trainer.device, trainer.world, lead()
        self.spe = len(self.train_loader)
        self.pos = {"epoch": 0, "batch": 0, "global_step": 0, "train_seconds": 0.0, "history": [],
                    "best_val_acc": 0.0}
        self.stop: str | None = None
        self.epochs = cfg.epochs  # --budget-mode fit: as many as the fitted schedule spans
        self.fitting = cfg.time_budget is not None and cfg.budget_mode == "fit"
        self.preds: torch.Tensor | None = None
        self.epoch_t0: float | None = None  # set while an epoch's steps run
        self.saved_at = -math.inf  # when the last checkpoint was written

    def resume(self, ckpt: dict | None) -> None:
        if ckpt is None:
            return
        restore_trainer(self.trainer, ckpt)
        p = self.pos
        p.update(ckpt["position"])
        self.result.history = list(p["history"])
        if p.get("planned_steps"):  # the schedule fitted before the interruption, as it was
            apply_plan(self, p["planned_steps"])
        self.log(f"resumed at epoch {p['epoch'] + 1}, batch {p['batch']}, step {p['global_step']}")

    def run(self) -> None:
        signals = DeferredSignals(escalate=self.world == 1)
        try:
            while self.pos["epoch"] < self.epochs and self.stop is None:
                self.train_epoch(signals)
                self.end_epoch()
                stop_if_signalled(signals, self.world, self.device)
        except BaseException as e:
            record_stop(self, e)
            raise
        finally:
            signals.restore()
            self.monitor.close()

    def train_epoch(self, signals: DeferredSignals) -> None:
        pos, trainer = self.pos, self.trainer
        trainer.stats.zero_()
        synchronize(self.device)
        self.epoch_t0 = self.last_step_end = time.perf_counter()
        self.seconds = 0.0  # this epoch's training; --target-acc's checks left out
        self.result.conditions.start()
        self.monitor.start_epoch(pos, self.epoch_t0)
        self.steps_before = pos["batch"]
        for x, y in self.train_loader.batches(pos["epoch"], start=pos["batch"]):
            trainer.run_step(x, y)
            pos["batch"] += 1
            pos["global_step"] += 1
            self.monitor.after_step(pos, self.epoch_t0)
            if self.stop_rules(signals, self.epoch_t0) or (self.target_due() and self.reached_target()):
                break
        self.close_segment()
        self.epoch_t0 = None

    def close_segment(self) -> None:
        """The training since ``epoch_t0`` counted: its clock, the conditions, the wall's training time."""
        synchronize(self.device)
        seconds = time.perf_counter() - self.epoch_t0
        self.seconds += seconds
        self.pos["train_seconds"] += seconds
        wall.add("training", seconds)
        self.result.conditions.stop()

    def target_due(self) -> bool:
        return self.cfg.target_acc is not None and self.pos["global_step"] % max(1, self.spe // TARGET_CHECKS) == 0

    def reached_target(self) -> bool:
        """--target-acc: training paused, its clock too, the evaluation set scored; a run that reached it stops."""
        self.close_segment()
        with wall.phase("evaluation"):
            acc = evaluate(self.trainer, self.eval_loader, self.splits.eval_labels)[1]
        note_target(self, acc)
        self.result.conditions.start()
        self.epoch_t0 = self.last_step_end = time.perf_counter()
        return self.stop is not None

    def stop_rules(self, signals: DeferredSignals, t0: float) -> bool:
        """Between steps: Ctrl-C / SIGTERM (raised here, never inside a step), --max-steps, --time-budget.
        Data-parallel ranks decide together every AGREE_EVERY steps, so they stop at the same step. The budget
        stops the run before a step that would end past it (the last step's time as the guess): on a busy
        machine a step can take seconds, and the budget still holds."""
        cfg, pos = self.cfg, self.pos
        now = time.perf_counter()
        step, self.last_step_end, elapsed = now - self.last_step_end, now, pos["train_seconds"] + now - t0
        over = cfg.time_budget is not None and elapsed + step > cfg.time_budget
        by_time = self.fitting and elapsed >= pos.get("fit_time", math.inf)  # a fit due by time, before its step
        if self.world > 1 and pos["global_step"] % AGREE_EVERY:
            over = by_time = False  # between agreements a rank decides nothing alone
        else:
            over, by_time = stop_if_signalled(signals, self.world, self.device, over, by_time)
        if self.fitting and (by_time or pos["global_step"] >= pos.get("fit_at", FITS[0])):
            fit_schedule(self, t0)
        if cfg.max_steps is not None and pos["global_step"] >= cfg.max_steps:
            self.stop = "max_steps"
        elif over or pos["global_step"] >= pos.get("planned_steps", math.inf) < cfg.epochs * self.spe:
            self.stop = "time_budget"  # over, or the last step of a schedule fitted shorter than --epochs'
        return self.stop is not None

    def end_epoch(self) -> None:
        cfg, pos, trainer = self.cfg, self.pos, self.trainer
        epoch = pos["epoch"]
        loss, acc, n, bad = trainer.read_stats(every_rank=True)
        if bad >= 0:
            raise NonFiniteLoss(bad + 1, cfg.lr)
        if not self.lead:  # rank 0 evaluates, records and checkpoints for every rank
            pos["epoch"], pos["batch"] = (epoch + 1, 0) if pos["batch"] >= self.spe else (epoch, pos["batch"])
            return
        t_eval = time.perf_counter()
        naive = self.eager_only
        if self.stop is not None or naive:
            twin = "; the batched twin of the loop parts computes the same function, far faster" if naive else ""
            stop = f"{ended(self.stop, pos['global_step'], pos.get('planned_steps'))}; " if self.stop else ""
            self.log(f"{stop}evaluating on the {self.splits.eval_set} set "
                     f"({len(self.splits.eval_labels):,} images{twin}) ...")
        with wall.phase("evaluation"):
            val_loss, val_acc, self.preds = evaluate(trainer, self.eval_loader, self.splits.eval_labels)
        metrics = {
            "train_loss": loss, "train_acc": acc, "val_loss": val_loss, "val_acc": val_acc,
            "lr": float(trainer.optimizer.param_groups[0]["lr"]),  # for the next step
            "epoch_seconds": self.seconds + time.perf_counter() - t_eval,
            "train_images_per_sec": (pos["batch"] - self.steps_before) * cfg.batch_size / max(self.seconds, 1e-9),
            "train_seconds_cum": pos["train_seconds"],  # training time so far: x-axis of time-to-accuracy
        }
        self.result.history.append({"epoch": epoch + 1, **metrics})
        if cfg.target_acc is not None:
            note_target(self, val_acc)
        pos["best_val_acc"] = max(pos["best_val_acc"], val_acc)
        if pos["batch"] >= self.spe:
            pos["epoch"], pos["batch"] = epoch + 1, 0
        self.log(f"epoch {epoch + 1}: train_loss {loss:.4f} train_acc {acc:.4f} val_loss {val_loss:.4f} "
                 f"val_acc {val_acc:.4f} ({metrics['train_images_per_sec']:,.0f} img/s)")
        try:  # the epoch's metrics are recorded first: a checkpoint that cannot be written loses none of them
            for callback in self.hooks.epoch:
                callback(epoch + 1, metrics)
        finally:
            checkpoint(self, due=self.stop is not None or pos["epoch"] >= self.epochs)


def checkpoint(loop: Loop, due: bool = True) -> None:
    """Write the run's checkpoint if ``due`` or if CHECKPOINT_SECONDS have passed since the last."""
    if loop.checkpoint_path is not None and (due or time.perf_counter() - loop.saved_at >= CHECKPOINT_SECONDS):
        save_checkpoint(trainer_state(loop.trainer, dict(loop.pos, history=loop.result.history)), loop.checkpoint_path)
        loop.saved_at = time.perf_counter()


def note_target(loop: Loop, acc: float) -> None:
    """--target-acc: the first evaluation that reaches it stops the run and says when."""
    if acc >= loop.cfg.target_acc and loop.result.time_to_target is None:
        loop.result.time_to_target, loop.result.steps_to_target = loop.pos["train_seconds"], loop.pos["global_step"]
        loop.stop = "target_acc"


def done_so_far(loop: Loop) -> dict[str, float]:
    """Training time, steps, images and mean throughput up to now (the epoch in progress included)."""
    seconds = loop.pos["train_seconds"]
    if loop.epoch_t0 is not None:
        synchronize(loop.device)
        seconds += time.perf_counter() - loop.epoch_t0
    so_far = TrainResult(train_seconds=seconds, steps=loop.pos["global_step"], batch_size=loop.cfg.batch_size)
    return {"train_seconds": seconds, "steps": float(so_far.steps), "images_seen": float(so_far.images_seen),
            "train_images_per_sec_mean": so_far.images_per_sec}


def record_stop(loop: Loop, e: BaseException) -> None:
    """A run that did not end normally keeps what it did: a checkpoint of the exact position (Ctrl-C),
    training time, steps, images, throughput, and a validation pass that fits in a few seconds."""
    interrupted = isinstance(e, KeyboardInterrupt)
    if not loop.lead:
        return
    with contextlib.suppress(Exception):
        metrics = done_so_far(loop)
        if interrupted:
            checkpoint(loop)  # the exact position: --resume continues from here
        tags = {"stopped_by": stop_reason(e, loop.hooks.pruned)}
        if not isinstance(e, (NonFiniteLoss, *loop.hooks.pruned)) and metrics["steps"] > 0:
            loss, acc, preds = evaluate(loop.trainer, loop.eval_loader, loop.splits.eval_labels,
                                        max_seconds=STOP_EVAL_SECONDS)
            metrics |= {"final_val_acc": acc, "final_val_loss": loss, "final_val_images": float(len(preds))}
            tags["final_eval"] = eval_scope(len(preds), len(loop.splits.eval_labels), loop.splits.eval_set)
        if loop.hooks.stopped is not None:
            loop.hooks.stopped(metrics, tags)


def stop_reason(e: BaseException, pruned: tuple[type[BaseException], ...]) -> str:
    """What a run's ``stopped_by`` tag says when ``e`` ended it."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupt"
    return "pruned" if isinstance(e, pruned) else f"error ({type(e).__name__})"


def train(cfg: TrainConfig, model_cfg: ViTConfig, splits: Splits, ctx: RunContext, *,
          checkpoint_path: Path | None = None,
          resume: dict | None = None, hooks: Hooks | None = None, display: Display | None = None,
          live: Every = Every(), name: str | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Train and evaluate every epoch on the context's device. ``resume`` is a checkpoint to continue from.

    Ctrl-C / SIGTERM write a checkpoint of the exact position, then re-raise; the last epoch-end
    checkpoint is kept on any other exception.
    """
    device = ctx.device
    with wall.phase("data to device, model"):
        loader_kind, train_loader, eval_loader = make_loaders(cfg, splits, ctx)
        # Peak memory counts from here: model, optimizer, activations, CUDA graphs. Not the device-resident
        # dataset (a suite's runs share one copy: it was counted in a process's first run only) nor what an
        # earlier run left, so one cell gives one peak, whichever run of a process it is.
        baseline_mb = free_memory(device)
        reset_peak_memory(device)
        trainer = Trainer(cfg, model_cfg, len(train_loader), log, model_for(cfg.variant, model_cfg), device)
    result = TrainResult(param_count=count_params(trainer.model), conditions=Conditions(gpu=GpuSampler.of(device)))
    result.fast_path = describe_fast_path(cfg, trainer, loader_kind, log)
    if trainer.use_compile:  # warm-up / compile / capture on the first batch, outside train_seconds
        log("compiling (torch.compile; tens of seconds the first time, cached for later runs) ...")
    first_x, first_y = first_batch(train_loader)
    result.warmup_seconds = trainer.warm_up(first_x, first_y)
    wall.add("warm-up/compile", result.warmup_seconds)
    del first_x, first_y
    hooks = hooks or Hooks()
    monitor = Monitor(trainer, cfg, name or cfg.variant, len(train_loader), display, live, hooks.live)
    loop = Loop(cfg, trainer, (train_loader, eval_loader), splits, result, monitor, hooks, checkpoint_path, log,
                ctx.eager_only)
    loop.resume(resume)
    loop.run()
    finish(result, loop, baseline_mb)
    return result


def finish(result: TrainResult, loop: Loop, baseline_mb: float) -> None:
    cfg, pos, trainer, device = loop.cfg, loop.pos, loop.trainer, loop.device
    result.stopped_by = loop.stop or "epochs"
    result.steps = pos["global_step"]
    result.batch_size = cfg.batch_size
    result.train_seconds = pos["train_seconds"]
    result.best_val_acc = pos["best_val_acc"]
    result.final_val_acc = result.history[-1]["val_acc"] if result.history else 0.0
    result.peak_memory_mb, result.peak_memory_source = peak_memory_mb(device)
    result.peak_memory_mb -= baseline_mb
    result.predictions = loop.preds if result.history else None
    result.labels = loop.splits.eval_labels
    result.eval_scope = eval_scope(len(loop.splits.eval_labels), len(loop.splits.eval_labels), loop.splits.eval_set)
    x_inf = next(iter(loop.eval_loader.batches()))[0][: cfg.batch_size]
    # a bounded run's inference timing is bounded in proportion: 5 % of its budget, 1-10 s
    seconds = 10.0 if cfg.time_budget is None else min(10.0, max(1.0, 0.05 * cfg.time_budget))
    if loop.eager_only or cfg.time_budget is not None:
        loop.log(f"timing inference (batch {len(x_inf)}, up to {seconds:g} s) ...")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with wall.phase("inference timing"):
            result.infer_images_per_sec = infer_images_per_sec(trainer, x_inf, max_seconds=seconds)
    if cfg.profile:  # after every measurement: N more steps, profiled; the weights then put back
        from vitbench.profiling import profile_trainer

        result.profile, result.profile_dir = profile_trainer(trainer, pos, loop.train_loader, cfg.profile, loop.log)
    load_ema(trainer.model, trainer.ema)  # with --ema the model evaluated is the average; the checkpoint keeps both
    result.model = trainer.model
