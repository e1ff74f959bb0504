"""The ladder variational auto-encoder, LVAE (thesis section 5.1.1, eqs. 5.1-5.5; Sønderby et al. 2016, "Ladder
variational autoencoders", section 2.2, eqs. 13-19).

The generative model is that of the bottom-up hierarchical VAE (thesis 3.32-3.34, :mod:`dgmlab.models.hvae`); only the
inference model differs (5.1)::

    q(z_1..L|x) = q(z_L|x) prod_{i=1}^{L-1} q(z_i|z_{i+1}, x)

1. A deterministic bottom-up pass (Sønderby et al. eqs. 13-15): ``d_0 = x``, ``d_i = MLP(d_{i-1})`` and per layer an
   approximate Gaussian likelihood ``mu_hat_i = Linear(d_i)``, ``sigma_hat^2_i = softplus(Linear(d_i))``.
2. A stochastic top-down pass (5.2)-(5.4) (eqs. 16-19) that shares the generative network: at the top
   ``q(z_L|x) = N(mu_hat_L, sigma_hat^2_L)``; then for ``i = L-1 .. 1`` the prior
   ``p(z_i|z_{i+1}) = N(mu_p, sigma^2_p)`` at the *sampled* ``z_{i+1}`` (the very network used to generate) is
   combined with the likelihood term by :func:`precision_weighted_merge`::

       sigma^2_q = 1 / (1/sigma_hat^2 + 1/sigma^2_p),   mu_q = (mu_hat/sigma_hat^2 + mu_p/sigma^2_p) * sigma^2_q

   and ``z_i ~ N(mu_q, sigma^2_q)``. (5.4) and Sønderby et al. eq. 17 write ``sigma`` for what is a variance; the
   precisions ``1/sigma^2`` are what combine (reproduction notes G3.)

Bound (5.5): ``E_q[log p(x|z_1)] - T * sum_i KL_i`` with the warm-up temperature ``T`` on the KL terms only. Both
``q(z_i|z_{i+1}, x)`` and ``p(z_i|z_{i+1})`` are diagonal Gaussians evaluated at the *same* sample ``z_{i+1}`` (drawn
before ``z_i``), so ``KL_i = E_{q(z_{i+1..L}|x)} KL(q(z_i|z_{i+1},x) || p(z_i|z_{i+1}))`` is taken analytically per
sample of the parents, for every layer, and ``KL_L = KL(N(mu_hat_L, sigma_hat^2_L) || N(0, I))`` (reproduction notes
G15). The importance-weighted bound (3.31) and ``L_5000`` use Monte Carlo log-density ratios at the samples.

Sizes, training options and evaluation outputs are those of :class:`dgmlab.models.hvae.HVAEConfig`: the bottom-up
MLPs have the widths of the inference MLPs of the bottom-up VAE (512 between ``x`` and ``d_1``, then 256, 128, 64, 32),
so both models have similar parameter counts (Sønderby et al. section 2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from dgmlab import nn as dnn
from dgmlab.models import register
from dgmlab.models.hvae import HierarchicalVAE, HVAEConfig, draw, gaussian_head, normal, thesis_mnist_recipe


def precision_weighted_merge(mu1: torch.Tensor, var1: torch.Tensor, mu2: torch.Tensor,
                             var2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian proportional to the product of two Gaussian densities: ``(mu, var)`` with

        1/var = 1/var1 + 1/var2,        mu = (mu1/var1 + mu2/var2) * var

    (thesis eqs. 5.3-5.4; Sønderby et al. 2016, eqs. 17-18), elementwise, broadcasting the inputs.

    Derivation: per unit, ``log N(z; mu1, var1) + log N(z; mu2, var2)`` is a quadratic in ``z``,

        -z^2/2 (1/var1 + 1/var2) + z (mu1/var1 + mu2/var2) + const,

    and completing the square gives ``-(z - mu)^2 / (2 var) + const`` with the ``var`` and ``mu`` above: the
    product is ``N(z; mu, var)`` times a constant, ``N(mu1; mu2, var1 + var2)`` (the integral of the product). So the
    *precisions* add, and the mean is the precision-weighted average of the two means: the more certain of the two
    (the bottom-up likelihood term ``mu_hat, sigma_hat^2`` or the top-down prior ``mu_p, sigma^2_p``) dominates.

    Computed as ``var = var1 var2 / (var1 + var2)``, ``mu = (mu1 var2 + mu2 var1) / (var1 + var2)``, the same
    expressions multiplied through by ``var1 var2``, which avoids forming large precisions for tiny variances.
    """
    total = var1 + var2
    return (mu1 * var2 + mu2 * var1) / total, var1 * var2 / total


