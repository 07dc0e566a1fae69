"""Where a recipe's training step spends its GPU time: the step's time as the CUDA graph replays it (CUDA
events, median of repeats), then each kernel the step launches (torch.profiler over the same step run
outside the graph), grouped by name. Reproduces results/logs/step_kernels.txt (issue 15, target 1). GPU only.

    python3 scripts/reproduce/step_kernels.py --recipe mnist-fast --batch-size 512
    python3 scripts/reproduce/step_kernels.py --dataset cifar10 --batch-size 1024  # target 3's cifar10 cell
    python3 scripts/reproduce/step_kernels.py --recipe none --dataset synthetic --preset vit-b16 --batch-size 256 \
        --precision bf16 --compile --attention sdpa   # results/real_sizes.md: where a ViT-B/16 step goes
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.profiler import ProfilerActivity, profile

from vitbench.options import Options, configs
from vitbench.recipes import recipe_options
from vitbench.train import Trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="mnist-fast")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--dataset", default="mnist", help="whose preset the model takes (the recipe's options on it)")
    ap.add_argument("--preset", default=None, help="size preset [the dataset's]")
    ap.add_argument("--precision", default=None, help="fp32 | bf16 [the recipe's]")
    ap.add_argument("--compile", action="store_true", help="compile the model inside the graph")
    ap.add_argument("--attention", default=None, help="attention implementation [the recipe's]")
    ap.add_argument("--patchify", default=None, help="patchify implementation [the recipe's]")
    ap.add_argument("--mlp", default=None, help="MLP implementation [the recipe's]")
    ap.add_argument("--replays", type=int, default=300)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    recipe = recipe_options(None if args.recipe == "none" else args.recipe)
    cfg, model_cfg = configs(recipe.then(Options(
        dataset=args.dataset, preset=args.preset, precision=args.precision, attention=args.attention,
        patchify=args.patchify, mlp=args.mlp,
        compile=args.compile or None, batch_size=args.batch_size, device="cuda")))
    trainer = Trainer(cfg, model_cfg, steps_per_epoch=100, log=lambda s: None)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(cfg.batch_size, model_cfg.in_chans, model_cfg.image_size, model_cfg.image_size,
                    device="cuda", generator=g)
    y = torch.randint(0, model_cfg.num_classes, (cfg.batch_size,), device="cuda", generator=g)
    trainer.warm_up(x, y)
    assert trainer.graph is not None, trainer.graph_reason
    times = []
    for _ in range(args.replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        trainer.graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000)
    q = statistics.quantiles(times, n=20)
    print(f"{args.recipe} on the {args.dataset} preset, batch {cfg.batch_size}: step as a CUDA graph replay {statistics.median(times):.0f} us "
          f"(median of {len(times)}; 5-95 %: {q[0]:.0f}-{q[-1]:.0f} us); torch {torch.__version__}, "
          f"{torch.cuda.get_device_name()}")
    for _ in range(3):
        trainer.step(x, y)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            trainer.step(x, y)
        torch.cuda.synchronize()
    kernels: dict[str, list[float]] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels.setdefault(e.name, []).append(e.device_time)
    per_step = sum(len(v) for v in kernels.values()) / 10
    total = sum(sum(v) for v in kernels.values()) / 10
    print(f"outside the graph: {per_step:.0f} kernels per step, {total:.0f} us of kernel time per step")
    if args.top:
        print(f"{'us/step':>8} {'n/step':>6}  kernel")
    for name, ts in sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
        print(f"{sum(ts) / 10:8.1f} {len(ts) / 10:6.1f}  {name[:110]}")


if __name__ == "__main__":
    main()
