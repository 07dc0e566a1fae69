"""`vitbench run` end to end on the CPU: what lands in MLflow, resume, interrupts, bad input."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, write_tiny_mnist
from tests.helpers import TINY, invoke, runs
from vitbench import names
from vitbench.errors import VitbenchError
from vitbench.models import list_variants

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


def test_resume_gives_identical_weights(workdir, tiny_mnist):
    common = ["run", "--variant", "sdpa", "--epochs", "2", "--batch-size", "64", "--dropout", "0.1", *TINY]
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
    resumed = MlflowClient().get_run(half)
    assert resumed.info.status == "FINISHED" and len(runs()) == 2
    assert [m.step for m in MlflowClient().get_metric_history(half, "val_acc")] == [1, 2]


@pytest.mark.e2e  # a real process, a real signal
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_run_killed_with_checkpoint(workdir, tiny_mnist, sig):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "vitbench", "run", "--variant", "sdpa", "--epochs", "1000",
                             "--batch-size", "16", *TINY], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it is training
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("epoch 1:"):
            break
    else:
        proc.kill()
        pytest.fail("run never started: " + "".join(lines))
    time.sleep(0.5)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + out
    assert "Traceback" not in out
    (run,) = runs()
    assert run.info.status == "KILLED"
    ckpt = workdir / "checkpoints" / run.info.run_id / "last.pt"
    steps = torch.load(ckpt, weights_only=True)["position"]["global_step"]
    assert ckpt.exists() and steps >= 32
    # what it did up to the stop is kept: time, steps, images, throughput, and a quick validation pass
    m, tags = run.data.metrics, run.data.tags
    assert m["steps"] == steps and m["images_seen"] == steps * 16 and m["train_seconds"] > 0
    assert m["train_images_per_sec_mean"] == pytest.approx(m["images_seen"] / m["train_seconds"])
    assert 0 <= m["final_val_acc"] <= 1 and m["final_val_images"] == 256  # the tiny test set fits in 5 s
    assert tags["stopped_by"] == "interrupt" and tags["final_eval"] == "test: all 256 images"


def _bad(*args: str, needle: str):
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert needle in err, err
    assert "Traceback" not in res.output
    return err


@pytest.mark.parametrize("args,needle", [
    (["--variant", "vit-9000"], f"valid: {', '.join(list_variants())}"),
    (["--dataset", "imagenet"], f"valid: {', '.join(names.DATASETS)}, "),
    (["--patch-size", "5"], "patch size 5 does not divide image size 28"),
    (["--heads", "3"], "dim 64 is not divisible by heads 3"),
    (["--precision", "fp4"], f"valid: {', '.join(names.PRECISIONS)}"),
    (["--precision", "fp8"], "--precision fp8 needs an NVIDIA GPU with FP8 tensor cores"),
    (["--compile-mode", "turbo"], f"valid: {', '.join(names.COMPILE_MODES)}"),
    (["--augment", "mixup"], f"valid: auto, {', '.join(names.AUGMENTS)}"),
    (["--attention", "flex"], "attention 'flex' cannot train on the CPU"),
])
def test_bad_options_are_one_line_and_write_nothing(workdir, tiny_mnist, args, needle):
    _bad("run", "--device", "cpu", *args, needle=needle)
    assert not (workdir / "mlflow.db").exists() and not (workdir / "checkpoints").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("part,reference", [("attention", "sdpa"), ("mlp", "torch")])
def test_the_fused_triton_kernels_train_as_torch_s_do(workdir, part, reference):
    """On the CPU through Triton's interpreter (conftest sets TRITON_INTERPRET=1): our kernels' forward and
    backward (the attention's; the MLP's GELU) inside real runs; after the same steps from the same seed the
    weights equal torch's. 32 test images: the interpreter evaluates 256 in ~9 s."""
    data = write_tiny_mnist(workdir / "data", n_train=64, n_test=32)
    args = ["--epochs", "1", "--max-steps", "3", "--batch-size", "8", *TINY, "--data-dir", str(data)]
    for impl in (reference, "triton"):
        res = invoke("run", f"--{part}", impl, *args)
        assert res.exit_code == 0, res.output
    weights = {}
    for run in runs():
        assert run.info.status == "FINISHED" and run.data.tags[f"part.{part}"] == run.data.params[f"model.{part}"]
        ckpt = torch.load(workdir / "checkpoints" / run.info.run_id / "last.pt", weights_only=True)
        weights[run.data.params[f"model.{part}"]] = ckpt["model"]
    for name, w in weights[reference].items():
        mine = weights["triton"][name]
        if name.endswith("attn.qkv.bias"):  # not the keys' third: a softmax ignores a shift shared by all keys, so
            # that bias's gradient is 0 but for rounding, which AdamW's normalisation turns into lr-sized steps
            w, mine = (torch.cat(t.chunk(3)[::2]) for t in (w, mine))
        torch.testing.assert_close(mine, w, rtol=1e-4, atol=1e-5, msg=name)


