"""KL terms shared by the latent-variable models: per-unit KL, active units and the KL temperature (warm-up).

* Per-unit KL (reproduction notes L3): for diagonal Gaussians the KL of (3.30) is a sum over latent units,
  ``KL(q(z|x) || p(z)) = sum_j KL(q(z_j|x) || p(z_j))``; a unit whose KL is ~0 on every input carries no information
  about ``x``: it has *collapsed* onto the prior (thesis section 3.2.2 and 3.3).
* Warm-up (thesis eq. 5.5; reproduction notes rn-warmup): the KL term is multiplied by a temperature ``T`` that grows
  linearly from ``start`` to 1 over the first ``warmup_epochs`` epochs.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, Independent, kl_divergence

ACTIVE_UNIT_THRESHOLD = 0.01
"""Nats of average KL above which a latent unit counts as active [X]."""


def _base(dist: Distribution) -> Distribution:
    # Independent(Normal) -> Normal: the per-unit KL lives in the base distribution's batch axes.
    while isinstance(dist, Independent):
        dist = dist.base_dist
    return dist


def kl_per_unit(q: Distribution, p: Distribution) -> torch.Tensor:
    """``KL(q(z_j|.) || p(z_j|.))`` for every unit ``j``, analytic (shape ``(*batch, z_dim)``).

    ``q`` and ``p`` are factorised distributions such as ``Independent(Normal, 1)``; summing the result over the last
    axis gives ``kl_divergence(q, p)``.
    """
    return kl_divergence(_base(q), _base(p))


def active_units(kl_units: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """How many units have an average KL above ``threshold`` nats (``kl_units``: shape ``(z_dim,)``, averaged over
    data, e.g. from :func:`kl_per_unit` followed by ``.mean(0)``)."""
    if kl_units.dim() != 1:
        raise ValueError(f"active_units expects per-unit KL averaged over the data, shape (z_dim,), "
                         f"got {tuple(kl_units.shape)}; average over the batch first with .mean(0)")
    return int((kl_units > threshold).sum())


def kl_temperature(epoch: int | float, warmup_epochs: int, start: float = 0.0) -> float:
    """The KL temperature ``T`` of warm-up (5.5): ``start + (1 - start) * min(1, epoch / warmup_epochs)``.

    ``epoch`` counts from 0, so the first epoch uses ``T = start``; ``T = 1`` from epoch ``warmup_epochs`` on.
    ``warmup_epochs = 0`` switches warm-up off (``T = 1`` always). The FAME paper starts at ``start = 0.3``
    (reproduction notes rn-warmup).
    """
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"the starting temperature must lie in [0, 1], got {start}")
    if warmup_epochs == 0:
        return 1.0
    return start + (1.0 - start) * min(1.0, max(0.0, epoch / warmup_epochs))
