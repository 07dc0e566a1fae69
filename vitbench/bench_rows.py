"""A bench's rows kept: the table on the terminal, the CSV or JSON file, and the MLflow run (a nested run per
cell, the same metric names in every cell, so that MLflow's compare view lines them up)."""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vitbench.conditions import BUSY_SHARE
from vitbench.errors import VitbenchError

if TYPE_CHECKING:
    from vitbench.bench import BenchOptions

MODES = ("train", "infer")


def progress_line(row: dict, mode: str) -> str:
    if f"{mode}_samples_per_sec" not in row:
        return f"  {row['model']} img {row['img_size']} b{row[f'{mode}_requested_batch_size']} {mode}: {row[f'{mode}_error']}"
    return (f"  {row['model']} img {row['img_size']} ({row['tokens']} tokens) b{row[f'{mode}_batch_size']} {mode}: "
            f"{row[f'{mode}_samples_per_sec_median']:,.0f} img/s, {row[f'{mode}_step_time_median']:.2f} ms "
            f"[p10 {row[f'{mode}_step_time_p10']:.2f}, p90 {row[f'{mode}_step_time_p90']:.2f}], "
            f"{row[f'{mode}_peak_memory_mb']:,.0f} MiB" + (" (process peak RSS)" if row.get(f"{mode}_memory_source") ==
                                                           "process_peak_rss" else "")
            + (f" -- {why}: not comparable" if (why := hindered(row, mode)) else ""))


