"""Lab 5 (labs/src/lab05_cagem.ipynb): the per-cluster terms of a CaGeM with the random numbers fixed, from which the
student assembles the unlabelled bound (thesis eq. 4.27) and the cascade classifier (eqs. 4.30-4.32).

:func:`tiny_cagem` builds a small random CaGeM, :func:`draw_noise` fixes the standard-normal draws of ``z1`` and
``z2``, and :func:`cagem_terms` reads the ingredients of the bound off the model's own batched pass. The lab's checks
live with the other labs' checks in ``labs/labcheck.py`` (``check_labelled_terms``, ``check_cagem_unlabelled_bound``,
``check_cascade_classifier``); they use these functions to compare the student's code with dgmlab's CaGeM.

Shapes, for ``B`` points and ``K`` clusters, one draw of ``z1`` per point and one of ``z2`` per (point, cluster):
:func:`cagem_terms` returns ``scores`` ``(B, K)`` (the classifier's unnormalised log-probabilities of
``q(y|z1,x)``), ``log_qz1`` ``(B,)`` and the per-cluster terms ``log_px``, ``log_pz1``, ``log_py``, ``log_pz2``,
``log_qz2`` ``(B, K)`` (column ``y`` evaluated at the ``z2`` drawn for cluster ``y``; their names are
:data:`TERM_KEYS`), and ``log_p_y_given_z2`` ``(B, K, K)`` (entry ``[b, c, y]`` = ``log p(y | z2^c)``, the
generative classifier at the ``z2`` drawn for cluster ``c``).
"""

from __future__ import annotations

import math

import torch

from dgmlab.models.cagem import CaGeM, CaGeMConfig
from dgmlab.objectives.semisupervised import add_class_axis, one_hot_classes, reparameterize

__all__ = ["TERM_KEYS", "cagem_terms", "draw_noise", "tiny_cagem"]

TERM_KEYS = ("log_px", "log_pz1", "log_py", "log_pz2", "log_qz2")
"""The per-cluster ``(B, K)`` tables of :func:`cagem_terms` that enter ``f(x, y)``, in the order of eq. 4.27."""


def tiny_cagem(seed: int = 0, x_dim: int = 6, n_classes: int = 3) -> CaGeM:
    """A small random CaGeM in float64 and eval mode (no batch normalisation), for the checks and the lab's first
    cells. Its weights are drawn with a larger spread than a fresh model's, so that the terms differ visibly."""
    torch.manual_seed(seed)
    model = CaGeM(CaGeMConfig(x_dim=x_dim, n_classes=n_classes, hidden=(8,), hidden_z=(8,), z_dim=3, z2_dim=2,
                              batch_norm=False, fixed_alpha=1.0, warmup_epochs=0))
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.normal_(layer.weight, std=1.2 / math.sqrt(layer.in_features))
                torch.nn.init.normal_(layer.bias, std=0.5)
    return model.double().eval()


def draw_noise(model: CaGeM, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Standard-normal draws for one sample: ``{"z1": (1, B, z_dim), "z2": (1, K, B, z2_dim)}`` (one ``z2`` per
    cluster). Passing the same noise to two computations makes them use the same ``z1`` and ``z2``."""
    c, b, k = model.config, len(x), model.n_clusters
    opts = dict(dtype=x.dtype, device=x.device)
    return {"z1": torch.randn(1, b, c.z_dim, generator=generator, **opts),
            "z2": torch.randn(1, k, b, c.z2_dim, generator=generator, **opts)}


@torch.no_grad()
def cagem_terms(model: CaGeM, x: torch.Tensor, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ingredients of ``U(x)`` (eq. 4.27) and of the cascade ``p(y|x)`` (eqs. 4.30-4.32) for one draw of the
    latents, as ``(B, K)`` tables (column ``y`` = cluster ``y``); see the module docstring for every key.

    They are read from the model's own batched pass over all clusters (``CaGeM._joint_terms``); ``scores`` is the
    output of the last linear layer of ``q(y|z1,x)``, before the softmax."""
    raw = []
    hook = model.q_y.head.logits.register_forward_hook(lambda module, inputs, out: raw.append(out))
    try:
        t = model._joint_terms(x, one_hot_classes(model.n_clusters, x), 1, noise)
    finally:
        hook.remove()
    terms = {"scores": raw[-1][0], "log_qz1": t["log_qz1"][0]}
    terms.update({key: t[key][0].transpose(0, 1) for key in TERM_KEYS})  # (K, B) -> (B, K)
    z1 = t["z1"]
    q_z2 = model.inference_z2(x, one_hot_classes(model.n_clusters, x), add_class_axis(z1))
    z2 = reparameterize(q_z2, noise["z2"])  # (1, K, B, z2_dim): the draws the terms above used
    terms["log_p_y_given_z2"] = model.p_y(z2).logits[0].transpose(0, 1)  # (K=c, B, K=y) -> (B, c, y)
    return terms
