"""`vitbench run` end to end on the CPU: what lands in MLflow, resume, interrupts, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import write_tiny_mnist
from tests.helpers import TINY, busy_machine, invoke, quiet_machine, refused, runs

PARAMS = ["train.epochs", "train.batch_size", "train.lr", "train.weight_decay", "train.warmup_epochs",
          "train.label_smoothing", "train.precision", "train.seed", "train.loader", "train.max_steps",
          "model.attention", "model.patchify", "model.mlp", "model.pos_embed", "model.pool", "model.dim", "model.depth",
          "model.heads", "model.patch_size", "data.eval_set"]


EPOCH_METRICS = ["train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "train_images_per_sec"]


FINAL_METRICS = ["best_val_acc", "final_val_acc", "train_seconds", "infer_images_per_sec", "peak_memory_mb",
                 "param_count", "steps", "images_seen", "train_images_per_sec_mean"]


TAGS = ["variant", "dataset", "part.attention", "part.patchify", "part.mlp", "part.pos_embed", "part.pool", "gpu",
        "torch_version", "cuda_version", "driver_version", "vitbench_version", "git_commit", "command", "eval_set"]



def test_run_on_real_mnist_records_everything(workdir, real_mnist):
    res = invoke("run", "--variant", "vectorized-msa", "--dataset", "mnist", "--epochs", "1", "--max-steps", "20",
                 "--device", "cpu", "--data-dir", str(real_mnist))
    assert res.exit_code == 0, res.output
    assert "done: vectorized-msa on mnist" in res.output
    (run,) = runs()
    assert run.info.status == "FINISHED"
    for p in PARAMS:
        assert p in run.data.params, p
    assert run.data.params["model.attention"] == "vectorized" and run.data.params["data.eval_set"] == "test"
    for m in EPOCH_METRICS + FINAL_METRICS:
        assert m in run.data.metrics and run.data.metrics[m] == run.data.metrics[m], m  # present, not NaN
    assert run.data.metrics["param_count"] == 137930
    assert run.data.metrics["train_seconds"] > 0 and run.data.metrics["peak_memory_mb"] > 0
    for t in TAGS:
        assert t in run.data.tags, t
    assert run.data.tags["peak_memory_source"] == "process_peak_rss"
    client = MlflowClient()
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [h.step for h in history] == [1]
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    arts |= {a.path for d in ("plots", "checkpoint") for a in client.list_artifacts(run.info.run_id, d)}
    for a in ("config.json", "plots/learning_curves.png", "plots/confusion_matrix.png", "plots/predictions.png",
              "checkpoint/last.pt"):
        assert a in arts, a
    ckpt = torch.load(workdir / "checkpoints" / run.info.run_id / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "train_config", "model_config", "position"} <= set(ckpt)
    assert ckpt["position"]["global_step"] == 20



def test_training_learns_and_both_loaders_agree(workdir, tiny_mnist):
    accs = {}
    for loader in ("gpu", "dataloader"):
        res = invoke("run", "--variant", "sdpa", "--epochs", "4", "--batch-size", "32", "--lr", "5e-3",
                     "--warmup-epochs", "0.5", "--loader", loader, *TINY)
        assert res.exit_code == 0, res.output
    for run in runs():
        accs[run.data.params["train.loader"]] = run.data.metrics["final_val_acc"]
    assert accs["gpu"] > 0.3, accs  # chance is 0.1
    assert accs["gpu"] == pytest.approx(accs["dataloader"], abs=1e-6)  # same data, same order, same numbers



def test_resume_gives_identical_weights_and_average_which_inspect_loads(workdir, tiny_mnist):
    common = ["run", "--variant", "sdpa", "--epochs", "2", "--batch-size", "64", "--dropout", "0.1", "--ema", "0.8",
              *TINY]
    assert invoke(*common, "--run-name", "straight").exit_code == 0
    res = invoke(*common, "--run-name", "halves", "--max-steps", "8")  # 512 / 64 = 8 steps = 1 epoch
    assert res.exit_code == 0, res.output
    by_name = {r.info.run_name: r for r in runs()}
    half = by_name["halves"].info.run_id
    assert by_name["halves"].data.tags["stopped_by"] == "max_steps"
    res = invoke("run", "--resume", half)
    assert res.exit_code == 0, res.output
    a = torch.load(workdir / "checkpoints" / by_name["straight"].info.run_id / "last.pt", weights_only=True)
    b = torch.load(workdir / "checkpoints" / half / "last.pt", weights_only=True)
    assert b["position"]["global_step"] == 16 and b["position"]["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for ea, eb in zip(a["ema"], b["ema"], strict=True):  # the weights' average resumed as it was
        assert torch.equal(ea, eb)
    resumed = MlflowClient().get_run(half)
    assert resumed.info.status == "FINISHED" and len(runs()) == 2 and resumed.data.params["train.ema"] == "0.8"
    assert [m.step for m in MlflowClient().get_metric_history(half, "val_acc")] == [1, 2]
    from vitbench.inspect_run import load_run

    model = load_run(by_name["straight"].info.run_id, None, "checkpoints", None)[0]  # what `inspect` looks at: the average
    params = list(model.parameters())
    assert len(params) == len(a["ema"]) and all(torch.equal(p, e) for p, e in zip(params, a["ema"], strict=True))
    assert not torch.equal(params[0], a["model"][next(n for n, _ in model.named_parameters())])
    res = invoke("run", "--ema", "1.0", *TINY)
    assert res.exit_code == 2 and "ema must be in [0, 1), got 1" in res.output



def test_short_epochs_checkpoint_the_first_and_the_last_and_between_them_by_time(workdir, tiny_mnist, monkeypatch):
    """A checkpoint after the first epoch (a crash always leaves one) and after the last; between them one at most
    every CHECKPOINT_SECONDS, so a run of 0.2-s epochs does not spend its time writing them."""
    from vitbench import loop

    saved, real = [], loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda state, path: (saved.append(state["position"]["epoch"]),
                                                                      real(state, path)))
    for seconds, expected in ((math.inf, [1, 4]), (0.0, [1, 2, 3, 4])):
        saved.clear()
        monkeypatch.setattr(loop, "CHECKPOINT_SECONDS", seconds)
        res = invoke("run", "--variant", "sdpa", "--epochs", "4", "--batch-size", "128", *TINY)
        assert res.exit_code == 0, res.output
        assert saved == expected, (seconds, saved)
    last = torch.load(workdir / "checkpoints" / runs()[0].info.run_id / "last.pt", weights_only=True)
    assert last["position"]["epoch"] == 4 and last["position"]["global_step"] == 16



def test_the_fused_triton_kernels_train_as_torch_s_do(workdir):
    """On the CPU through Triton's interpreter (conftest sets TRITON_INTERPRET=1): our kernels' forward and
    backward (the attention's, and the MLP's GELU) inside real runs; after the same steps from the same seed the
    weights equal torch's. 32 test images: the interpreter evaluates 256 in ~9 s."""
    data = write_tiny_mnist(workdir / "data", n_train=64, n_test=32)
    args = ["--epochs", "1", "--max-steps", "3", "--batch-size", "8", *TINY, "--data-dir", str(data)]
    for attention, mlp in (("sdpa", "torch"), ("triton", "triton")):
        res = invoke("run", "--attention", attention, "--mlp", mlp, *args)
        assert res.exit_code == 0, res.output
    weights = {}
    for run in runs():
        assert run.info.status == "FINISHED"
        assert all(run.data.tags[f"part.{p}"] == run.data.params[f"model.{p}"] for p in ("attention", "mlp"))
        ckpt = torch.load(workdir / "checkpoints" / run.info.run_id / "last.pt", weights_only=True)
        weights[run.data.params["model.attention"]] = ckpt["model"]
    for name, w in weights["sdpa"].items():
        mine = weights["triton"][name]
        if name.endswith("attn.qkv.bias"):  # not the keys' third: a softmax ignores a shift shared by all keys, so
            # that bias's gradient is 0 but for rounding, which AdamW's normalisation turns into lr-sized steps
            w, mine = (torch.cat(t.chunk(3)[::2]) for t in (w, mine))
        torch.testing.assert_close(mine, w, rtol=1e-4, atol=1e-5, msg=name)



