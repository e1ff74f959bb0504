"""A linear-Gaussian latent-variable model whose likelihood and posterior are exact: a ruler for the bounds of ch. 3.

Generative model (probabilistic PCA)::

    p(z) = N(0, I_d),   p(x|z) = N(W z + b, sigma^2 I_D)

Everything is Gaussian, so the quantities that are intractable for a VAE have closed forms:

* the evidence ``p(x) = N(x | b, W W^T + sigma^2 I)``;
* the posterior ``p(z|x) = N(m(x), S)`` with precision ``S^-1 = I + W^T W / sigma^2`` and
  ``m(x) = S W^T (x - b) / sigma^2`` (a full covariance, the same for every ``x``);
* for a diagonal Gaussian ``q(z|x) = N(mu, diag s^2)`` the ELBO itself (3.11) and the gap
  ``log p(x) - ELBO = KL(q(z|x) || p(z|x))`` (3.9)-(3.10).

The inference model is an amortised *linear* encoder ``q(z|x) = N(A x + c, diag s^2)`` (trainable), or any module
that maps ``x`` to a diagonal Gaussian (:meth:`LinearGaussian.set_encoder`). The bounds (``elbo``, ``iw_bound``,
``log_likelihood``) are those of :class:`dgmlab.models.vae.LatentVariableModel`, so checking them here checks the VAE's.
[X] This model is not in the thesis; it is our test bed (it is factor analysis with isotropic noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from dgmlab.models.base import Output, check_input
from dgmlab.models.vae import LatentVariableModel

STD_FLOOR = 1e-4


@dataclass
class LinearGaussianConfig:
    """``x_dim = D`` observed units, ``z_dim = d`` latent units and the initial observation noise ``sigma``."""

    x_dim: int = 2
    z_dim: int = 1
    sigma: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.x_dim, int) and isinstance(self.z_dim, int) and self.x_dim >= 1 and self.z_dim >= 1):
            raise ValueError(f"x_dim and z_dim must be positive integers, got {self.x_dim!r}, {self.z_dim!r}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma!r}")


class LinearEncoder(nn.Module):
    """``q(z|x) = N(A x + c, diag s^2)``: linear mean, one standard deviation per unit (``s = softplus(r)``).

    The true posterior covariance does not depend on ``x`` in the linear-Gaussian model, so neither does ``s``.
    """

    def __init__(self, x_dim: int, z_dim: int):
        super().__init__()
        self.mean = nn.Linear(x_dim, z_dim)
        self.raw_std = nn.Parameter(torch.zeros(z_dim))

    def std(self) -> torch.Tensor:
        return F.softplus(self.raw_std) + STD_FLOOR

    def forward(self, x: torch.Tensor) -> Independent:
        mu = self.mean(x)
        return Independent(Normal(mu, self.std().expand_as(mu)), 1)

    @torch.no_grad()
    def set_(self, A: torch.Tensor, c: torch.Tensor, std: torch.Tensor) -> None:
        """Set ``A``, ``c`` and ``s`` (the inverse of softplus gives the raw parameter)."""
        self.mean.weight.copy_(A)
        self.mean.bias.copy_(c)
        s = (std - STD_FLOOR).clamp_min(1e-12)
        self.raw_std.copy_(s + torch.log(-torch.expm1(-s)))  # softplus^-1(s) = log(e^s - 1), stably


class LinearGaussian(LatentVariableModel):
    """``p(z) = N(0, I)``, ``p(x|z) = N(W z + b, sigma^2 I)`` with exact ``log p(x)`` and ``p(z|x)``.

    Parameters ``W`` (shape ``(x_dim, z_dim)``), ``b`` and ``log_sigma`` are trainable, as is the encoder.
    Build one with :meth:`from_params` or :meth:`random`. Works in any dtype: use ``.double()`` for tight checks.
    """

    name: ClassVar[str] = "linear_gaussian"
    setting: ClassVar[str] = "unsupervised"
    Config: ClassVar[type] = LinearGaussianConfig

    def __init__(self, config: LinearGaussianConfig):
        super().__init__(config)
        self.W = nn.Parameter(torch.randn(config.x_dim, config.z_dim) / math.sqrt(config.z_dim))
        self.b = nn.Parameter(torch.zeros(config.x_dim))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(config.sigma)))
        self.encoder: nn.Module = LinearEncoder(config.x_dim, config.z_dim)

    # --- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_params(cls, W: torch.Tensor, b: torch.Tensor, sigma: float) -> "LinearGaussian":
        """A model with the given ``W`` (``(x_dim, z_dim)``), ``b`` (``(x_dim,)``) and noise ``sigma``, in W's dtype."""
        if W.dim() != 2 or b.shape != (W.shape[0],):
            raise ValueError(f"W must have shape (x_dim, z_dim) and b shape (x_dim,), got {tuple(W.shape)} and "
                             f"{tuple(b.shape)}")
        model = cls(LinearGaussianConfig(W.shape[0], W.shape[1], float(sigma))).to(W.dtype).to(W.device)
        with torch.no_grad():
            model.W.copy_(W)
            model.b.copy_(b)
        return model

    @classmethod
    def random(cls, x_dim: int, z_dim: int, sigma: float = 0.5, seed: int = 0, orthogonal: bool = False,
               dtype: torch.dtype = torch.float64) -> "LinearGaussian":
        """A random model. With ``orthogonal=True`` the columns of ``W`` are orthogonal, so the posterior is diagonal
        and a diagonal ``q`` can match it exactly (zero gap)."""
        gen = torch.Generator().manual_seed(seed)
        W = torch.randn(x_dim, z_dim, generator=gen, dtype=dtype)
        if orthogonal:
            if z_dim > x_dim:
                raise ValueError(f"orthogonal columns need z_dim <= x_dim, got z_dim={z_dim}, x_dim={x_dim}")
            Q, _ = torch.linalg.qr(W)
            W = Q * torch.linspace(1.0, 2.0, z_dim, dtype=dtype)  # distinct column norms
        b = torch.randn(x_dim, generator=gen, dtype=dtype)
        model = cls.from_params(W, b, sigma)
        with torch.no_grad():  # a generic starting encoder, reproducible from the seed
            model.encoder.mean.weight.copy_(0.1 * torch.randn(z_dim, x_dim, generator=gen, dtype=dtype))
            model.encoder.mean.bias.zero_()
        return model

    # --- generative and inference model -------------------------------------------------------------------------
    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def decode(self, z: torch.Tensor) -> Independent:
        """``p(x|z) = N(W z + b, sigma^2 I)``."""
        self.check_latent(z)
        mean = z @ self.W.T + self.b
        return Independent(Normal(mean, self.sigma.expand_as(mean)), 1)

    def encode(self, x: torch.Tensor) -> Independent:
        """``q(z|x)`` from the current encoder (a diagonal Gaussian)."""
        check_input(x, self.config.x_dim)
        return self.encoder(x)

    def set_encoder(self, encoder: nn.Module) -> None:
        """Plug in any module mapping ``x`` to a diagonal Gaussian ``Independent(Normal, 1)`` over ``z_dim`` units,
        e.g. ``dgmlab.nn.gaussian(x_dim, (64,), z_dim)``."""
        self.encoder = encoder

    # --- exact quantities ---------------------------------------------------------------------------------------
    def marginal(self) -> MultivariateNormal:
        """``p(x) = N(b, W W^T + sigma^2 I)``."""
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.config.x_dim, dtype=self.W.dtype, device=self.W.device)
        return MultivariateNormal(self.b, covariance_matrix=cov)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` per data point."""
        check_input(x, self.config.x_dim)
        return self.marginal().log_prob(x)

    def posterior_precision(self) -> torch.Tensor:
        """``S^-1 = I + W^T W / sigma^2`` (the same for every x)."""
        eye = torch.eye(self.config.z_dim, dtype=self.W.dtype, device=self.W.device)
        return eye + self.W.T @ self.W / self.sigma**2

    def posterior(self, x: torch.Tensor) -> MultivariateNormal:
        """Exact ``p(z|x) = N(S W^T (x - b) / sigma^2, S)``, batch shape ``x.shape[:-1]``."""
        check_input(x, self.config.x_dim)
        cov = torch.linalg.inv(self.posterior_precision())
        mean = (x - self.b) @ (self.W @ cov) / self.sigma**2
        return MultivariateNormal(mean, covariance_matrix=cov)

    def elbo_exact(self, x: torch.Tensor) -> torch.Tensor:
        """The ELBO (3.11) of the current diagonal ``q(z|x) = N(mu, diag s^2)`` without Monte Carlo:

        ``E_q log p(x|z) = -D/2 log(2 pi sigma^2) - (||x - W mu - b||^2 + sum_j s_j^2 ||W_j||^2) / (2 sigma^2)``,
        minus the analytic ``KL(q(z|x) || p(z))``.
        """
        q = self.encode(x)
        mu, var = q.base_dist.loc, q.base_dist.scale**2
        var_s = self.sigma**2
        resid = x - mu @ self.W.T - self.b
        expected_sq = (resid**2).sum(-1) + (var * (self.W**2).sum(0)).sum(-1)
        recon = -0.5 * self.config.x_dim * torch.log(2 * math.pi * var_s) - expected_sq / (2 * var_s)
        return recon - kl_divergence(q, self.prior(x))

    def posterior_gap(self, x: torch.Tensor) -> torch.Tensor:
        """``KL(q(z|x) || p(z|x))``, exact; it equals ``log p(x) - ELBO`` (3.10)."""
        q = self.encode(x)
        q_full = MultivariateNormal(q.base_dist.loc, scale_tril=torch.diag_embed(q.base_dist.scale))
        return kl_divergence(q_full, self.posterior(x))

    # --- training (e.g. with dgmlab.training.fit): probabilistic PCA by maximising the ELBO ---------------------------
    def step(self, batch: dict[str, torch.Tensor], epoch: int) -> Output:
        """Loss ``-ELBO`` (one reparameterised sample, analytic KL) on ``batch["x"]``."""
        elbo = self.elbo(batch["x"])
        terms = {k: v.mean().detach() for k, v in elbo.items()}
        return Output(loss=-elbo["elbo"].mean(), terms=terms, metrics={k: float(v) for k, v in terms.items()})

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000) -> dict[str, float]:
        """Exact test quantities: ``test_elbo`` (no Monte Carlo), ``test_log_px`` and ``test_gap`` (their
        difference, ``KL(q(z|x) || p(z|x))``), averaged over ``x``."""
        elbo, log_px = self.elbo_exact(x), self.log_px(x)
        return {"test_elbo": float(elbo.mean()), "test_log_px": float(log_px.mean()),
                "test_gap": float((log_px - elbo).mean())}

    @torch.no_grad()
    def use_optimal_encoder(self) -> None:
        """Set the linear encoder to the best diagonal Gaussian (the minimiser of ``KL(q || p(z|x))``): the exact
        posterior mean ``m(x)`` and variances ``1 / (S^-1)_jj``. The gap is then zero only if ``S`` is diagonal."""
        if not isinstance(self.encoder, LinearEncoder):
            raise TypeError("use_optimal_encoder needs the default LinearEncoder; call set_encoder(LinearEncoder(...))")
        prec = self.posterior_precision()
        A = torch.linalg.solve(prec, self.W.T) / self.sigma**2  # S W^T / sigma^2
        self.encoder.set_(A, -A @ self.b, prec.diagonal().rsqrt())


__all__ = ["LinearEncoder", "LinearGaussian", "LinearGaussianConfig"]