def test_an_implementation_that_cannot_run_here_is_one_line_before_any_work(workdir, tiny_mnist, monkeypatch):
    """Our Triton kernels on a CPU without Triton's interpreter: `run` and `bench` say so in one line and write
    nothing (bench measures no row first, though its first implementation could run)."""
    from vitbench.models import fused_mlp

    monkeypatch.setattr(fused_mlp, "interpreted", lambda: False)
    _bad("run", "--device", "cpu", "--mlp", "triton", needle="mlp 'triton' runs its kernels on CUDA")
    assert not (workdir / "mlflow.db").exists() and not (workdir / "checkpoints").exists()
    _bad("bench", "--device", "cpu", "--variants", "sdpa", "--mlp", "torch,triton", "--batch-sizes", "2",
               "--out", str(workdir / "b.csv"), needle="--mlp torch (the same function)")
    assert not (workdir / "b.csv").exists() and not (workdir / "mlflow.db").exists()


def test_missing_data_offline(workdir, monkeypatch):
    import torchvision

    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    _bad("run", "--device", "cpu", "--data-dir", str(workdir / "empty"),
         needle="expected train-images-idx3-ubyte")
    assert not (workdir / "mlflow.db").exists()


def test_corrupt_data(workdir, tiny_mnist):
    f = tiny_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes()[:20])
    _bad("run", "--device", "cpu", needle="truncated or corrupt")
    assert not (workdir / "mlflow.db").exists()


def test_unwritable_tracking_location(workdir, tiny_mnist):
    _bad("run", *TINY, "--tracking-uri", "sqlite:////proc/vitbench/mlflow.db", needle="/proc/vitbench")
    ro = workdir / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a file instead
        (workdir / "file").write_text("")
        _bad("run", *TINY, "--tracking-uri", f"sqlite:///{workdir / 'file' / 'mlflow.db'}", needle="file")
    else:
        _bad("run", *TINY, "--tracking-uri", f"sqlite:///{ro / 'mlflow.db'}", needle="not writable")


def test_nan_loss_fails_the_run_and_names_the_step(workdir, tiny_mnist):
    err = _bad("run", "--variant", "sdpa", "--lr", "1e30", "--warmup-epochs", "0", *TINY, needle="NaN")
    assert "at step" in err and "lower --lr" in err
    (run,) = runs()
    assert run.info.status == "FAILED" and "NaN" in run.data.tags["error"]


def test_no_run_is_left_running(workdir, tiny_mnist):
    """After every path above a run ends; here, an exception inside training ends it FAILED."""
    import vitbench.train as train_mod

    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    orig = train_mod.Trainer.evaluate
    train_mod.Trainer.evaluate = boom
    try:
        res = invoke("run", "--epochs", "1", *TINY)
    finally:
        train_mod.Trainer.evaluate = orig
    assert res.exit_code != 0
    (run,) = runs()
    assert run.info.status == "FAILED" and "simulated crash" in run.data.tags["error"]


