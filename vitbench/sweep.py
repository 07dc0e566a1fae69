"""`vitbench sweep`: Optuna studies whose trials are nested MLflow runs under one parent run; ``n_trials`` is the
study's total, so re-running resumes to it. The Optuna side (storage, pruner, dead workers) is vitbench.study."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vitbench.config import MODEL_OPTIONS
from vitbench.errors import VitbenchError
from vitbench.mlflow_ui import NAME_LENGTH, NOTE
from vitbench.progress import Display, Every, duration
from vitbench.study import (
    COUNTED,
    ExcessTrial,
    SweepSpec,
    TrialBeat,
    counts,
    dashboard_command,
    fail_dead_trials,
    open_study,
    redact,
    study_lock,
    suggest,
    trial_sampler,
)

if TYPE_CHECKING:
    from vitbench.options import Options

def trial_name(number: int, params: dict) -> str:
    """What the MLflow UI lists for a trial: its number and what it tried, the model's shape first
    (``trial 3: depth=4 dim=64 lr=0.0021``); a value that does not fit is left out whole, never cut."""
    def short(v) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    order = sorted(params, key=lambda k: (k not in MODEL_OPTIONS, MODEL_OPTIONS.index(k) if k in MODEL_OPTIONS else 0))
    name = f"trial {number}:"
    for i, k in enumerate(order):
        more = f" (+{len(order) - i} more)"
        item = f" {k}={short(params[k])}"
        if len(name) + len(item) + (len(more) if i < len(order) - 1 else 0) > NAME_LENGTH:
            return name + more
        name += item
    return name if params else f"trial {number}"


@dataclass
class Objective:
    """One trial: suggest, build the configs, train as a nested MLflow run, return the objective(s)."""

    study: object
    spec: SweepSpec
    base: Options  # what every trial starts from; its suggested parameters on top
    splits: object
    tracking_uri: str | None
    experiment: str
    parent_run_id: str
    display: Display
    live: Every

    @property
    def multi(self) -> bool:
        return len(self.spec.objectives) > 1

    def configs(self, trial, params: dict):
        import optuna

        from vitbench.options import configs

        try:
            return configs(replace(self.base, **params))
        except VitbenchError as e:  # e.g. dim not divisible by heads: an impossible corner of the space
            trial.set_user_attr("prune_reason", f"invalid configuration: {e}")
            raise optuna.TrialPruned(str(e)) from None

    def report(self, trial) -> Callable[[int, dict], None]:
        """The per-epoch callback: report val_acc to Optuna, prune when it says so (single objective)."""
        import optuna

        def report(epoch: int, metrics: dict) -> None:
            if not self.multi:
                trial.report(metrics["val_acc"], epoch)
                if trial.should_prune():
                    trial.set_user_attr("prune_reason", f"pruned at epoch {epoch} (val_acc {metrics['val_acc']:.4f})")
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        return report

    def __call__(self, trial):
        import optuna
        import torch

        from vitbench.runner import Tracking, run_experiment
        from vitbench.train import NonFiniteLoss

        spec = self.spec
        beat = TrialBeat(trial, spec.heartbeat) if spec.journal else None  # at once: a trial without one looks dead
        state = "FAIL"
        try:
            earlier = [t for t in self.study.get_trials(deepcopy=False)
                       if t.number < trial.number and t.state.name in (*COUNTED, "RUNNING")]
            if len(earlier) >= spec.n_trials:
                raise ExcessTrial(f"study already has {spec.n_trials} trials")
            params = suggest(trial, spec.space)
            cfg, model_cfg = self.configs(trial, params)
            tags = {"optuna.study": spec.study_name, "optuna.trial": str(trial.number), "kind": "sweep-trial"}
            tracking = Tracking(self.tracking_uri, self.experiment, trial_name(trial.number, params),
                                self.parent_run_id, tags, on_start=lambda rid: started(trial, rid))
            outcome = run_experiment(cfg, model_cfg, tracking, on_epoch=[self.report(trial)], splits=self.splits,
                                     log=lambda s: None, pruned_exceptions=(optuna.TrialPruned,),
                                     display=self.display, live=self.live)
            state = "COMPLETE"
        except (torch.OutOfMemoryError, NonFiniteLoss) as e:
            reason = f"{'CUDA out of memory' if isinstance(e, torch.OutOfMemoryError) else str(e)}"
            trial.set_user_attr("prune_reason", reason[:300])
            state = "PRUNED"
            raise optuna.TrialPruned(reason) from None
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        finally:
            if beat is not None:
                beat.stop()
            ended(trial, state)
        r = outcome.result
        values = {"val_acc": r.final_val_acc, "train_images_per_sec": r.images_per_sec}
        self.display.note(f"trial {trial.number}: val_acc {r.final_val_acc:.4f} in {r.train_seconds:.1f} s  {params}")
        return tuple(values[o] for o in spec.objectives) if self.multi else values["val_acc"]


def started(trial, run_id: str) -> None:
    """A trial's run began: its id on the trial, the trial's number a param of the run (MLflow's charts put params
    on an axis, not tags)."""
    from mlflow.tracking import MlflowClient

    trial.set_user_attr("mlflow_run_id", run_id)
    MlflowClient().log_param(run_id, "optuna.trial_number", trial.number)


def ended(trial, state: str) -> None:
    """The trial's state as Optuna records it (COMPLETE, PRUNED, FAIL), as its run's ``optuna.state`` tag."""
    from mlflow.tracking import MlflowClient

    if run_id := trial.user_attrs.get("mlflow_run_id"):
        with contextlib.suppress(Exception):  # a store away now: the run's status says as much
            MlflowClient().set_tag(run_id, "optuna.state", state)


def work(spec: SweepSpec, base: Options, tracking_uri: str | None, experiment: str,
         parent_run_id: str, log: Callable[[str], None] = print, display: Display | None = None,
         live: Every | None = None, reap: bool = True) -> None:
    """Run trials until the study holds ``n_trials`` COMPLETE or PRUNED ones (or ``timeout``); ``reap``:
    also fail the trials of dead workers (see ``fail_dead_trials``)."""
    from vitbench.options import configs
    from vitbench.runner import load_data, run_context

    base_cfg, base_model = configs(base)
    study = open_study(spec, base_cfg.epochs, log)
    splits = load_data(base_cfg, run_context(base_cfg, base_model), log)
    deadline = time.time() + spec.timeout if spec.timeout else None
    display = display or Display("off", log=log)
    objective = Objective(study, spec, base, splits, tracking_uri, experiment, parent_run_id,
                          display, live or Every())
    with display:
        task = display.task(f"study {spec.study_name}", spec.n_trials, unit="trial")
        started, mine = time.perf_counter(), 0
        while deadline is None or time.time() < deadline:
            if reap:
                with contextlib.suppress(Exception):
                    fail_dead_trials(study, spec.heartbeat, spec.journal)
            c = counts(study)
            done = sum(c.get(s, 0) for s in COUNTED)
            if mine:  # this worker's mean trial time x the trials still to run (shared with other workers)
                left = (time.perf_counter() - started) / mine * (spec.n_trials - done)
                task.update(done, fields={"ETA": duration(left)}, force_line=True)
            if done >= spec.n_trials:
                break
            if done + c.get("RUNNING", 0) >= spec.n_trials and not c.get("WAITING"):
                time.sleep(min(spec.heartbeat, 5))  # others hold the last trials; take over if they die
                continue
            study.sampler = trial_sampler(spec, sum(c.values()))
            study.optimize(objective, n_trials=1, catch=(ExcessTrial,), gc_after_trial=True)
            mine += 1
        task.close()


# -- the coordinator ------------------------------------------------------------------------------
def parent_run(spec: SweepSpec, study, experiment_id: str, params: dict) -> str:
    """The study's parent MLflow run: created once, found again through the study's user attrs."""
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    from vitbench.liveness import process_tags
    from vitbench.tracking import environment_tags

    client = MlflowClient()
    with study_lock(spec):  # two sweeps started together on one host make one parent run
        rid = study.user_attrs.get("mlflow_parent_run_id")  # read from the storage: another sweep may have set it
        if rid:
            with contextlib.suppress(Exception):
                client.update_run(rid, status="RUNNING")
                client.log_batch(rid, tags=[RunTag(k, v) for k, v in process_tags().items()])
                return rid
        tags = {"kind": "sweep", "optuna.study": spec.study_name, "optuna.storage": redact(spec.storage),
                NOTE: sweep_note(spec, study), **environment_tags(), **process_tags()}
        run = client.create_run(experiment_id, run_name=f"sweep-{spec.study_name}", tags=tags)
        rid = run.info.run_id
        for k, v in params.items():
            client.log_param(rid, k, str(v)[:6000])
        client.log_dict(rid, spec.space, "space.yaml")
        study.set_user_attr("mlflow_parent_run_id", rid)
    return rid


def sweep_note(spec: SweepSpec, study, best: str = "") -> str:
    """The parent run's description: the study, its space and objective, and (once known) its best trial."""
    c = counts(study)
    trials = f"{c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, {c.get('FAIL', 0)} failed"
    goal = " and ".join(f"{d} {o}" for o, d in zip(spec.objectives, spec.directions, strict=True))
    return (f"Optuna study **{spec.study_name}** ({redact(spec.storage)}): {spec.variant} on {spec.dataset}, "
            f"{spec.n_trials} trials to {goal}, space `{spec.space_path}` ({', '.join(spec.space)}), "
            f"{spec.pruner} pruner. Trials so far: {trials}.{(' ' + best) if best else ''} Each trial is a "
            "nested run named by what it tried.")