def test_nan_loss_fails_the_run_and_names_the_step(workdir, tiny_mnist):
    err = refused("run", "--variant", "sdpa", "--lr", "1e30", "--warmup-epochs", "0", *TINY, needle="NaN")
    assert "at step" in err and "lower --lr" in err
    (run,) = runs()
    assert run.info.status == "FAILED" and "NaN" in run.data.tags["error"]



def test_no_run_is_left_running(workdir, tiny_mnist):
    """After every path above a run ends; here, an exception inside training ends it FAILED."""
    import vitbench.loop

    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    orig = vitbench.loop.evaluate
    vitbench.loop.evaluate = boom
    try:
        res = invoke("run", "--epochs", "1", *TINY)
    finally:
        vitbench.loop.evaluate = orig
    assert res.exit_code != 0
    (run,) = runs()
    assert run.info.status == "FAILED" and "simulated crash" in run.data.tags["error"]



def test_recipe_sets_options_and_explicit_flags_win(workdir, tiny_mnist):
    from vitbench.recipes import recipe_options

    assert recipe_options("mnist-fast").attention == "triton"  # overridden below: Triton's interpreter is slow
    res = invoke("run", "--recipe", "mnist-fast", "--batch-size", "32", "--max-steps", "3", "--epochs", "1",
                 "--precision", "fp32", "--no-compile", "--attention", "vectorized", *TINY)
    assert res.exit_code == 0, res.output
    (run,) = runs()
    p = run.data.params
    assert (p["train.lr"], p["model.attention"], p["model.patchify"]) == ("0.01", "vectorized", "unfold")
    # explicit flags win, model flags included (TINY sets dim 32 over the recipe's preset)
    assert (p["train.batch_size"], p["train.precision"], p["train.compile"], p["model.dim"]) == ("32", "fp32", "False", "32")
    assert run.data.tags["recipe"] == "mnist-fast"
    refused("run", "--recipe", "imagenet-1k-in-1s", *TINY, needle="valid: mnist-10s, mnist-budget, mnist-fast, mnist-strong")