def test_variants_command_lists_every_variant():
    res = invoke("variants")
    assert res.exit_code == 0
    from vitbench import list_variants, names

    for v in list_variants():
        assert v in res.output
    assert all(a in res.output for a in names.ATTENTION)
    assert max(len(line) for line in res.output.splitlines()) <= 80  # no wrapped noise in any terminal


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
    _bad("run", "--recipe", "imagenet-1k-in-1s", *TINY, needle="valid: mnist-10s, mnist-fast, mnist-strong")


def test_recipes_are_yaml_files_listed_with_their_measurements(workdir, tmp_path):
    from vitbench.recipes import load_recipes, recipe_options

    res = invoke("recipes")
    assert res.exit_code == 0
    for name, r in load_recipes().items():
        assert f"{name}: {r.description}" in res.output and "measured:" in res.output
        assert "H100" in r.measured and "held-out" in r.chosen_by
    (tmp_path / "odd.yaml").write_text("description: x\nchosen_by: y\nmeasured: z\noptions: {learning_rate: 1}\n")
    with pytest.raises(VitbenchError, match="'learning_rate' is not an option"):
        recipe_options("odd", tmp_path)


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
    # compiled inside a CUDA graph: tests/test_models.py::test_patch_dropout_draws_anew_at_each_cuda_graph_replay
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "fp8"])
def test_lower_precisions_step_compiled_on_cuda(precision):
    """fp16 compiled and eagerly stepped (its scaler), fp8 compiled inside the whole-step CUDA graph: both train,
    and fp8's inference timing runs."""
    from vitbench.options import Options, configs
    from vitbench.train import Trainer, precision_unavailable

    if why := precision_unavailable(precision, torch.device("cuda")):
        pytest.skip(why)
    cfg, model_cfg = configs(Options(precision=precision, device="cuda", batch_size=64, compile=True))
    trainer = Trainer(cfg, model_cfg, steps_per_epoch=10, log=lambda s: None)
    g = torch.Generator(device="cuda").manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28, device="cuda", generator=g), torch.arange(64, device="cuda") % 10
    trainer.warm_up(x, y)
    assert (trainer.graph is not None) == (precision == "fp8"), trainer.graph_reason
    for _ in range(5):
        trainer.run_step(x, y)
    loss = trainer.read_stats()[0]
    assert math.isfinite(loss) and trainer.infer_images_per_sec(x, max_seconds=2) > 0


def test_what_turns_the_whole_step_graph_off_is_said():
    from types import SimpleNamespace

    from vitbench.models import ViTConfig
    from vitbench.train import TrainConfig, Trainer

    def reason(**cfg) -> str:
        return Trainer._graph_reason(SimpleNamespace(cfg=TrainConfig(**cfg), model_cfg=ViTConfig(),
                                                     device=torch.device("cuda"), world=1))

    assert reason() == "" and reason(precision="bf16") == "" and reason(precision="fp8") == ""
    assert "gradient scaler" in reason(precision="fp16")
    assert "captures CUDA graphs of its own" in reason(compile=True, compile_mode="reduce-overhead")
    assert reason(compile=True, compile_mode="max-autotune-no-cudagraphs") == ""