def finish(spec: SweepSpec, study, parent_id: str, log: Callable[[str], None]) -> dict:
    """Best trial(s), plots and the Pareto table on the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ov
    import pandas as pd
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    c = counts(study)
    summary = {"complete": c.get("COMPLETE", 0), "pruned": c.get("PRUNED", 0), "failed": c.get("FAIL", 0)}
    for k, v in summary.items():
        client.log_metric(parent_id, f"trials_{k}", v)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        log("no trial completed")
        return summary
    multi = len(spec.objectives) > 1
    plots: dict[str, Callable] = {"optimization_history": ov.plot_optimization_history,
                                  "param_importances": ov.plot_param_importances,
                                  "parallel_coordinate": ov.plot_parallel_coordinate}
    with tempfile.TemporaryDirectory() as tmp:
        if multi:
            best = study.best_trials
            rows = [{"trial": t.number, **dict(zip(spec.objectives, t.values, strict=True)), **t.params} for t in best]
            pd.DataFrame(rows).to_csv(Path(tmp) / "pareto_front.csv", index=False)
            plots = {"pareto_front": lambda s: ov.plot_pareto_front(s, target_names=list(spec.objectives)),
                     "parallel_coordinate": lambda s: ov.plot_parallel_coordinate(s, target=lambda t: t.values[0],
                                                                                   target_name="val_acc")}
            summary["pareto_trials"] = [t.number for t in best]
            log(f"Pareto front: trials {summary['pareto_trials']}")
            client.set_tag(parent_id, NOTE, sweep_note(spec, study, f"**Pareto front: trials "
                                                                    f"{', '.join(map(str, summary['pareto_trials']))}**."))
        else:
            best = study.best_trial
            summary.update(best_value=best.value, best_trial=best.number, best_params=best.params)
            client.log_metric(parent_id, "best_val_acc", round(best.value, 5))
            for k, v in best.params.items():  # tags: a resumed study's best may change, and params may not
                client.set_tag(parent_id, f"best.{k}", str(v))
            client.set_tag(parent_id, "best_trial", str(best.number))
            log(f"best trial {best.number}: val_acc {best.value:.4f} with {best.params}")
            run_id = best.user_attrs.get("mlflow_run_id", "")
            client.set_tag(parent_id, NOTE, sweep_note(spec, study, f"**Best: {trial_name(best.number, best.params)}**, "
                                                                    f"val_acc {best.value:.2%} (run {run_id})."))
        for name, fn in plots.items():
            try:
                with contextlib.redirect_stderr(open(os.devnull, "w")):
                    ax = fn(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(9, 5)
                fig.tight_layout()
                fig.savefig(Path(tmp) / f"{name}.png", dpi=110)
                plt.close(fig)
            except Exception as e:  # e.g. importances need >= 2 complete trials with varying params
                log(f"note: no {name} plot ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})")
        for f in sorted(Path(tmp).iterdir()):
            client.log_artifact(parent_id, str(f), "sweep")
    return summary


def final_test(study, spec: SweepSpec, summary: dict, parent_id: str, tracking_uri: str,
               log: Callable[[str], None]) -> dict:
    """The official test set, used once: for the trial(s) the sweep chose on held-out data (the best, or the
    Pareto front), each trial's model from its checkpoint. Recorded as ``test_acc`` on the trial's run and
    ``best_test_acc`` on the parent."""
    from mlflow.tracking import MlflowClient

    from vitbench.data import mean_std
    from vitbench.inspect_run import load_run, predict

    chosen = summary.get("pareto_trials") or ([summary["best_trial"]] if "best_trial" in summary else [])
    client, out = MlflowClient(), {}
    for number in chosen:
        rid = study.trials[number].user_attrs.get("mlflow_run_id")
        if not rid:
            continue
        model, cfg, splits, _, ctx = load_run(rid, tracking_uri, "checkpoints", None, test_set=True)
        preds = predict(model.to(ctx.device), splits.eval_images, *mean_std(splits.info, ctx.device), batch=500)
        acc = float((preds == splits.eval_labels[:len(preds)]).float().mean())
        client.log_metric(rid, "test_acc", round(acc, 5))
        client.set_tag(rid, "test_eval", "the official test set, once, after the sweep chose this trial on held-out data")
        out[number] = acc
        log(f"trial {number} on the official test set ({len(preds):,} images, evaluated once, after the choice): "
            f"test_acc {acc:.4f}")
    if len(out) == 1:
        client.log_metric(parent_id, "best_test_acc", round(next(iter(out.values())), 5))
    return {"test_acc": out}


def join_study(spec: SweepSpec, base: Options, tracking_uri: str | None, experiment: str,
               log: Callable[[str], None], display: Display, live: Every) -> None:
    """A worker started by a coordinator (`sweep --workers N`): work on the coordinator's study, under its parent
    run; the coordinator reaps the journal's dead workers."""
    from vitbench.options import train_config
    from vitbench.tracking import connect

    uri = connect(tracking_uri)
    parent = open_study(spec, train_config(base).epochs, log).user_attrs.get("mlflow_parent_run_id")
    if not parent:
        raise VitbenchError(f"study {spec.study_name!r} has no parent run: start it without --worker")
    work(spec, base, uri, experiment, parent, log, display, live, reap=not spec.journal)


