"""`vitbench inspect RUN_ID`: attention maps (per head, and attention rollout), a prediction grid and a
confusion matrix of a trained run, written as files and logged as artifacts of that run."""

from __future__ import annotations

from pathlib import Path

import torch

from vitbench.errors import VitbenchError


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


def inspect_run(run_id: str, out: str | Path | None = None, n: int = 6, tracking_uri: str | None = None,
                checkpoint_dir: str | Path = "checkpoints", data_dir: str | None = None, log=print) -> Path:
    import mlflow
    import torch.nn.functional as F

    from vitbench import plots
    from vitbench.data import load_splits, normalize
    from vitbench.models import ViT, ViTConfig
    from vitbench.runner import class_names, find_checkpoint
    from vitbench.tracking import connect
    from vitbench.train import TrainConfig, load_checkpoint

    connect(tracking_uri)
    try:
        mlflow.get_run(run_id)
    except Exception:
        raise VitbenchError(f"no run {run_id!r} in the tracking store") from None
    ckpt = load_checkpoint(find_checkpoint(run_id, checkpoint_dir, tracking_uri))
    cfg = TrainConfig.from_dict(ckpt["train_config"])
    model = ViT(ViTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    splits = load_splits(cfg.dataset, data_dir or cfg.data_dir, cfg.val_split, cfg.seed)
    info, classes = splits.info, class_names(splits.info)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    out = Path(out or Path("results") / "inspect" / run_id)
    out.mkdir(parents=True, exist_ok=True)
    preds = []
    with torch.inference_mode():
        for i in range(0, len(splits.eval_images), 1000):
            preds.append(model(normalize(splits.eval_images[i:i + 1000], mean, std)).argmax(-1))
    preds = torch.cat(preds)
    title = f"{cfg.variant} on {cfg.dataset} (run {run_id[:8]})"
    files = [plots.confusion_matrix(preds, splits.eval_labels, classes, out / "confusion_matrix.png",
                                    f"{title}: confusion matrix"),
             plots.prediction_grid(splits.eval_images[:32], preds[:32], splits.eval_labels[:32], classes,
                                   out / "predictions.png", f"{title}: predictions")]
    images = splits.eval_images[:n]
    x = normalize(images, mean, std)
    maps = attention_maps(model, x)
    scores = patch_scores(model, rollout(maps))
    up = F.interpolate(scores[:, None], size=images.shape[-2:], mode="nearest")[:, 0]  # (n, H, W)
    plt = plots.plt
    heads = maps[-1].shape[1]
    fig, axes = plt.subplots(n, heads + 2, figsize=(1.7 * (heads + 2), 1.8 * n), squeeze=False)
    for i in range(n):
        img = images[i].float() / 255
        show = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
        axes[i, 0].imshow(show, cmap="gray" if img.shape[0] == 1 else None)
        axes[i, 0].set_title(f"true {classes[int(splits.eval_labels[i])]}, pred {classes[int(preds[i])]}", fontsize=7)
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
    files.append(plots.save(fig, out / "attention_maps.png"))
    from mlflow.tracking import MlflowClient

    for f in files:
        MlflowClient().log_artifact(run_id, str(f), "inspect")
    log(f"wrote {', '.join(str(f) for f in files)} and logged them to run {run_id}")
    return out