@pytest.mark.parametrize("recipe", ["mnist-strong", "mnist-10s"])
def test_strong_recipes_set_model_and_augmentation(workdir, tiny_mnist, recipe):
    res = invoke("run", "--recipe", recipe, "--max-steps", "2", "--epochs", "1", "--batch-size", "32",
                 "--no-compile", "--precision", "fp32", "--depth", "1", "--device", "cpu", "--attention", "sdpa")
    assert res.exit_code == 0, res.output
    (run,) = runs()
    p = run.data.params
    assert (p["model.patch_size"], p["model.dim"], p["model.depth"], p["train.augment"]) == ("4", "128", "1", "crop")
    if recipe == "mnist-10s":
        assert (p["model.pool"], p["model.pos_embed"], p["model.patch_drop"]) == ("mean", "sincos2d", "0.25")
    assert run.data.metrics["param_count"] > 100_000  # dim 128 at patch 4, not the mnist preset



def test_patch_dropout_trains_and_is_recorded(workdir, tiny_mnist):
    # compiled inside a CUDA graph: tests/unit/test_models.py::test_patch_dropout_draws_anew_at_each_cuda_graph_replay
    res = invoke("run", "--patch-drop", "0.25", "--no-compile", "--epochs", "1", "--max-steps", "3", "--batch-size", "32",
                 *TINY)
    assert res.exit_code == 0, res.output
    (run,) = runs()
    assert run.data.params["model.patch_drop"] == "0.25" and run.info.status == "FINISHED"
    assert 0 <= run.data.metrics["val_acc"] <= 1 and math.isfinite(run.data.metrics["train_loss"])
    res = invoke("run", "--patch-drop", "1", *TINY)
    assert res.exit_code != 0 and "patch_drop must be in [0, 1)" in res.output and "Traceback" not in res.output