def columns(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def write_rows(rows: list[dict], path: Path) -> Path:
    """CSV or JSON; a value not known (the MFU of a device without a known peak) is blank / null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in rows]
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1))
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns(rows))
            w.writeheader()
            w.writerows(rows)
    else:
        raise VitbenchError(f"--out must end in .csv or .json, got {path}")
    return path


def busy_cell(row: dict, mode: str) -> bool:
    return row.get(f"{mode}_cond_others_cpu_share", 0.0) >= BUSY_SHARE


def hindered(row: dict, mode: str) -> str:
    """What hindered a cell's timing: a busy machine, a GPU that slowed down (NVML's reasons), or '' for neither."""
    share = row.get(f"{mode}_cond_gpu_throttled_share", 0.0)
    return ", ".join([*(["busy machine"] if busy_cell(row, mode) else []),
                      *([f"GPU slowed down {share:.0%} of the time"] if share > 0 else [])])


def rich_table(rows: list[dict], opts: BenchOptions):
    """The figures a person compares, narrow enough for an 80-column terminal; every other column (p10/p90 of
    inference, TFLOP/s, FLOPs, the conditions) is in the CSV and in MLflow."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    where = rows[0]["device"] if rows else opts.device
    mode = "" if opts.compile_mode == "default" else f" {opts.compile_mode}"
    compiled = f", compile{mode}" if opts.compile else ""
    cpu = any(r.get(f"{m}_memory_source") == "process_peak_rss" for r in rows for m in MODES)
    memory = "MiB: the process's peak RSS (all of it, not the cell's)" if cpu else \
        "MiB: peak CUDA memory the cell allocated"
    t = Table(title=f"bench ({opts.precision}, {where}{compiled}); img/s = batch / median step; {memory}",
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    tokens = len({r["tokens"] for r in rows}) > 1
    mfu = any(math.isfinite(r.get("train_mfu", math.nan)) for r in rows)
    detail = any("train_fwd_time" in r for r in rows)
    main, both = opts.modes[0], len(opts.modes) > 1  # train where it was measured, else infer
    for col in ("model", *(("tokens",) if tokens else ()), "batch", f"{main} img/s", "step ms (p10-p90)", "MiB",
                *(("infer img/s",) if both else ()), *(("MFU",) if mfu else ()), *(("fwd/bwd/opt ms",) if detail else ())):
        t.add_column(col, justify="left" if col == "model" else "right", overflow="fold")

    def ms(v: float) -> str:
        return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"

    def fmt(r: dict, mode: str, full: bool) -> list[str]:
        if f"{mode}_samples_per_sec" not in r:
            return [r.get(f"{mode}_error", "") or "-", *(["", ""] if full else [])]
        busy = "*" if hindered(r, mode) else ""
        return [f"{r[f'{mode}_samples_per_sec_median']:,.0f}{busy}",
                *([f"{ms(r[f'{mode}_step_time_median'])} ({ms(r[f'{mode}_step_time_p10'])}-"
                   f"{ms(r[f'{mode}_step_time_p90'])})", f"{r[f'{mode}_peak_memory_mb']:,.0f}"] if full else [])]

    for r in rows:
        batch = r.get("train_batch_size", r.get("infer_batch_size"))
        first, infer = fmt(r, main, True), fmt(r, "infer", False) if both else []
        mfu_text = [f"{r['train_mfu']:.1%}" if math.isfinite(r.get("train_mfu", math.nan)) else "-"] if mfu else []
        phases = ["/".join(f"{r[f'train_{p}_time_median']:.2f}" for p in ("fwd", "bwd", "opt"))
                  if "train_fwd_time" in r else "-"] if detail else []
        t.add_row(escape(r["model"]), *([str(r["tokens"])] if tokens else []), str(batch), *first, *infer,
                  *mfu_text, *phases)
    if any(hindered(r, m) for r in rows for m in MODES):
        t.caption = (f"* timed while other processes took >= {BUSY_SHARE:.0%} of the CPU, or while the GPU slowed down "
                     "(power, thermal or clock limits, through NVML): not comparable with an unhindered machine's figures")
    return t


CELL_PARAMS = ("model", "peer", "attention", "patchify", "mlp", "pos_embed", "pool", "img_size", "patch_size", "tokens",
               "dim", "depth", "heads", "mlp_dim", "precision", "compile", "device")


def cell_metrics(row: dict) -> dict[str, float]:
    """A cell's figures under the same names in every cell (timm's): the compare view lines cells up."""
    from vitbench.mlflow_ui import readable

    return readable({k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and (k.startswith(("train_", "infer_")) or k in ("gflops_per_image_fwd", "gflops_per_image_train",
                                                             "param_count"))})


def requested_batch(row: dict) -> int:
    return row.get("train_requested_batch_size") or row.get("infer_requested_batch_size")


def cell_name(row: dict) -> str:
    return (f"{row['model']} img{row['img_size']}/p{row['patch_size']} b{requested_batch(row)} {row['precision']}"
            f"{' compiled' if row['compile'] else ''}")


def bench_note(rows: list[dict], opts: BenchOptions) -> str:
    fastest = max((r for r in rows if "train_samples_per_sec_median" in r),
                  key=lambda r: r["train_samples_per_sec_median"], default=None)
    best = (f" Fastest training cell: **{cell_name(fastest)}**, {fastest['train_samples_per_sec_median']:,.0f} img/s "
            "(batch / median step)."
            if fastest else "")
    return (f"`vitbench bench`: {len(rows)} cells ({', '.join(sorted({r['model'] for r in rows}))}) on "
            f"{rows[0]['device'] if rows else opts.device}, {opts.precision}{', compiled' if opts.compile else ''}, "
            f"{' and '.join(opts.modes)}; {opts.warmup} untimed warm-up steps, then the median (p10-p90) of "
            f"{opts.repeats} timed steps per cell; images/s = batch / median step (`*_samples_per_sec_median`), "
            f"and as timm's benchmark.py counts it, timed images / total time (`*_samples_per_sec`).{best} Each cell "
            "is a nested run with the same metric names (train_samples_per_sec_median, train_peak_memory_mb, ...): "
            "select them and Compare; the whole table is the artifact bench_table.json.")


def log_to_mlflow(rows: list[dict], opts: BenchOptions, out: Path | None, tracking_uri: str | None,
                  experiment: str, params: dict) -> str:
    """One parent run per invocation (its options, the table as CSV, JSON and an MLflow table) and one nested
    run per cell (the cell's parts and sizes as params, its figures as metrics)."""
    import tempfile

    import mlflow
    import pandas as pd
    import torch
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from vitbench.mlflow_ui import BENCH_COLUMNS, NOTE
    from vitbench.tracking import connect, environment_tags, flatten, get_experiment_id, tracked_run

    uri = connect(tracking_uri)
    exp_id = get_experiment_id(experiment, uri, columns=BENCH_COLUMNS)
    env = environment_tags(torch.device(opts.device))
    tags = {"kind": "bench", NOTE: bench_note(rows, opts), **env}
    client = MlflowClient()
    with tracked_run(exp_id, f"bench-{len(rows)}-cells", tags=tags) as run_id:
        mlflow.log_params(flatten({**params, "precision": opts.precision, "compile": opts.compile,
                                   "warmup": opts.warmup, "repeats": opts.repeats,
                                   "max_seconds": opts.max_seconds, "modes": ",".join(opts.modes)}))
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifact(str(write_rows(rows, Path(tmp) / "bench.csv")))
            mlflow.log_artifact(str(write_rows(rows, Path(tmp) / "bench.json")))
        if rows:
            mlflow.log_table(pd.DataFrame(rows), "bench_table.json")
        if out is not None:
            mlflow.log_artifact(str(out))
        now = int(time.time() * 1000)
        for row in rows:
            errors = "; ".join(row[k] for k in ("train_error", "infer_error") if row.get(k))
            child = client.create_run(exp_id, run_name=cell_name(row), tags={
                "mlflow.parentRunId": run_id, "kind": "bench-cell", "bench.parent": run_id,
                NOTE: "; ".join(progress_line(row, m).strip() for m in opts.modes), **env})
            client.log_batch(child.info.run_id,
                             params=[Param(k, str(row[k])) for k in CELL_PARAMS] + [Param("batch_size", str(requested_batch(row)))],
                             metrics=[Metric(k, v, now, 0) for k, v in cell_metrics(row).items()],
                             tags=[*([RunTag("error", errors[:500])] if errors else []),
                                   *[RunTag(f"{m}_hindered", h) for m in opts.modes if (h := hindered(row, m))]])
            for m in opts.modes:  # --profile: the trace and the breakdown, as the cell's artifacts
                if row.get(f"{m}_profile"):
                    client.log_artifacts(child.info.run_id, row[f"{m}_profile"], f"profile/{m}")
            measured = any(f"{m}_samples_per_sec" in row for m in opts.modes)
            client.set_terminated(child.info.run_id, "FINISHED" if measured else "FAILED")
    return run_id


def keep_bench(rows: list[dict], opts: BenchOptions, out: Path | None, tracking_uri: str | None, experiment: str,
               log: Callable[[str], None], params: dict, written: list[str]) -> None:
    """The rows to --out (its path added to ``written``), then to MLflow: a failure of one keeps the other, and is
    one line at the end."""
    failed = []
    if out is not None:
        try:
            write_rows(rows, out)
            written.append(str(out))
            log(f"wrote {out}")
        except OSError as e:
            failed.append(f"could not write {out}: {e.strerror or e}")
            out = None
    try:
        log(f"mlflow run {log_to_mlflow(rows, opts, out, tracking_uri, experiment, params)}")
    except Exception as e:  # the store went away while measuring: the table and the file stand
        from vitbench.tracking import error_line

        failed.append(f"could not record the bench in MLflow ({error_line(e)})" + (f"; the rows are in {out}" if out else ""))
    if failed:
        raise VitbenchError("; ".join(failed))
