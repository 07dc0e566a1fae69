"""`vitbench run` end to end on the CPU: what lands in MLflow, resume, interrupts, bad input."""

from __future__ import annotations

import math
import os

import pytest
import torch

from tests.helpers import TINY, invoke, refused
from vitbench import names
from vitbench.errors import VitbenchError
from vitbench.models import list_variants


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
    refused("run", "--device", "cpu", *args, needle=needle)
    assert not (workdir / "mlflow.db").exists() and not (workdir / "checkpoints").exists()



def test_an_implementation_that_cannot_run_here_is_one_line_before_any_work(workdir, tiny_mnist, monkeypatch):
    """Our Triton kernels on a CPU without Triton's interpreter: `run` and `bench` say so in one line and write
    nothing (bench measures no row first, though its first implementation could run)."""
    from vitbench.models import fused_mlp

    monkeypatch.setattr(fused_mlp, "interpreted", lambda: False)
    refused("run", "--device", "cpu", "--mlp", "triton", needle="mlp 'triton' runs its kernels on CUDA")
    assert not (workdir / "mlflow.db").exists() and not (workdir / "checkpoints").exists()
    refused("bench", "--device", "cpu", "--variants", "sdpa", "--mlp", "torch,triton", "--batch-sizes", "2",
               "--out", str(workdir / "b.csv"), needle="--mlp torch (the same function)")
    assert not (workdir / "b.csv").exists() and not (workdir / "mlflow.db").exists()



def test_missing_data_offline(workdir, monkeypatch):
    import torchvision

    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    refused("run", "--device", "cpu", "--data-dir", str(workdir / "empty"),
         needle="expected train-images-idx3-ubyte")
    assert not (workdir / "mlflow.db").exists()



def test_corrupt_data(workdir, tiny_mnist):
    f = tiny_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes()[:20])
    refused("run", "--device", "cpu", needle="truncated or corrupt")
    assert not (workdir / "mlflow.db").exists()



def test_unwritable_tracking_location(workdir, tiny_mnist):
    refused("run", *TINY, "--tracking-uri", "sqlite:////proc/vitbench/mlflow.db", needle="/proc/vitbench")
    ro = workdir / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a file instead
        (workdir / "file").write_text("")
        refused("run", *TINY, "--tracking-uri", f"sqlite:///{workdir / 'file' / 'mlflow.db'}", needle="file")
    else:
        refused("run", *TINY, "--tracking-uri", f"sqlite:///{ro / 'mlflow.db'}", needle="not writable")



def test_variants_command_lists_every_variant():
    res = invoke("variants")
    assert res.exit_code == 0
    from vitbench import list_variants, names

    for v in list_variants():
        assert v in res.output
    assert all(a in res.output for a in names.ATTENTION)
    assert max(len(line) for line in res.output.splitlines()) <= 80  # no wrapped noise in any terminal



def test_recipes_are_yaml_files_listed_with_their_measurements(workdir, tmp_path):
    from vitbench.recipes import load_recipes, recipe_options

    res = invoke("recipes")
    assert res.exit_code == 0
    for name, r in load_recipes().items():
        assert f"{name}: {r.description}" in res.output and "measured:" in res.output
        assert "H100" in r.measured and "held-out" in r.chosen_by
    assert "\n  --time-budget <= 2 s: lr=0.01" in res.output and "\n  longer: patch_size=4, dim=128" in res.output
    (tmp_path / "odd.yaml").write_text("description: x\nchosen_by: y\nmeasured: z\noptions: {learning_rate: 1}\n")
    with pytest.raises(VitbenchError, match="'learning_rate' is not an option"):
        recipe_options("odd", tmp_path)


