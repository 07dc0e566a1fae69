from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import BENCH_TINY
from vitbench import names
from vitbench.bench import BenchOptions, Entry, decay_batch, measure_cell, plan, run_bench
from vitbench.cli import app
from vitbench.models import list_variants, resolve_config


def _entry() -> Entry:
    return Entry("sdpa", resolve_config("sdpa", depth=1, dim=32, heads=2, mlp_dim=64))



def test_bench_interrupted_while_logging_shows_its_table_and_says_where_the_rows_are(workdir, monkeypatch):
    """Ctrl-C (or a SIGTERM) after the measurements, while the MLflow run is being written: the table was shown,
    the CSV kept, and the message says so rather than 'nothing was recorded'."""
    import vitbench.bench_rows
    from vitbench import tracking
    from vitbench.flags import WRITTEN

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vitbench.bench_rows, "log_to_mlflow", interrupted)
    WRITTEN.clear()  # files an earlier command in this process wrote
    monkeypatch.setattr(tracking, "ENDED", {})  # and the runs it ended
    out = workdir / "bench.csv"
    res = CliRunner().invoke(app, ["bench", "--variants", "sdpa", "--batch-sizes", "2", "--mode", "train",
                                   "--out", str(out), *BENCH_TINY])
    assert res.exit_code == 130, res.output
    assert "train img/s" in res.output and "Traceback" not in res.output
    assert f"interrupted before its MLflow run started: the results are in {out}" in res.output
    assert [r["model"] for r in csv.DictReader(out.open())] == ["sdpa"]



def test_decay_batch_follows_timm_steps():
    seq, b = [], 1024
    while b:
        seq.append(b)
        b = decay_batch(b)
    assert seq[:7] == [1024, 768, 512, 384, 256, 192, 128] and seq[-1] == 1



def test_oom_retries_at_smaller_batch():
    seen = []

    def fake(entry, model, mode, batch, opts, device):
        seen.append(batch)
        if batch > 6:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"median": 0.01, "p10": 0.009, "p90": 0.012, "n": 3.0, "mean": 0.011, "peak_memory_mb": 10.0,
                "memory_source": "test"}

    cell = measure_cell(_entry(), "train", 16, BenchOptions(device="cpu"), torch.device("cpu"),
                        log=lambda s: None, measure=fake)
    assert seen == [16, 12, 8, 6]
    assert (cell["batch_size"], cell["requested_batch_size"]) == (6, 16)
    assert cell["error"] == "OOM at batch 16"



def test_illegal_memory_access_ends_only_that_cell():
    calls = []

    def fake(entry, model, mode, batch, opts, device):
        calls.append((mode, batch))
        if batch == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return {"median": 0.01, "p10": 0.009, "p90": 0.012, "n": 3.0, "mean": 0.011, "peak_memory_mb": 10.0,
                "memory_source": "test"}

    rows = run_bench([_entry()], [2, 4], BenchOptions(device="cpu"), log=lambda s: None, measure=fake)
    assert "illegal memory access" in rows[0]["train_error"] and "train_samples_per_sec" not in rows[0]
    assert rows[1]["train_samples_per_sec_median"] == pytest.approx(400.0)  # batch / median step
    assert rows[1]["train_samples_per_sec"] == pytest.approx(4 / 0.011)  # timm's: images / total time



def test_max_seconds_bounds_a_cell():
    opts = BenchOptions(device="cpu", modes=("train",), warmup=1, repeats=1000, max_seconds=0.5)
    entry = Entry("naive-msa", resolve_config("naive-msa", depth=1, dim=32, heads=2, mlp_dim=64))
    (row,) = run_bench([entry], [4], opts, log=lambda s: None)
    assert 1 <= row["train_repeats"] < 1000



