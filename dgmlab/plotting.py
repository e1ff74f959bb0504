"""Small plotting helpers shared by the chapters: image grids, learning curves and results tables."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def image_grid(images, nrow: int | None = None, pad: int = 1, image_shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """Tile ``images`` (N, H*W) or (N, H, W), values in [0, 1], into one 2-D array for ``imshow``."""
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    arr = arr.reshape(len(arr), *image_shape)
    n = len(arr)
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol = int(np.ceil(n / nrow))
    h, w = image_shape
    out = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(arr):
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
    return out


def show_images(ax, images, nrow: int | None = None, title: str | None = None, image_shape=(28, 28)):
    """Draw an image grid on ``ax`` without ticks."""
    ax.imshow(image_grid(images, nrow, image_shape=image_shape), cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def plot_history(ax, histories: dict[str, list[dict]], key: str, ylabel: str | None = None, logy: bool = False):
    """Plot ``key`` against the epoch for several runs (``{label: history}``)."""
    for label, history in histories.items():
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or key)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None, floatfmt: str = ".2f") -> str:
    """A markdown table of ``rows`` (for ``IPython.display.Markdown``)."""
    columns = list(columns or rows[0].keys())
    fmt = lambda v: format(v, floatfmt) if isinstance(v, float) else ("–" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def offline_jshtml(anim, **kwargs) -> str:
    """``anim.to_jshtml()`` without matplotlib's stylesheet link to an icon CDN: the book theme already ships the
    icon font locally, and the static site must not reach outside hosts."""
    import re

    html = anim.to_jshtml(**kwargs)
    return re.sub(r'<link[^>]*href="https?://[^"]*"[^>]*>\s*', "", html)