def run_sweep(spec: SweepSpec, base: Options, *, tracking_uri: str | None, experiment: str | None,
              workers: int = 1, argv: list[str] | None = None, log: Callable[[str], None] = print,
              display: Display | None = None, live: Every | None = None) -> dict:
    """Create or resume the study and its parent run, run ``workers`` processes (or work in-process
    with one), then log the best trial and Optuna's plots on the parent run."""
    from mlflow.tracking import MlflowClient

    from vitbench.liveness import Heartbeat
    from vitbench.mlflow_ui import see_line
    from vitbench.options import train_config
    from vitbench.tracking import connect, get_experiment_id

    epochs = train_config(base).epochs
    if spec.n_trials < 1:
        raise VitbenchError(f"--n-trials must be >= 1, got {spec.n_trials}")
    if workers > 1 and spec.storage.startswith("sqlite"):
        raise VitbenchError("several workers cannot share SQLite: --storage journal:optuna.journal on this host, "
                            "--storage postgresql+psycopg://user:pw@host/db across hosts")
    uri = connect(tracking_uri)
    experiment = experiment or f"vitbench-sweep-{spec.dataset}"
    exp_id = get_experiment_id(experiment, uri)
    study = open_study(spec, epochs, log)
    params = {"study_name": spec.study_name, "storage": redact(spec.storage), "space": spec.space_path,
              "n_trials": spec.n_trials, "objective": ",".join(spec.objectives), "pruner": spec.pruner,
              "variant": spec.variant, "dataset": spec.dataset, "epochs": epochs}
    parent_id = parent_run(spec, study, exp_id, params)
    c = counts(study)
    log(f"study {spec.study_name!r} in {redact(spec.storage)}: {sum(c.get(s, 0) for s in COUNTED)} of "
        f"{spec.n_trials} trials done; parent run {parent_id}")
    log(f"the study in a browser: {dashboard_command(spec.storage)} (pip install 'vitbench[dashboard]')")
    log(see_line(uri, exp_id))
    beat = Heartbeat(parent_id)  # a SIGKILLed sweep's parent is ended FAILED by the next command, as runs are
    status = "FAILED"
    try:
        summary = run_workers(spec, base, uri, experiment, parent_id, workers, argv, log, display, live)
        status = "FINISHED"
        return summary
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        beat.stop()
        MlflowClient().set_terminated(parent_id, status)