def test_a_recipe_grows_with_the_budget_through_its_tiers(tmp_path):
    """``budgets:``: --time-budget T takes the first tier whose up_to is at least T (the last: any longer), its options
    over the recipe's; without a budget, one line; tiers out of order or with wrong options are one line."""
    from vitbench.recipes import recipe_options

    head = "description: x\nchosen_by: y\nmeasured: z\noptions: {lr: 0.01}\n"
    (tmp_path / "grow.yaml").write_text(head + "budgets:\n- {up_to: 5, options: {dim: 32}}\n"
                                        "- {up_to: 50, options: {dim: 64}}\n- options: {dim: 128, lr: 0.002}\n")
    assert [(o.dim, o.lr) for o in (recipe_options("grow", tmp_path, t) for t in (1, 5, 5.5, 50, 300))] == [
        (32, 0.01), (32, 0.01), (64, 0.01), (64, 0.01), (128, 0.002)]
    with pytest.raises(VitbenchError, match="recipe grow fits its model to a budget: give --time-budget SECONDS"):
        recipe_options("grow", tmp_path)
    for tiers in ("- {up_to: 50, options: {}}\n- {up_to: 5, options: {}}\n- options: {}\n",  # not rising
                  "- {up_to: 5, options: {}}\n",  # the last with an up_to
                  "- {up_to: 5, opts: {}}\n- options: {}\n"):
        (tmp_path / "bad.yaml").write_text(head + "budgets:\n" + tiers)
        with pytest.raises(VitbenchError, match="up_to rising, the last without up_to"):
            recipe_options("bad", tmp_path, 10)
    (tmp_path / "bad.yaml").write_text(head + "budgets:\n- options: {dim: wide}\n")
    with pytest.raises(VitbenchError, match="dim"):
        recipe_options("bad", tmp_path, 10)



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "fp8"])
def test_lower_precisions_step_compiled_on_cuda(precision):
    """fp16 compiled and eagerly stepped (its scaler), fp8 compiled inside the whole-step CUDA graph: both train,
    and fp8's inference timing runs."""
    from vitbench.compute import precision_unavailable
    from vitbench.evaluation import infer_images_per_sec
    from vitbench.options import Options, configs
    from vitbench.train import Trainer

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
    assert math.isfinite(loss) and infer_images_per_sec(trainer, x, max_seconds=2) > 0



def test_what_turns_the_whole_step_graph_off_is_said():
    from vitbench.config import TrainConfig
    from vitbench.models import ViTConfig
    from vitbench.train import graph_reason

    def reason(**cfg) -> str:
        return graph_reason(TrainConfig(**cfg), ViTConfig(), torch.device("cuda"), world=1)

    assert reason() == "" and reason(precision="bf16") == "" and reason(precision="fp8") == ""
    assert "gradient scaler" in reason(precision="fp16")
    assert "captures CUDA graphs of its own" in reason(compile=True, compile_mode="reduce-overhead")
    assert reason(compile=True, compile_mode="max-autotune-no-cudagraphs") == ""



def test_fp8_takes_the_linear_layers_a_model_calls_at_sizes_fp8_matmuls_take():
    from vitbench.compute import fp8_layers
    from vitbench.models import create_model

    mlp = ["blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]
    small = dict(dim=32, heads=2, mlp_dim=64, depth=1)
    assert fp8_layers(create_model("sdpa", **small)) == ["blocks.0.attn.qkv", "blocks.0.attn.proj", *mlp]  # no head: 10
    assert fp8_layers(create_model("torch-mha", **small)) == mlp  # nn.MultiheadAttention reads both as tensors
    assert fp8_layers(create_model("naive-msa", **small)) == ["blocks.0.attn.proj", *mlp]  # qkv cut per head
    assert fp8_layers(create_model("sdpa", dim=24, heads=2, mlp_dim=64, depth=1)) == []  # 24: not a multiple of 16
    pytest.importorskip("torchao")
    from vitbench.compute import to_float8

    model = create_model("torch-mha", **small)
    assert to_float8(model) == 2 and sum(type(m).__name__ == "Float8Linear" for m in model.modules()) == 2



def test_ema_averages_the_weights_step_by_step_and_evaluation_uses_it():
    """--ema: after every step ema <- decay * ema + (1 - decay) * weights, from the initial weights; warm-up leaves
    it at the initial weights (and without --ema warms up as before: on CUDA every run does); evaluation sees
    the average and gives the model its own weights back."""
    from vitbench.config import TrainConfig
    from vitbench.evaluation import evaluate
    from vitbench.options import Options, model_config
    from vitbench.train import Trainer

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
    loss, acc, preds = evaluate(trainer, Batches(), y)
    for p, p0 in zip(params, live, strict=True):
        assert torch.equal(p, p0)  # its own weights back
    with torch.no_grad():
        for p, e in zip(params, trainer.ema, strict=True):
            p.copy_(e)
        trainer.model.eval()
        logits = trainer.model(x)
    assert torch.equal(preds, logits.argmax(-1))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, y).item())



