"""`--time-budget T --budget-mode fit` (the default): the step timed on the run's first steps and again later (at a
share of the plan's steps or of T, whichever comes first), and the schedule (warm-up in proportion, decay to its end)
re-planned for the steps that fit in T -- at most the --epochs schedule -- so that a bounded run completes a schedule
instead of being cut midway. Functions of the ``Loop``."""

from __future__ import annotations

import math
import time

from vitbench.distributed import max_over_ranks
from vitbench.timing import synchronize

FITS = (5, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95)  # after 5 steps, then at these shares of the plan or of the budget: closer
# together at the end, where a machine that slows down leaves the least room to catch it


def fit_schedule(loop, t0: float) -> None:
    """--budget-mode fit: a step's seconds since the last fit (the slowest rank's) -> the steps that fit in the rest of
    the budget, at most --epochs' -> the schedule re-planned to end there; at FITS' steps or shares of the budget
    (every rank at the same step)."""
    pos, cfg = loop.pos, loop.cfg
    synchronize(loop.device)
    seconds, (steps0, seconds0) = pos["train_seconds"] + time.perf_counter() - t0, pos.get("fit_mark", (0, 0.0))
    (per_step,) = max_over_ranks(loop.device, (seconds - seconds0) / max(1, pos["global_step"] - steps0))
    pos["fits"], pos["fit_mark"] = pos.get("fits", 0) + 1, (pos["global_step"], seconds)
    fits = pos["global_step"] + max(1, int((0.99 * cfg.time_budget - seconds) / per_step))
    apply_plan(loop, min(fits, cfg.epochs * loop.spe))
    share = FITS[min(pos["fits"], len(FITS) - 1)]
    pos["fit_at"] = max(pos["global_step"] + 1, round(share * pos["planned_steps"]))
    pos["fit_time"] = max(seconds + 0.05 * cfg.time_budget, share * cfg.time_budget)  # a span worth timing
    whole = "" if fits < cfg.epochs * loop.spe else ", the whole --epochs schedule"
    loop.log(f"--time-budget {cfg.time_budget:g} s: {per_step * 1e3:.3g} ms a step over steps {steps0 + 1:,}-{pos['global_step']:,}"
             f" -> the schedule fitted to {pos['planned_steps']:,} steps ({loop.epochs} epoch(s) of {loop.spe:,}){whole}")


def apply_plan(loop, steps: int) -> None:
    """The schedule planned for ``steps``, the run's epochs as many as they span; fitted again if due."""
    loop.fitting = loop.fitting and loop.pos.get("fits", 0) < len(FITS)
    loop.trainer.plan.fit(steps)
    loop.pos["planned_steps"] = loop.result.planned_steps = loop.monitor.total = steps
    loop.epochs = loop.monitor.epochs = math.ceil(steps / loop.spe)
