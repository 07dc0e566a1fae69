"""`vitbench inspect RUN_ID`: attention maps (per head, and attention rollout), a prediction grid and a
confusion matrix of a trained run, written as files and logged as artifacts of that run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from vitbench.errors import VitbenchError, check_run_id
from vitbench.names import is_timm
from vitbench.peers import model_for


@torch.no_grad()
def attention_maps(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Per block, (B, heads, T, T) attention weights: the inputs each block's attention really saw,
    through the shared reference math (the same for every implementation)."""
    seen: list[torch.Tensor] = []
    hooks = [blk.attn.register_forward_pre_hook(lambda m, args: seen.append(m.attention_probs(args[0])))
             for blk in model.blocks]
    try:
        model.eval()
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def rollout(maps: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): heads averaged, identity added for the residual,
    rows renormalised, multiplied through the blocks. (B, T, T)."""
    B, _, T, _ = maps[0].shape
    result = torch.eye(T).expand(B, T, T).clone()
    for a in maps:
        a = a.mean(1) + torch.eye(T)
        result = (a / a.sum(-1, keepdim=True)) @ result
    return result


def patch_scores(model, roll: torch.Tensor) -> torch.Tensor:
    """(B, grid, grid): how much the pooled output draws on each patch."""
    g = model.patch_embed.grid
    if model.cls_token is not None:
        s = roll[:, 0, 1:]
    else:
        s = roll.mean(1)
    return s.reshape(-1, g, g)


def load_run(run_id: str, tracking_uri: str | None, checkpoint_dir: str | Path, data_dir: str | None,
             test_set: bool = False):
    """The run's trained model (eval mode), its training config, its evaluation data (``test_set``: the official
    test set, whatever the run was evaluated on), what stopped it, and what it comes to on this machine."""
    import mlflow

    from vitbench.checkpoints import load_checkpoint
    from vitbench.config import TrainConfig
    from vitbench.evaluation import load_ema
    from vitbench.models import ViT, ViTConfig
    from vitbench.runner import find_checkpoint, load_data, run_context
    from vitbench.tracking import connect

    check_run_id(run_id)  # before the store: an id that is not one is refused wherever it is looked for
    connect(tracking_uri, existing=True)
    try:
        run = mlflow.get_run(run_id)
    except Exception:
        raise VitbenchError(f"no run {run_id!r} in the tracking store") from None
    ckpt = load_checkpoint(find_checkpoint(run_id, checkpoint_dir, tracking_uri))
    cfg = TrainConfig.from_dict(ckpt["train_config"])
    model_cfg = ViTConfig(**ckpt["model_config"])
    model = model_for(cfg.variant, model_cfg) or ViT(model_cfg)
    model.load_state_dict(ckpt["model"])
    load_ema(model, ckpt.get("ema", []))  # --ema: the weights the run evaluated
    model.eval()
    if data_dir:
        cfg = replace(cfg, data_dir=data_dir)
    if test_set:
        cfg = replace(cfg, val_split=0.0)
    ctx = run_context(cfg, model_cfg)
    return model, cfg, load_data(cfg, ctx, lambda s: None), stopped_note(run, ckpt), ctx


def stopped_note(run, ckpt: dict) -> str:
    """'' for a run that trained all its epochs; else what stopped it and when, for every plot's title."""
    stopped = run.data.tags.get("stopped_by", "") or ("still running" if run.info.status == "RUNNING" else "")
    if stopped in ("", "epochs"):
        return ""
    steps = int(ckpt["position"]["global_step"])
    return f" -- stopped by {stopped} after {steps:,} steps: not a trained model"


@torch.inference_mode()
def predict(model: torch.nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
            batch: int = 1000) -> torch.Tensor:
    """The model's classes for ``images`` (uint8, any device), ``batch`` at a time on the device of ``mean``."""
    from vitbench.data import normalize

    return torch.cat([model(normalize(images[i:i + batch].to(mean.device), mean, std)).argmax(-1).cpu()
                      for i in range(0, len(images), batch)])


def attention_figure(model, images: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor,
                     classes: list[str], title: str):
    """Each image, its attention rollout, and every head's attention in the last block (CLS -> patches)."""
    import torch.nn.functional as F

    from vitbench import plots

    n = len(images)
    maps = attention_maps(model, x)
    scores = patch_scores(model, rollout(maps))
    up = F.interpolate(scores[:, None], size=images.shape[-2:], mode="nearest")[:, 0]  # (n, H, W)
    heads = maps[-1].shape[1]
    fig, axes = plots.plt.subplots(n, heads + 2, figsize=(1.7 * (heads + 2), 1.8 * n), squeeze=False)
    for i in range(n):
        img = images[i].float() / 255
        show = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
        axes[i, 0].imshow(show, cmap="gray" if img.shape[0] == 1 else None)
        axes[i, 0].set_title(f"true {classes[int(labels[i])]}, pred {classes[int(preds[i])]}", fontsize=7)
        axes[i, 1].imshow(show, cmap="gray" if img.shape[0] == 1 else None)
        axes[i, 1].imshow(up[i], cmap="inferno", alpha=0.6)
        axes[i, 1].set_title("rollout", fontsize=7)
        last = maps[-1][i]  # (heads, T, T)
        for h in range(heads):
            row = last[h, 0, 1:] if model.cls_token is not None else last[h].mean(0)
            axes[i, 2 + h].imshow(row.reshape(model.patch_embed.grid, -1), cmap="viridis")
            axes[i, 2 + h].set_title(f"last block, head {h}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"{title}: attention ({'CLS token' if model.cls_token is not None else 'mean of tokens'} -> patches)")
    return fig


def inspect_run(run_id: str, out: str | Path | None = None, n: int = 6, tracking_uri: str | None = None,
                checkpoint_dir: str | Path = "checkpoints", data_dir: str | None = None, log=print) -> Path:
    from mlflow.tracking import MlflowClient

    from vitbench import plots
    from vitbench.data import mean_std, normalize

    model, cfg, splits, stopped, _ = load_run(run_id, tracking_uri, checkpoint_dir, data_dir)
    if is_timm(cfg.variant):
        raise VitbenchError(f"inspect draws the attention of vitbench's ViTs; run {run_id} trained {cfg.variant}: "
                            f"mlflow.pytorch.load_model('runs:/{run_id}/model') loads it")
    info, classes = splits.info, splits.info.class_names
    mean, std = mean_std(info)
    out = Path(out or Path("reports") / "inspect" / run_id)
    out.mkdir(parents=True, exist_ok=True)
    preds = predict(model, splits.eval_images, mean, std)  # a streamed ImageFolder keeps its first images only
    labels = splits.eval_labels[: len(preds)]
    title = f"{cfg.variant} on {cfg.dataset} (run {run_id[:8]}){stopped}"
    images = splits.eval_images[:n]
    fig = attention_figure(model, images, normalize(images, mean, std), labels, preds, classes, title)
    files = [plots.confusion_matrix(preds, labels, classes, out / "confusion_matrix.png", f"{title}: confusion matrix"),
             plots.prediction_grid(splits.eval_images[:32], preds[:32], labels[:32], classes,
                                   out / "predictions.png", f"{title}: predictions"),
             plots.save(fig, out / "attention_maps.png")]
    for f in files:
        MlflowClient().log_artifact(run_id, str(f), "inspect")
    log(f"wrote {', '.join(str(f) for f in files)} and logged them to run {run_id}")
    return out