def test_a_process_compiles_the_step_for_more_than_eight_models(monkeypatch):
    """A bench compares ten models in one process: each gets its compiled step (torch's default stops
    compiling a function after 8 versions and runs the rest eagerly). Dynamo's tracing alone is checked
    (backend 'eager'), which is what the limit counts."""
    import functools
    from dataclasses import replace

    from torch._dynamo.utils import counters

    from vitbench import compute, train
    from vitbench.options import Options, model_config

    monkeypatch.setattr(compute, "_COMPILED", {})
    monkeypatch.setattr(compute, "_MODELS", set())
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
    assert compute.models_compiled() == 10 and compute.room_to_compile()
    train.Trainer(cfg, model_cfg, steps_per_epoch=10, log=lambda s: None)
    train.Trainer(replace(cfg, compile=False), model_config(Options(dim=64, depth=1, heads=2, mlp_dim=16)),
                  steps_per_epoch=10, log=lambda s: None)
    assert compute.models_compiled() == 10
    monkeypatch.setattr(compute, "_MODELS", {str(i) for i in range(compute.MODELS_PER_PROCESS // 2)})
    assert not compute.room_to_compile()




@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_checkpoint_restored_into_a_captured_step_continues_exactly():
    """Resume under the whole-step CUDA graph: weights, Adam state, the device-tensor LR and the EMA are filled in
    place (the graph keeps pointing at them), so the resumed steps match the uninterrupted ones bit for bit."""
    from vitbench.checkpoints import restore_trainer, trainer_state
    from vitbench.options import Options, configs
    from vitbench.train import Trainer

    cfg, model_cfg = configs(Options(device="cuda", batch_size=32, ema=0.9, dim=32, depth=1, heads=2, mlp_dim=64))
    g = torch.Generator(device="cuda").manual_seed(0)
    batches = [(torch.randn(32, 1, 28, 28, device="cuda", generator=g), torch.arange(32, device="cuda") % 10)
               for _ in range(6)]

    def trainer():
        t = Trainer(cfg, model_cfg, steps_per_epoch=10, log=lambda s: None)
        t.warm_up(*batches[0])
        assert t.graph is not None, t.graph_reason
        return t

    a = trainer()
    for x, y in batches[:3]:
        a.run_step(x, y)
    state = torch.utils._pytree.tree_map(lambda v: v.clone() if torch.is_tensor(v) else v, trainer_state(a, {}))
    for x, y in batches[3:]:
        a.run_step(x, y)
    b = trainer()
    restore_trainer(b, state)
    for x, y in batches[3:]:
        b.run_step(x, y)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
    for e, f in zip(a.ema, b.ema, strict=True):
        assert torch.equal(e, f)


def test_a_fitted_schedule_run_to_its_end_is_not_called_cut():
    """A run that completed the schedule fitted to --time-budget says so; one the budget ended early (a step that
    slowed down), or one cut (`--budget-mode cut`, nothing fitted), says the budget stopped it."""
    from vitbench.train import ended

    assert ended("time_budget", 58, 58) == "its schedule fitted to --time-budget, complete"
    assert ended("time_budget", 1_000, 1_250) == "stopped by time_budget 250 steps before its fitted end"
    assert ended("time_budget", 282, None) == ended("time_budget", 282, 0) == "stopped by time_budget"
    assert ended("epochs", 4_685, None) == "stopped by epochs"