def run_workers(spec: SweepSpec, base: Options, uri: str, experiment: str, parent_id: str, workers: int,
                argv: list[str] | None, log: Callable[[str], None], display: Display | None,
                live: Every | None) -> dict:
    """The trials, in this process or in ``workers`` processes (Ctrl-C passed to each), then the summary and, for a
    study chosen on held-out data, the chosen trial on the test set."""
    from vitbench.distributed import visible_gpus
    from vitbench.launcher import launch, supervise, without
    from vitbench.options import train_config

    epochs = train_config(base).epochs
    if workers <= 1:
        work(spec, base, uri, experiment, parent_id, log, display, live)
    else:
        gpus = visible_gpus()  # round robin: more workers than GPUs share them
        study = open_study(spec, epochs, lambda s: None)
        procs = launch(without(argv or [], "--workers") + ["--workers", "1"], [str(i) for i in range(workers)],
                       [gpus[i % len(gpus)] if gpus else None for i in range(workers)], {"MLFLOW_TRACKING_URI": uri})
        supervise(procs, lambda: spec.journal and fail_dead_trials(study, spec.heartbeat, True),
                  every=min(spec.heartbeat, 2))
        bad = [p.returncode for p in procs if p.returncode]
        if bad:
            log(f"note: {len(bad)} worker(s) exited with {bad}")
    study = open_study(spec, epochs, lambda s: None)
    summary = finish(spec, study, parent_id, log)
    if train_config(base).val_split > 0:  # chosen on held-out data: the test set once, for the chosen
        summary |= final_test(study, spec, summary, parent_id, uri, log)
    return summary