def test_naive_entries_stay_eager_under_compile():
    entry = Entry("naive-msa", resolve_config("naive-msa", depth=1, dim=32, heads=2, mlp_dim=64), compile=True)
    (row,) = run_bench([entry], [2], BenchOptions(device="cpu", warmup=1, repeats=2), log=lambda s: None)
    assert row["compile"] is True and row["train_compiled"] is False and row["infer_compiled"] is False
    assert row["train_samples_per_sec"] > 0 and row["infer_samples_per_sec"] > 0



def test_token_scaling_and_timm_peer_rows():
    entries = plan(["sdpa"], "mnist", ["timm"], [28, 56], None, {"depth": 1, "dim": 32, "heads": 2, "mlp_dim": 64})
    rows = run_bench(entries, [2], BenchOptions(device="cpu", warmup=1, repeats=2), log=lambda s: None)
    assert [(r["model"], r["tokens"]) for r in rows] == [("sdpa", 17), ("timm-vit", 17), ("sdpa", 65),
                                                         ("timm-vit", 65)]
    for a, b in zip(rows[::2], rows[1::2], strict=True):  # same dimensions: same parameters and FLOPs
        assert a["param_count"] == b["param_count"]
        assert a["gflops_per_image_fwd"] == pytest.approx(b["gflops_per_image_fwd"])
    assert rows[2]["gflops_per_image_fwd"] > 3 * rows[0]["gflops_per_image_fwd"]



def test_mlp_implementations_are_measured_side_by_side():
    """--mlp torch,triton: a row each (our kernels in Triton's interpreter here), named and with an mlp column,
    the same parameters and FLOPs; the peer's row has no vitbench part."""
    options = {"depth": 1, "dim": 32, "heads": 2, "mlp_dim": 64, "patchify": "unfold", "mlp": ["torch", "triton"]}
    entries = plan(["sdpa"], "mnist", ["timm"], None, None, options)
    rows = run_bench(entries, [2], BenchOptions(device="cpu", warmup=1, repeats=2, modes=("train",)),
                     log=lambda s: None)
    assert [(r["model"], r["mlp"]) for r in rows] == [("sdpa[sdpa,unfold][mlp torch]", "torch"),
                                                      ("sdpa[sdpa,unfold][mlp triton]", "triton"), ("timm-vit", "")]
    assert all(r["train_error"] == "" and r["train_samples_per_sec"] > 0 for r in rows)
    assert rows[0]["param_count_exact"] == rows[1]["param_count_exact"] == rows[2]["param_count_exact"]
    assert rows[0]["gflops_per_image_train"] == rows[1]["gflops_per_image_train"] > 0



def test_plan_gives_peers_every_trick_and_keeps_their_eager_row():
    options = {"depth": 1, "dim": 32, "heads": 2, "mlp_dim": 64, "attention": ["sdpa", "vectorized"]}
    entries = plan(["sdpa"], "mnist", ["timm"], None, None, options, with_graph=True, compile=True)
    assert [(e.name, e.compile, e.peer_graph) for e in entries] == [
        ("sdpa[sdpa,conv]", True, False), ("sdpa[vectorized,conv]", True, False),
        ("timm-vit", False, False), ("timm-vit+compile", True, False), ("timm-vit+compile+graph", True, True)]
    assert options["attention"] == ["sdpa", "vectorized"], "plan must not consume the caller's options"
    plain = plan(["sdpa"], "mnist", ["timm"], None, None, {}, with_graph=True)
    assert [(e.name, e.compile, e.peer_graph) for e in plain] == [
        ("sdpa", False, False), ("timm-vit", False, False), ("timm-vit+graph", False, True)]



@pytest.mark.parametrize("args,needle", [
    (["--variants", "sdpa,nope"], f"valid: {', '.join(list_variants())}, all"),
    (["--out", "x.txt"], "must end in .csv or .json"),
    (["--image-sizes", "28", "--patch-sizes", "7"], "not both"),
    (["--image-sizes", "30"], "patch size 7 does not divide image size 30"),
    (["--peers", "keras"], f"valid: {', '.join(names.PEERS)}, or timm:MODEL"),
    (["--batch-sizes", "a,b"], "comma-separated integers"),
    (["--precision", "fp8"], "--precision fp8 needs an NVIDIA GPU with FP8 tensor cores"),
    (["--precision", "int4"], f"valid: {', '.join(names.PRECISIONS)}"),
    (["--compile-mode", "fast"], f"valid: {', '.join(names.COMPILE_MODES)}"),
])
def test_bench_bad_input(workdir, args, needle):
    res = CliRunner().invoke(app, ["bench", *BENCH_TINY, *args])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().startswith("error:") and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1