def test_fp8_takes_the_linear_layers_a_model_calls_at_sizes_fp8_matmuls_take():
    from vitbench.models import create_model
    from vitbench.train import fp8_layers

    mlp = ["blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]
    small = dict(dim=32, heads=2, mlp_dim=64, depth=1)
    assert fp8_layers(create_model("sdpa", **small)) == ["blocks.0.attn.qkv", "blocks.0.attn.proj", *mlp]  # no head: 10
    assert fp8_layers(create_model("torch-mha", **small)) == mlp  # nn.MultiheadAttention reads both as tensors
    assert fp8_layers(create_model("naive-msa", **small)) == ["blocks.0.attn.proj", *mlp]  # qkv cut per head
    assert fp8_layers(create_model("sdpa", dim=24, heads=2, mlp_dim=64, depth=1)) == []  # 24: not a multiple of 16
    pytest.importorskip("torchao")
    from vitbench.train import to_float8

    model = create_model("torch-mha", **small)
    assert to_float8(model) == 2 and sum(type(m).__name__ == "Float8Linear" for m in model.modules()) == 2


def test_compiled_step_trains_like_the_eager_one(workdir, tiny_mnist):
    """The fast path's step function, compiled (on CUDA it is also captured in a graph), runs on the CPU
    and computes what the eager step computes."""
    for flag in ("--no-compile", "--compile"):
        res = invoke("run", flag, "--epochs", "1", "--max-steps", "4", "--batch-size", "32", "--lr", "3e-3", *TINY)
        assert res.exit_code == 0, res.output
        assert ("compiling (torch.compile" in res.output) == (flag == "--compile")
    by = {r.data.params["train.compile"]: r for r in runs()}
    assert "compile" in by["True"].data.tags["fast_path"] and "compile" not in by["False"].data.tags["fast_path"]
    eager, compiled = by["False"].data.metrics, by["True"].data.metrics
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-3)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-3)


def test_ema_averages_the_weights_step_by_step_and_evaluation_uses_it():
    """--ema: after every step ema <- decay * ema + (1 - decay) * weights, from the initial weights; warm-up leaves
    it at the initial weights (and without --ema warms up as before: on CUDA every run does); evaluation sees
    the average and gives the model its own weights back."""
    from vitbench.options import Options, model_config
    from vitbench.train import TrainConfig, Trainer

    model_cfg = model_config(Options(dim=16, depth=1, heads=2, mlp_dim=32))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    Trainer(TrainConfig(device="cpu", batch_size=8), model_cfg, steps_per_epoch=10, log=lambda s: None).warm_up(x, y)
    trainer = Trainer(TrainConfig(device="cpu", batch_size=8, ema=0.9), model_cfg, steps_per_epoch=10,
                      log=lambda s: None)
    params = list(trainer.model.parameters())
    expected = [p.detach().clone() for p in params]
    trainer.warm_up(x, y)
    for e, p in zip(trainer.ema, expected, strict=True):
        assert torch.equal(e, p)
    for _ in range(3):
        trainer.step(x, y)
        expected = [0.9 * e + 0.1 * p.detach() for e, p in zip(expected, params, strict=True)]
    for e, want in zip(trainer.ema, expected, strict=True):
        torch.testing.assert_close(e, want)
    assert not any(torch.equal(e, p) for e, p in zip(trainer.ema, params, strict=True))  # they differ by now

    class Batches:
        def batches(self):
            yield x, y

    live = [p.detach().clone() for p in params]
    loss, acc, preds = trainer.evaluate(Batches(), y)
    for p, p0 in zip(params, live, strict=True):
        assert torch.equal(p, p0)  # its own weights back
    with torch.no_grad():
        for p, e in zip(params, trainer.ema, strict=True):
            p.copy_(e)
        trainer.model.eval()
        logits = trainer.model(x)
    assert torch.equal(preds, logits.argmax(-1))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, y).item())


def test_ema_in_a_run_resumes_exactly_and_is_what_inspect_loads(workdir, tiny_mnist):
    common = ["run", "--epochs", "2", "--batch-size", "64", "--ema", "0.8", *TINY]
    assert invoke(*common, "--run-name", "straight").exit_code == 0
    res = invoke(*common, "--run-name", "halves", "--max-steps", "8")
    assert res.exit_code == 0, res.output
    by_name = {r.info.run_name: r for r in runs()}
    half = by_name["halves"].info.run_id
    assert by_name["halves"].data.params["train.ema"] == "0.8"
    assert invoke("run", "--resume", half).exit_code == 0
    a = torch.load(workdir / "checkpoints" / by_name["straight"].info.run_id / "last.pt", weights_only=True)
    b = torch.load(workdir / "checkpoints" / half / "last.pt", weights_only=True)
    for ea, eb in zip(a["ema"], b["ema"], strict=True):  # the average resumed as it was
        assert torch.equal(ea, eb)
    from vitbench.inspect_run import load_run

    model = load_run(by_name["straight"].info.run_id, None, "checkpoints", None)[0]  # what `inspect` looks at
    params = list(model.parameters())
    assert len(params) == len(a["ema"]) and all(torch.equal(p, e) for p, e in zip(params, a["ema"], strict=True))
    assert not torch.equal(params[0], a["model"][next(n for n, _ in model.named_parameters())])
    res = invoke("run", "--ema", "1.0", *TINY)
    assert res.exit_code == 2 and "ema is a decay per step in [0, 1)" in res.output