def test_fp16_trains_with_a_gradient_scaler_like_fp32(workdir, tiny_mnist):
    """fp16 autocast and its gradient scaler run on the CPU too: the step unscales before clipping, so the
    run learns as the fp32 one does."""
    for precision in ("fp32", "fp16"):
        res = invoke("run", "--precision", precision, "--no-compile", "--epochs", "1", "--max-steps", "6",
                     "--batch-size", "32", *TINY)
        assert res.exit_code == 0, res.output
    by = {r.data.params["train.precision"]: r.data.metrics for r in runs()}
    assert by["fp16"]["train_loss"] == pytest.approx(by["fp32"]["train_loss"], rel=0.02)
    assert by["fp16"]["val_acc"] == pytest.approx(by["fp32"]["val_acc"], abs=0.05)



def test_fp8_runs_end_to_end_where_torch_can_run_it(workdir, tiny_mnist, monkeypatch):
    """The fp8 path whole -- conversion, step, evaluation, inference timing, checkpoint -- on the CPU, where torch's
    scaled matmul runs (slowly) though vitbench refuses fp8 there; evaluation must not use inference_mode, under
    which autocast casts torchao's float8 tensors."""
    pytest.importorskip("torchao")
    from vitbench import runner, train

    monkeypatch.setattr(train, "precision_unavailable", lambda precision, device: "")
    monkeypatch.setattr(runner, "precision_unavailable", lambda precision, device: "")
    res = invoke("run", "--precision", "fp8", "--no-compile", "--epochs", "1", "--max-steps", "4", "--batch-size",
                 "32", *TINY)
    assert res.exit_code == 0, res.output
    (run,) = runs()
    assert run.info.status == "FINISHED" and "precision=fp8 (4 Linear layers in fp8)" in run.data.tags["fast_path"]
    assert math.isfinite(run.data.metrics["val_loss"]) and run.data.metrics["infer_images_per_sec"] > 0



def test_naive_parts_are_never_compiled_and_say_so_once(workdir, tiny_mnist):
    res = invoke("run", "--variant", "naive-msa", "--compile", "--epochs", "1", "--max-steps", "2",
                 "--batch-size", "8", *TINY)
    assert res.exit_code == 0, res.output
    assert res.output.count("note: torch.compile not used: off for the naive loop implementations") == 1
    (run,) = runs()
    assert "compile" not in run.data.tags["fast_path"] and run.data.params["train.compile"] == "True"



def test_a_bounded_naive_run_evaluates_through_its_batched_twin_and_says_so(workdir, tiny_mnist):
    """The loops are timed as they are; their accuracy is computed by the vectorized twin holding the same weights
    (the same function), so a --time-budget run does not wait minutes in a silent evaluation."""
    from vitbench.data import normalize
    from vitbench.models import ViT, ViTConfig

    res = invoke("run", "--variant", "naive-msa", "--epochs", "1", "--time-budget", "30", "--max-steps", "4",
                 "--batch-size", "16", *TINY)
    assert res.exit_code == 0, res.output
    assert "evaluating on the test set (256 images; the batched twin of the loop parts" in res.output
    assert "timing inference (batch" in res.output
    (run,) = runs()
    assert run.data.tags["eval_model"].startswith("the batched twin of the loop parts")
    ckpt = torch.load(workdir / "checkpoints" / run.info.run_id / "last.pt", weights_only=True)
    naive = ViT(ViTConfig(**ckpt["model_config"]))
    naive.load_state_dict(ckpt["model"])
    naive.eval()
    from vitbench.data import load_splits

    splits = load_splits("mnist", str(tiny_mnist))
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (splits.info.mean, splits.info.std))
    with torch.inference_mode():  # the loops themselves, on the whole test set
        preds = naive(normalize(splits.eval_images, mean, std)).argmax(-1)
    assert run.data.metrics["final_val_acc"] == pytest.approx((preds == splits.eval_labels).float().mean().item())




