"""Helpers of the section 5.2 page (FAME, ``book/ch05_lvae/fame.ipynb``): the thesis' numbers, per-layer summaries
of the shipped training records, the receptive field of the PixelCNN head, the head's log-likelihood under masks, and
batched, timed generation.

The models themselves are :mod:`dgmlab.models.fame` and :mod:`dgmlab.models.pixelcnn`; this module only reads what
they and the command line produce.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dgmlab.objectives import ACTIVE_UNIT_THRESHOLD

THESIS_TABLE_5_2: dict[str, float] = {
    # Maaløe (2018), Table 5.2 (= Appendix E, Table 2, left): negative log-likelihood in nats on dynamically
    # binarised MNIST, estimated with L_5000 (5000 importance samples) on the test set; lower is better.
    "IWAE (Burda et al., 2015)": 82.90,
    "LVAE (Sønderby et al., 2016)": 81.74,
    "CaGeM (Maaløe et al., 2017)": 81.60,
    "DVAE (Rolfe, 2017)": 80.04,
    "VGP (Tran et al., 2016)": 79.88,
    "IAF VAE (Kingma et al., 2016)": 79.10,
    "VLAE (Chen et al., 2017)": 78.53,
    "FAME No Concatenation": 78.73,
    "FAME": 77.82,
}
"""Table 5.2 of the thesis as printed (NLL in nats, ``L_5000``, dynamically binarised MNIST)."""

THESIS_FAME_TEXT: dict[str, float] = {
    # Maaløe (2018), Appendix E, section 3.1 (numbers given in the text, MNIST): the L_1 bound (ELBO) as an NLL,
    # KL(q(z_5|x) || p(z_5)) of the top layer, and the average total KL that FAME and FAME No Concatenation spend to
    # encode a test image (all in nats).
    "elbo_nll": 80.11,
    "top_layer_kl": 5.04,
    "kl_fame": 10.85,
    "kl_noconcat": 12.29,
}
"""Numbers about FAME on MNIST that Appendix E gives in its text rather than in a table."""


# ---------------------------------------------------------------------------------------------- training records
def n_layers(record: Mapping) -> int:
    """Number of latent layers recorded in a metrics record (``final``, ``eval`` or one ``history`` entry)."""
    n = 0
    while f"test_kl_layer{n + 1}" in record:
        n += 1
    if n == 0:
        raise KeyError(f"the record holds no per-layer KL (test_kl_layer1, ...); keys: {sorted(record)[:12]} ...")
    return n


def at_epoch(metrics: Mapping, epoch: int) -> dict:
    """The ``history`` entry of ``epoch`` in a ``metrics.json``."""
    for entry in metrics["history"]:
        if entry["epoch"] == epoch:
            return entry
    epochs = [e["epoch"] for e in metrics["history"]]
    raise KeyError(f"epoch {epoch} is not in the history (epochs {epochs[0]}..{epochs[-1]})")


def layer_summary(record: Mapping) -> list[dict]:
    """Per latent layer, bottom (``z1``) to top: ``units``, ``kl`` (nats per test image), ``active`` (units whose
    average KL exceeds :data:`~dgmlab.objectives.ACTIVE_UNIT_THRESHOLD`) and ``unit_kl`` (the per-unit KL list)."""
    rows = []
    for i in range(1, n_layers(record) + 1):
        unit_kl = np.asarray(record[f"test_unit_kl_layer{i}"], dtype=float)
        rows.append({"layer": f"z{i}", "units": len(unit_kl), "kl": float(record[f"test_kl_layer{i}"]),
                     "active": int(record[f"test_active_units_layer{i}"]), "unit_kl": unit_kl})
    return rows


def plot_layers(axes, records: Mapping[str, Mapping], threshold: float = ACTIVE_UNIT_THRESHOLD) -> None:
    """Three panels for several models (``{label: record}``): KL per layer (log scale), share of active units per
    layer, and every unit's KL sorted from largest to smallest (log scale, with the activity threshold)."""
    labels = list(records)
    summaries = {label: layer_summary(records[label]) for label in labels}
    n = len(next(iter(summaries.values())))
    width = 0.8 / len(labels)
    x = np.arange(n)
    for k, label in enumerate(labels):
        rows = summaries[label]
        offset = (k - (len(labels) - 1) / 2) * width
        axes[0].bar(x + offset, [max(r["kl"], 1e-3) for r in rows], width, label=label)
        axes[1].bar(x + offset, [100 * r["active"] / r["units"] for r in rows], width, label=label)
        units = np.sort(np.concatenate([r["unit_kl"] for r in rows]))[::-1]
        axes[2].plot(np.arange(1, len(units) + 1), np.maximum(units, 1e-6), label=label)
    names = [r["layer"] for r in next(iter(summaries.values()))]
    sizes = [r["units"] for r in next(iter(summaries.values()))]
    for ax in axes[:2]:
        ax.set_xticks(x, [f"${name[0]}_{name[1:]}$ ({size})" for name, size in zip(names, sizes)])
        ax.set_xlabel("latent layer (units)")
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("KL of the layer (nats per test image)")
    axes[1].set_ylabel(f"active units (% of the layer; KL > {threshold:g} nats)")
    axes[1].set_ylim(0, 105)
    axes[2].axhline(threshold, color="k", lw=0.8, ls="--", label=f"threshold {threshold:g} nats")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("units of all layers, sorted by KL")
    axes[2].set_ylabel("KL of the unit (nats)")
    axes[2].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)