@dataclass
class LVAEConfig(HVAEConfig):
    """The options of :class:`dgmlab.models.hvae.HVAEConfig`; ``hidden[i]`` is the width of the two hidden layers of
    the bottom-up MLP ``d_{i+1} = MLP(d_i)`` and of the generative MLP of stage ``i+1``."""


@register
class LVAE(HierarchicalVAE):
    """Ladder VAE: a deterministic bottom-up pass, then top-down inference that precision-weights the generative
    prior p(zi|zi+1) with a bottom-up Gaussian likelihood (thesis 5.1-5.5)."""

    name: ClassVar[str] = "lvae"
    Config: ClassVar[type] = LVAEConfig
    recipes: ClassVar[dict[str, dict]] = {"mnist": thesis_mnist_recipe("LVAE+BN+WU")}

    def __init__(self, config: LVAEConfig):
        super().__init__(config)
        c = config
        sizes, widths = c.sizes, c.widths
        ins = (c.x_dim, *widths[:-1])
        # deterministic bottom-up pass d_i = MLP(d_{i-1}), d_0 = x (Sønderby et al. eq. 13)
        self.up = nn.ModuleList(dnn.MLP(ins[i], (widths[i], widths[i]), act=c.activation, batch_norm=c.batch_norm)
                                for i in range(len(sizes)))
        # mu_hat_i = Linear(d_i), sigma_hat^2_i = softplus(Linear(d_i)) (eqs. 14-15)
        self.q_hat = nn.ModuleList(gaussian_head(c, widths[i], sizes[i]) for i in range(len(sizes)))

    def analytic_layers(self) -> set[int]:
        """Every layer: ``q(z_i|z_{i+1}, x)`` and ``p(z_i|z_{i+1})`` are Gaussians at the same sample ``z_{i+1}``."""
        return set(range(self.n_layers))

    def bottom_up(self, x: torch.Tensor) -> list:
        """The approximate Gaussian likelihood terms ``N(mu_hat_i, sigma_hat^2_i)``, one per layer (eqs. 13-15)."""
        out, d = [], x
        for mlp, head in zip(self.up, self.q_hat):
            d = mlp(d)
            out.append(head(d))
        return out

    def infer(self, x, sample_shape=(), noise=None):
        """Bottom-up pass, then top-down: ``z_L ~ N(mu_hat_L, sigma_hat^2_L)``; for ``i = L-1..1`` the prior
        ``p(z_i|z_{i+1})`` at the sampled ``z_{i+1}``, merged with the likelihood term (5.2)-(5.4)."""
        return top_down(self.bottom_up(x), self.prior_top(x), lambda i, parent: self.p_z[i](parent), sample_shape,
                        noise)


def top_down(like, prior_top, prior, sample_shape=(), noise=None):
    """The ladder's top-down inference (5.2)-(5.4), shared by the LVAE and FAME: ``like`` holds the bottom-up
    likelihood terms of every layer (bottom first), ``prior_top`` is ``p(z_L)`` and ``prior(i, z_parent)`` the
    generative ``p(z_i|z_{i+1})``. Returns the posteriors, priors and samples of every layer."""
    n = len(like)
    q, p, z = [None] * n, [None] * n, [None] * n
    top = n - 1
    q[top], p[top] = like[top], prior_top
    z[top] = draw(q[top], None if noise is None else noise[top], sample_shape)
    for i in reversed(range(top)):
        p[i] = prior(i, z[i + 1])  # the generative network, shared with generation
        hat, prior_i = like[i].base_dist, p[i].base_dist
        q[i] = normal(*precision_weighted_merge(hat.loc, hat.variance, prior_i.loc, prior_i.variance))
        z[i] = draw(q[i], None if noise is None else noise[i])
    return q, p, z


__all__ = ["LVAE", "LVAEConfig", "precision_weighted_merge", "top_down"]