def test_a_run_logs_its_model_as_mlflow_does_and_registers_it_when_asked(workdir, tiny_mnist):
    """A small model becomes the run's MLflow logged model (runs:/RUN/model) with a signature and an input example,
    its final metrics linked to it and to the evaluation data; --register puts it in the model registry;
    --no-log-model leaves it out (the checkpoint is there either way)."""
    import mlflow

    res = invoke("run", "--epochs", "1", "--register", "tiny-vit", *TINY)
    assert res.exit_code == 0, res.output
    (run,) = runs()
    (model,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert model.source_run_id == run.info.run_id and model.name == "model"
    linked = {m.key: m for m in model.metrics}
    assert linked["final_val_acc"].value == run.data.metrics["final_val_acc"]
    assert linked["final_val_acc"].dataset_name == "mnist:test"
    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 1, 28, 28)
    (version,) = MlflowClient().search_model_versions("name = 'tiny-vit'")
    assert version.run_id == run.info.run_id
    assert invoke("run", "--epochs", "1", "--no-log-model", *TINY).exit_code == 0
    assert len(mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")) == 1
    refused("run", "--no-log-model", "--register", "x", *TINY, needle="--register NAME registers the MLflow model")



def test_target_acc_stops_where_the_evaluation_set_reaches_it_and_the_report_uses_that_time(workdir, tiny_mnist):
    """`--target-acc`: checked ten times an epoch, the checks' time left out of training; the run stops at the first
    check that reaches it and records when (time_to_target, steps_to_target); the report's time to target is that."""
    import mlflow
    import pandas as pd

    res = invoke("run", "--epochs", "3", "--batch-size", "16", "--target-acc", "0.15", *TINY)
    assert res.exit_code == 0, res.output
    (run,) = runs()
    m = run.data.metrics
    assert run.data.tags["stopped_by"] == "target_acc" and "reaching 15.00%" in run.data.tags["mlflow.note.content"]
    assert 0 < m["time_to_target"] <= m["train_seconds"] and m["steps_to_target"] == m["steps"]
    spe = len([h for h in MlflowClient().get_metric_history(run.info.run_id, "val_acc")])  # epochs evaluated
    assert m["steps"] < 3 * 1000 // 16 and spe <= 3
    res = invoke("report", "--experiment", "vitbench-mnist", "--out", workdir / "rep", "--target", "0.15")
    assert res.exit_code == 0, res.output
    summary = pd.read_csv(workdir / "rep" / "summary.csv")
    assert summary["time_to_target_s"].iloc[0] == pytest.approx(m["time_to_target"], rel=1e-6)
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    refused("run", "--target-acc", "1.5", *TINY, needle="target_acc must be in (0, 1]")


def test_profile_logs_where_the_step_goes_and_puts_the_weights_back(workdir, tiny_mnist):
    """`run --profile 3`: three more steps of the timed step profiled after training, by kind of op (metrics
    train_prof_<kind>_ms, artifacts profile/train/trace.json and breakdown.csv); the model logged is the trained
    one, as a run without --profile logs it, and its accuracy the same."""
    import json

    import mlflow
    import torch

    from vitbench.profiling import KINDS

    for extra in ([], ["--profile", "3"]):
        res = invoke("run", "--epochs", "1", "--batch-size", "32", *extra, *TINY)
        assert res.exit_code == 0, res.output
    plain, profiled = sorted(runs(), key=lambda r: "train_prof_matmul_ms" in r.data.metrics)
    m = profiled.data.metrics
    assert {f"train_prof_{k}_ms" for k in KINDS} <= m.keys() and m["train_prof_matmul_ms"] > 0
    assert not any(k.startswith("train_prof_") for k in plain.data.metrics)
    assert m["final_val_acc"] == plain.data.metrics["final_val_acc"]
    client = MlflowClient()
    assert {a.path for a in client.list_artifacts(profiled.info.run_id, "profile/train")} == \
        {"profile/train/trace.json", "profile/train/breakdown.csv"}
    trace = client.download_artifacts(profiled.info.run_id, "profile/train/trace.json", str(workdir))
    assert json.loads(Path(trace).read_text())["traceEvents"]
    weights = [mlflow.pytorch.load_model(f"runs:/{r.info.run_id}/model").state_dict() for r in (plain, profiled)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_report_says_where_each_implementation_s_step_goes(workdir, tiny_mnist, monkeypatch):
    """Two profiled runs that differ in their attention: the report's 'Where the step goes' has their ms per step
    by kind, a stacked bar per implementation and a sentence naming the kinds that differ most, in ms; a third,
    timed on a busy machine, is left out of it."""
    import re

    with monkeypatch.context() as m:
        busy_machine(m)
        res = invoke("run", "--epochs", "1", "--batch-size", "32", "--attention", "vectorized", "--profile", "2", "--seed", "1",
                     *TINY)
        assert res.exit_code == 0, res.output
    quiet_machine(monkeypatch)  # the suite's own parallel workers would make this machine look busy
    for attention in ("sdpa", "vectorized"):
        res = invoke("run", "--epochs", "1", "--batch-size", "32", "--attention", attention, "--profile", "2", *TINY)
        assert res.exit_code == 0, res.output
    res = invoke("report", "--experiment", "vitbench-mnist", "--out", workdir / "rep")
    assert res.exit_code == 0, res.output
    text = (workdir / "rep" / "REPORT.md").read_text()
    assert "## Where the step goes (training runs)" in text and (workdir / "rep" / "step_breakdown_training.png").is_file()
    sentence = re.findall(r"^- (.+) vs (.+): ([\d.]+) ms (less|more) (\S+).* per step \(([\d.]+) vs ([\d.]+) ms profiled\)\.$",
                          text, re.M)
    assert len(sentence) == 1 and "attention=vectorized" in sentence[0][0] + sentence[0][1], text
    assert "1 profiled run(s) timed on a busy machine left out." in text
    client = MlflowClient()
    (report_run,) = [r for r in runs() if r.data.tags.get("mlflow.runName") == "report"]
    assert "step_breakdown_training.png" in {a.path for a in client.list_artifacts(report_run.info.run_id)}


def done_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("done: "))


def test_a_time_budget_fits_the_schedule_or_cuts_it(workdir, tiny_mnist):
    """`--time-budget T` (fit, the default): the step's time measured on the first steps, the schedule planned for
    the steps that fit in T (at most --epochs') and decayed to its end there; `--budget-mode cut`: the --epochs
    schedule cut at T, its learning rate still high. Both hold the budget and say which they did."""
    lrs = {}
    res = invoke("run", "--epochs", "1", "--batch-size", "16", "--time-budget", "30", *TINY)  # --epochs fits in it
    assert res.exit_code == 0 and "the whole --epochs schedule" in res.output, res.output
    (whole,) = runs()
    assert whole.data.tags["stopped_by"] == "epochs"
    for mode in ("fit", "cut"):
        res = invoke("run", "--epochs", "1000", "--batch-size", "16", "--time-budget", "5", "--budget-mode", mode,
                     "--lr", "0.001", *TINY)
        assert res.exit_code == 0, res.output
        (run,) = [r for r in runs() if r.data.params["train.budget_mode"] == mode and r.info.run_id != whole.info.run_id]
        m = run.data.metrics
        # the budget stops the run before a step its last step's time says would end past it: a busy machine's
        # slower step may still end a little past
        assert run.data.tags["stopped_by"] == "time_budget" and m["train_seconds"] <= 5.5
        lrs[mode] = [h.value for h in MlflowClient().get_metric_history(run.info.run_id, "lr")][-1]
        if mode == "fit":
            assert "the schedule fitted to" in res.output and "its schedule fitted to" in run.data.tags["mlflow.note.content"]
            # re-measured as it goes, so a machine that slows down mid-run still ends near the plan's end
            assert 0.7 * m["budget_planned_steps"] <= m["steps"] <= m["budget_planned_steps"]
            left = int(m["budget_planned_steps"] - m["steps"])  # the done line says whether the schedule was complete
            said = f"stopped by time_budget {left:,} steps before its fitted end" if left else \
                "its schedule fitted to --time-budget, complete"
            assert f"{m['steps']:.0f} steps, {said}) |" in done_line(res.output), res.output
        else:
            assert "budget_planned_steps" not in m
            assert f"{m['steps']:.0f} steps, stopped by time_budget) |" in done_line(res.output), res.output
    assert lrs["fit"] < 0.2 * 0.001 < 0.5 * 0.001 < lrs["cut"]  # cosine: 0.2 of the peak at 70 % of the way