# ---------------------------------------------------------------------------------------------- the PixelCNN head
def receptive_field(head, image_shape: tuple[int, int], pixel: tuple[int, int], cond_channels: int,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Which inputs the logit of one pixel depends on: ``|d logit_pixel / d input|`` at a random binary image and a
    random decoder output, as two ``(H, W)`` maps, for the image channel and for the decoder channels (summed over
    channels). A head without an image input (No Concatenation) returns zeros for the image map."""
    g = torch.Generator().manual_seed(seed)
    param = next(head.parameters())
    h, w = image_shape
    x = (torch.rand(1, 1, h, w, generator=g) < 0.3).to(param).requires_grad_(True)
    d = torch.randn(1, cond_channels, h, w, generator=g).to(param).requires_grad_(True)
    was_training = head.training
    head.eval()
    try:
        with torch.enable_grad():
            logits = head(x if head.autoregressive else None, d)
            logits[0, 0, pixel[0], pixel[1]].backward()
    finally:
        head.train(was_training)
    image_map = x.grad[0, 0].abs() if x.grad is not None else torch.zeros(h, w)
    return image_map.detach().cpu().numpy(), d.grad[0].abs().sum(0).detach().cpu().numpy()


@torch.no_grad()
def head_nll(model, x: torch.Tensor, z1: torch.Tensor | None = None, mask: str | None = None) -> torch.Tensor:
    """``-log p(x|z_1)`` per image, in nats, from one pass of the head with the image itself as its autoregressive
    input (as in training): at ``z1`` (default: the posterior-mean ``z_1`` of each image, as ``reconstruct`` uses),
    with ``mask="latent"`` (decoder output zeroed) or ``mask="image"`` (image zeroed; FAME only)."""
    if z1 is None:
        z1 = model.posterior(x)["z1"]
    was_training = model.training
    model.eval()
    try:
        logits = model.logits(x, z1, mask=mask)
    finally:
        model.train(was_training)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


# ---------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def prior_z1(model, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` ancestral draws of ``z_1``: ``z_L ~ N(0, I)``, then ``z_i ~ p(z_i|z_{i+1})`` down to ``z_1``, with the
    noise from ``generator`` (on the CPU), in eval mode."""
    sizes = model.config.sizes
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        z = torch.randn(n, sizes[-1], generator=generator).to(param)
        for i in reversed(range(len(sizes) - 1)):
            p = model.prior(i, z).base_dist
            z = p.loc + p.scale * torch.randn(n, sizes[i], generator=generator).to(param)
    finally:
        model.train(was_training)
    return z


def timed_generate(model, z1: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Images drawn from fixed codes ``z1`` (n, d_1), all in one batch, with the pixel noise from ``generator``; the
    binary images (n, H*W) on the CPU and the wall-clock seconds the draw took."""
    param = next(model.parameters())
    uniforms = torch.rand(len(z1), model.config.x_dim, generator=generator).to(param)
    if param.device.type == "cuda":
        torch.cuda.synchronize(param.device)
    start = time.perf_counter()
    images = model.generate(z1, uniforms=uniforms)
    if param.device.type == "cuda":
        torch.cuda.synchronize(param.device)
    return images.cpu(), time.perf_counter() - start


def claims_table(claims: Sequence[tuple[str, bool | None]]) -> list[dict]:
    """Rows ``{"claim": ..., "holds in our run": "yes" / "no" / "n/a"}`` for a results table."""
    word = {True: "yes", False: "no", None: "n/a"}
    return [{"claim": claim, "holds in our run": word[holds]} for claim, holds in claims]


__all__ = ["THESIS_TABLE_5_2", "THESIS_FAME_TEXT", "at_epoch", "claims_table", "head_nll", "layer_summary",
           "n_layers", "plot_layers", "prior_z1", "receptive_field", "timed_generate"]
