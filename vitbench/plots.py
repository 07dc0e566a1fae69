"""seaborn figures shared by `run`, `inspect` and `report`; every axis has its unit."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # direct labels may sit outside the axes
    plt.close(fig)
    return path


def learning_curves(history: list[dict], path: Path, title: str) -> Path:
    df = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    loss = df.melt(id_vars="epoch", value_vars=["train_loss", "val_loss"], var_name="split", value_name="loss")
    sns.lineplot(data=loss, x="epoch", y="loss", hue="split", marker="o", ax=axes[0])
    acc = df.melt(id_vars="epoch", value_vars=["train_acc", "val_acc"], var_name="split", value_name="accuracy")
    sns.lineplot(data=acc, x="epoch", y="accuracy", hue="split", marker="o", ax=axes[1])
    axes[0].set(title="loss (cross-entropy)", xlabel="epoch")
    axes[1].set(title="accuracy (fraction correct)", xlabel="epoch")
    fig.suptitle(title)
    return save(fig, path)


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, classes: list[str], path: Path,
                     title: str) -> Path:
    k = len(classes)
    cm = torch.bincount(labels.cpu() * k + preds.cpu(), minlength=k * k).reshape(k, k)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k) if k <= 20 else (12, 11))
    sns.heatmap(pd.DataFrame(cm.numpy(), index=classes, columns=classes), annot=k <= 20, fmt="d",
                cmap="Blues", cbar_kws={"label": "images"}, ax=ax)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    return save(fig, path)


def prediction_grid(images: torch.Tensor, preds: torch.Tensor, labels: torch.Tensor, classes: list[str],
                    path: Path, title: str, n: int = 32) -> Path:
    """Test images with their predicted class: green when right, red when wrong. One image of tiles, not one
    axes per image: laying out and saving 32 axes was the slowest of a run's plots."""
    n, cols = min(n, len(images)), 8
    rows = -(-n // cols)
    c, h, w = images.shape[1:]
    band, gap = max(4, h // 3), max(2, w // 8)  # pixels: room for each label above its tile, and between tiles
    tile_h, tile_w = h + band, w + gap
    sheet = torch.ones(rows * tile_h, cols * tile_w, 3)  # white between the tiles
    for i in range(n):
        img = images[i].detach().float().cpu()
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-8)  # each scaled to its range, as imshow does
        r, col = divmod(i, cols)
        sheet[r * tile_h + band:(r + 1) * tile_h, col * tile_w:col * tile_w + w] = img.permute(1, 2, 0).expand(h, w, 3)
    fig, ax = plt.subplots(figsize=(cols * 1.3, rows * 1.5))
    ax.imshow(sheet.numpy(), interpolation="nearest")
    ax.axis("off")
    for i in range(n):
        r, col = divmod(i, cols)
        ok = int(preds[i]) == int(labels[i])
        ax.text(col * tile_w + w / 2, r * tile_h + band * 0.8, classes[int(preds[i])], ha="center", va="bottom",
                fontsize=9, color="green" if ok else "red")
    fig.suptitle(f"{title} (title = prediction; green right, red wrong)")
    return save(fig, path)