def test_every_new_trainer_reuses_the_compiled_step():
    """A suite or a sweep builds a Trainer per run in one process. Each must reuse the compiled step, not
    compile it anew: torch stops compiling a function after 8 versions and runs it eagerly from then on
    (a suite's ninth run trained 2.2x slower on an H100 before this was fixed)."""
    from torch._dynamo.utils import counters

    from vitbench.options import Options, model_config
    from vitbench.train import TrainConfig, Trainer

    model_cfg = model_config(Options(dim=16, depth=1, heads=2, mlp_dim=32))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    graphs = []
    for seed in range(10):
        cfg = TrainConfig(compile=True, device="cpu", batch_size=8, seed=seed, precision="bf16")
        Trainer(cfg, model_cfg, steps_per_epoch=10, log=lambda s: None).step(x, y)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[1:] == [graphs[0]] * 9, graphs


def test_a_process_compiles_the_step_for_more_than_eight_models(monkeypatch):
    """A bench compares ten models in one process: each gets its compiled step (torch's default stops
    compiling a function after 8 versions and runs the rest eagerly). Dynamo's tracing alone is checked
    (backend 'eager'), which is what the limit counts."""
    import functools
    from dataclasses import replace

    from torch._dynamo.utils import counters

    from vitbench import train
    from vitbench.options import Options, model_config

    monkeypatch.setattr(train, "_COMPILED", {})
    monkeypatch.setattr(train, "_MODELS", set())
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    graphs = []
    for dim in range(8, 8 + 4 * 10, 4):  # ten distinct models
        model_cfg = model_config(Options(dim=dim, depth=1, heads=2, mlp_dim=16))
        cfg = train.TrainConfig(compile=True, device="cpu", batch_size=4)
        train.Trainer(cfg, model_cfg, steps_per_epoch=10, log=lambda s: None).step(x, y)
        graphs.append(counters["stats"]["unique_graphs"])
    assert all(b > a for a, b in zip(graphs, graphs[1:], strict=False)), graphs  # a new graph for every model
    # the process counts them (a warm process or a kept suite worker makes way for a fresh one past half the
    # limit); the same model again is no new version, nor is an uncompiled one
    assert train.models_compiled() == 10 and train.room_to_compile()
    train.Trainer(cfg, model_cfg, steps_per_epoch=10, log=lambda s: None)
    train.Trainer(replace(cfg, compile=False), model_config(Options(dim=64, depth=1, heads=2, mlp_dim=16)),
                  steps_per_epoch=10, log=lambda s: None)
    assert train.models_compiled() == 10
    monkeypatch.setattr(train, "_MODELS", {str(i) for i in range(train.MODELS_PER_PROCESS // 2)})
    assert not train.room_to_compile()


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


@pytest.mark.e2e
def test_recipes_ship_in_the_wheel(tmp_path):
    """`pip install .` (not editable) brings the recipes: the wheel is built, installed into a fresh virtual
    environment (its dependencies, torch among them, seen from the system's), and lists and loads them there."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("vitbench-*.whl")
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    code = ("import vitbench, vitbench.recipes as r; print(vitbench.__file__); "
            "print(sorted(r.load_recipes())); print(r.recipe_options('mnist-fast').batch_size)")
    out = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    where, names, batch = out.stdout.splitlines()[-3:]
    assert where.startswith(str(env)), where  # the installed copy, not the checkout
    assert names == "['mnist-10s', 'mnist-fast', 'mnist-strong']" and batch == "512"