def test_fused_attentions_are_counted_as_their_batched_matmul_twin():
    """FlopCounterMode cannot see inside a custom kernel: the same function's batched-matmul form is counted."""
    from vitbench.bench import Entry, counting_twin
    from vitbench.models import resolve_config

    fused = Entry("sdpa[triton]", resolve_config("sdpa", "mnist", attention="triton"), compile=True)
    twin = counting_twin(fused)
    assert twin.cfg.attention == "vectorized" and not twin.compile and twin.cfg.dim == fused.cfg.dim
    plain = Entry("sdpa", resolve_config("sdpa", "mnist"))
    assert counting_twin(plain) is plain



def test_no_retry_fails_the_cell_at_its_batch():
    def fake(entry, model, mode, batch, opts, device):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    cell = measure_cell(_entry(), "train", 16, BenchOptions(device="cpu", retry=False), torch.device("cpu"),
                        log=lambda s: None, measure=fake)
    assert (cell["batch_size"], cell["error"]) == (0, "OOM at batch 16 (--no-retry)")



def test_profile_breaks_the_timed_step_down_by_kind_of_kernel():
    """--profile: a few more steps of the very function that was timed, through torch.profiler: the step's ms by
    kind (they add up to the profiled step, matmuls and the optimizer among them), a Perfetto trace and a CSV."""
    from vitbench.profiling import KINDS, kind

    assert [kind(n) for n in ("sm90_xmma_gemm_bf16", "aten::scaled_dot_product_attention", "triton_poi_fused_gelu_0",
                              "aten::native_layer_norm", "multi_tensor_apply_kernel", "aten::copy_", "mystery")] == [
        "matmul", "attention", "elementwise_activation", "normalisation", "optimizer", "copies_layout", "other"]
    # names an H100 profile showed: cuBLAS's Hopper kernels, our Triton attention's
    assert [kind(n) for n in ("nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNT", "attention_backward_blocks")] == [
        "matmul", "attention"]
    (row,) = run_bench([_entry()], [4], BenchOptions(device="cpu", warmup=1, repeats=2, modes=("train",), profile=2),
                       log=lambda s: None)
    ms = {k: row[f"train_prof_{k}_ms"] for k in KINDS}
    assert ms["matmul"] > 0 and ms["optimizer"] > 0 and sum(ms.values()) > 0
    folder = Path(row["train_profile"])
    assert (folder / "trace.json").stat().st_size > 1000
    assert [r["kind"] for r in csv.DictReader((folder / "breakdown.csv").open())] == list(KINDS)


def test_a_cell_timed_on_a_slowed_gpu_says_so():
    """NVML's slowdown reasons during a cell's timing (as an H100 showed for half of one cell's samples): the
    progress line and the table mark it not comparable; a quiet cell is not marked."""
    from vitbench.bench_rows import hindered, progress_line

    row = {"model": "sdpa", "img_size": 224, "tokens": 197, "train_batch_size": 256, "train_samples_per_sec_median": 8806.0,
           "train_samples_per_sec": 8806.0, "train_step_time_median": 29.1, "train_step_time_p10": 29.0,
           "train_step_time_p90": 29.1, "train_peak_memory_mb": 8917.0, "train_cond_gpu_throttled_share": 0.5}
    assert hindered(row, "train") == "GPU slowed down 50% of the time"
    assert progress_line(row, "train").endswith("-- GPU slowed down 50% of the time: not comparable")
    assert hindered({**row, "train_cond_gpu_throttled_share": 0.0}, "train") == ""
