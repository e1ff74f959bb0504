"""The 2-D potential of thesis Fig. 4.4 (Appendix A, Fig. 2a,b): a plain Gaussian q(z) against an auxiliary q(a) q(z|a).

There is no data here. The target is an unnormalised density ``f(z) = exp(-U(z))`` over ``z`` in the plane, and a
variational family is fitted by maximising a lower bound on its log normaliser ``log Z`` (thesis eqs. 4.16-4.19,
reproduction notes T3):

* plain Gaussian ``q(z) = N(m, diag s^2)`` (the VAE-style fit, eq. 4.17 with ``a`` unused)::

      log Z >= E_q(z)[ -U(z) - log q(z) ]

* auxiliary model, ``q(a, z) = q(a) q(z|a)`` and ``p(a, z) = p(z) p(a|z)`` (eq. 4.19 with the sign of reproduction
  notes T2)::

      log Z >= E_q(a) q(z|a)[ -U(z) + log p(a|z) - log q(a) - log q(z|a) ]

  Integrating ``a`` out, ``q(z) = int q(a) q(z|a) da`` is an infinite mixture of Gaussians and can be multi-modal.

The gap of either bound is a KL divergence: ``log Z - bound = KL(q(z) || p(z))`` for the plain Gaussian and
``KL(q(z) || p(z)) + E_q(z) KL(q(a|z) || p(a|z))`` for the auxiliary model, so ``exact_log_z`` (grid quadrature) lets
us read off how far each fit is from the truth.

Two readings of the energy (reproduction notes T2):

* ``"ring"`` (default, our choice):
  ``U(z) = 1/2 ((||z||_2 - 2)/0.4)^2 - log(e^{-1/2 ((z2-2)/0.6)^2} + e^{-1/2 ((z2+2)/0.6)^2})``,
  a ring of radius 2 cut into two arcs around ``(0, +2)`` and ``(0, -2)`` (potential U1 of Rezende & Mohamed, 2015,
  turned by 90 degrees). Two modes, as the thesis text says.
* ``"literal"``: eq. (4.18) as printed, ``||z_1|| = |z_1|``; then ``exp(-U)`` factorises and has four modes at
  ``(+-2, +-2)``.

Both readings use ``p(z) = exp(-U(z)) / Z``; the thesis prints ``e^{U(z)}``, which cannot be normalised.

Used by ``book/ch04_semi_supervised/potential.ipynb``. Typical use::

    target = Potential("ring")
    q = make_q("auxiliary")
    history = fit_potential(q, target, PotentialTrainConfig(steps=3000, warmup_from=3.0, warmup_steps=1500))
    bound, stderr = estimate_bound(q, target)          # compare with target.exact_log_z()
    coverage = mode_coverage(q.sample(20_000), target)  # coverage.covers_all: both modes found?
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Sequence

import torch
from torch import nn
from torch.distributions import Independent, Normal

from dgmlab import nn as dnn
from dgmlab.models.base import Output
from dgmlab.runtime import seed_everything

Reading = Literal["ring", "literal"]
READINGS: tuple[str, ...] = ("ring", "literal")

_RING_RADIUS, _RING_WIDTH = 2.0, 0.4  # first term of eq. (4.18)
_MODE_OFFSET, _MODE_WIDTH = 2.0, 0.6  # bimodal factor of eq. (4.18)


# --------------------------------------------------------------------------------------------------------------------
# The target: p(z) = exp(-U(z)) / Z
# --------------------------------------------------------------------------------------------------------------------

def _check_z(z: torch.Tensor) -> None:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    if not torch.is_floating_point(z):
        raise TypeError(f"z must be a floating-point tensor, got dtype {z.dtype}; convert with z.float()")
    if z.dim() < 1 or z.shape[-1] != 2:
        raise ValueError(f"z must have a last axis of size 2 (points in the plane), got shape {tuple(z.shape)}")


def energy(z: torch.Tensor, reading: Reading = "ring") -> torch.Tensor:
    """The energy ``U(z)`` of thesis eq. (4.18), one value per point; ``z`` has shape ``(..., 2)``.

    ``reading="ring"`` uses the Euclidean norm of the whole vector in the first term (two modes near ``(0, +-2)``);
    ``reading="literal"`` uses ``|z_1|`` as printed (four modes at ``(+-2, +-2)``). See reproduction notes T2.
    """
    _check_z(z)
    z1, z2 = z[..., 0], z[..., 1]
    if reading == "ring":
        radius = torch.linalg.vector_norm(z, dim=-1)
    elif reading == "literal":
        radius = z1.abs()
    else:
        raise ValueError(f"unknown reading {reading!r} of eq. (4.18); choose one of {READINGS}")
    ring = 0.5 * ((radius - _RING_RADIUS) / _RING_WIDTH) ** 2
    bumps = torch.stack([-0.5 * ((z2 - _MODE_OFFSET) / _MODE_WIDTH) ** 2,
                         -0.5 * ((z2 + _MODE_OFFSET) / _MODE_WIDTH) ** 2], dim=-1)
    return ring - torch.logsumexp(bumps, dim=-1)


@dataclass(frozen=True)
class Potential:
    """The unnormalised target ``f(z) = exp(-U(z))`` for one reading of eq. (4.18)."""

    reading: Reading = "ring"

    def __post_init__(self):
        if self.reading not in READINGS:
            raise ValueError(f"unknown reading {self.reading!r} of eq. (4.18); choose one of {READINGS}")

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """``U(z)``."""
        return energy(z, self.reading)

    def log_f(self, z: torch.Tensor) -> torch.Tensor:
        """``log f(z) = -U(z)``: the unnormalised log density."""
        return -energy(z, self.reading)

    @property
    def modes(self) -> torch.Tensor:
        """The centres of the modes, shape ``(n_modes, 2)``: ``(0, +-2)`` for the ring, ``(+-2, +-2)`` literally."""
        r, o = _RING_RADIUS, _MODE_OFFSET
        if self.reading == "ring":
            return torch.tensor([[0.0, o], [0.0, -o]])
        return torch.tensor([[-r, o], [r, o], [-r, -o], [r, -o]])

    def grid(self, lim: float = 4.0, n: int = 201,
             dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z1, z2, log_f)`` on an ``n x n`` grid over ``[-lim, lim]^2`` (``meshgrid`` with ``indexing="xy"``)."""
        axis = torch.linspace(-lim, lim, n, dtype=dtype)
        z1, z2 = torch.meshgrid(axis, axis, indexing="xy")
        return z1, z2, self.log_f(torch.stack([z1, z2], dim=-1))

    def exact_log_z(self, lim: float = 7.0, n: int = 1401) -> float:
        """``log Z = log int exp(-U(z)) dz`` by the midpoint rule on a fine grid over ``[-lim, lim]^2`` (float64).

        The density falls below ``e^{-30}`` outside radius 6, so the truncation error is negligible; with spacing
        0.01 against widths 0.4 and 0.6 the grid error is far below the Monte Carlo error of any bound we compare.
        """
        if lim < 5.0 or n < 200:
            raise ValueError(f"the grid is too coarse or too small (lim={lim}, n={n}); use lim >= 5 and n >= 200")
        h = 2 * lim / n
        axis = torch.linspace(-lim + h / 2, lim - h / 2, n, dtype=torch.float64)  # cell midpoints
        z1, z2 = torch.meshgrid(axis, axis, indexing="xy")
        log_f = self.log_f(torch.stack([z1, z2], dim=-1))
        return float(torch.logsumexp(log_f.flatten(), dim=0) + 2 * math.log(h))

    def sample_exact(self, n: int, lim: float = 6.0, cells: int = 600,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples of the exact ``p(z)``: pick grid cells with probability ``p`` (quadrature weights), then a
        uniform point inside the cell. Exact up to the grid resolution (cell width ``2 lim / cells``)."""
        h = 2 * lim / cells
        axis = torch.linspace(-lim + h / 2, lim - h / 2, cells, dtype=torch.float64)
        z1, z2 = torch.meshgrid(axis, axis, indexing="xy")
        centres = torch.stack([z1, z2], dim=-1).reshape(-1, 2)
        probs = torch.softmax(self.log_f(centres), dim=0)
        idx = torch.multinomial(probs, n, replacement=True, generator=generator)
        jitter = (torch.rand(n, 2, dtype=torch.float64, generator=generator) - 0.5) * h
        return (centres[idx] + jitter).float()


def importance_log_z(target: Potential, proposal: torch.distributions.Distribution, n: int = 200_000,
                     generator_seed: int | None = None) -> tuple[float, float]:
    """Monte Carlo estimate of ``log Z`` by importance sampling, ``log mean_s f(z_s) / r(z_s)`` with ``z_s ~ r``.

    Returns ``(estimate, standard error)``; the error is that of the mean weight, carried to the log by the delta
    method. ``proposal`` must cover the target's support (a broad Gaussian does). ``generator_seed`` reseeds torch's
    global RNG first.
    """
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    with torch.no_grad():
        z = proposal.sample((n,))
        log_w = target.log_f(z) - proposal.log_prob(z)
        log_mean = torch.logsumexp(log_w, 0) - math.log(n)
        w = torch.exp(log_w - log_mean)  # weights relative to their mean
        stderr = float(w.std() / math.sqrt(n))
    return float(log_mean), stderr


# --------------------------------------------------------------------------------------------------------------------
# Variational families
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class GaussianQConfig:
    """A plain diagonal Gaussian ``q(z) = N(m, diag s^2)`` with free parameters (the VAE-style family)."""

    dim_z: int = 2
    init_spread: float = 1.0  # the initial mean is drawn from N(0, init_spread^2) so that restarts differ


@dataclass
class AuxiliaryQConfig:
    """The auxiliary family of eq. (4.19) and reproduction notes T3: ``dim(a) = 4``, ``dim(z) = 2``, 3 x 20 ReLU."""

    dim_z: int = 2
    dim_a: int = 4
    hidden: tuple[int, ...] = (20, 20, 20)
    activation: str = "relu"
    init: str = "glorot"  # Glorot-normal weights as in A §3 (ReLU gain on hidden layers); "torch" = PyTorch default


def _free_gaussian(mean: torch.Tensor, logvar: torch.Tensor) -> Independent:
    return Independent(Normal(mean, torch.exp(0.5 * logvar.clamp(dnn.LOGVAR_MIN, dnn.LOGVAR_MAX))), 1)


def _glorot_init(module: nn.Module) -> None:
    # Hidden layers get the ReLU gain so that the a -> z map is not nearly constant at the start; heads gain 1.
    if isinstance(module, dnn.MLP):
        for layer in module:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight, gain=nn.init.calculate_gain("relu"))
                nn.init.zeros_(layer.bias)
    elif isinstance(module, dnn.GaussianHead):
        for layer in (module.mu, module.scale):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)


class GaussianQ(nn.Module):
    """``q(z) = N(z | m, diag s^2)``; bound ``E_q[-U(z) - log q(z)]`` (thesis eq. 4.17: the auxiliary bound with ``a``
    dropped)."""

    kind = "gaussian"

    def __init__(self, config: GaussianQConfig | None = None):
        super().__init__()
        self.config = config or GaussianQConfig()
        d = self.config.dim_z
        self.mean = nn.Parameter(self.config.init_spread * torch.randn(d))
        self.logvar = nn.Parameter(torch.zeros(d))

    def q_z(self) -> Independent:
        return _free_gaussian(self.mean, self.logvar)

    def sample(self, n: int) -> torch.Tensor:
        """``n`` samples ``z ~ q(z)``, shape ``(n, dim_z)``."""
        return self.q_z().sample((n,))

    def bound(self, target: Potential, n: int, beta: float = 1.0, temperature: float = 1.0) -> Output:
        """Monte Carlo bound with ``n`` reparameterised samples; ``beta`` scales the ``-U`` term (annealing) in the
        loss only; ``terms["bound"]`` is always the true bound (beta = 1). ``temperature`` is accepted for a common
        signature and has no effect: there is no auxiliary term."""
        q = self.q_z()
        z = q.rsample((n,))
        log_f, log_q_z = target.log_f(z), q.log_prob(z)
        per_sample = log_f - log_q_z
        loss = -(beta * log_f - log_q_z).mean()
        return Output(loss, {"log_f": log_f.mean(), "log_q_z": log_q_z.mean(), "bound": per_sample.mean()},
                      {"bound_std": float(per_sample.detach().std())})


class AuxiliaryQ(nn.Module):
    """``q(a, z) = q(a) q(z|a)`` with the auxiliary generative factor ``p(a|z)`` (thesis eqs. 4.16 and 4.19).

    * ``q(a) = N(a | m_a, diag s_a^2)``: free parameters, no input (reproduction notes T3);
    * ``q(z|a) = N(z | mu_{z,phi}(a), sigma^2_{z,phi}(a))``: MLP 3 x 20 ReLU with mu / log-variance heads;
    * ``p(a|z) = N(a | mu_{a,theta}(z), sigma^2_{a,theta}(z))``: the same architecture (eq. 4.13 without ``x``).

    If ``p(a|z)`` ignored ``z`` the optimum would set ``q(a)`` to a point mass and the bound would fall back to the
    plain Gaussian one (eq. 4.17); the learnt ``p(a|z)`` is what pays for a multi-modal ``q(z)``.
    """

    kind = "auxiliary"

    def __init__(self, config: AuxiliaryQConfig | None = None):
        super().__init__()
        self.config = c = config or AuxiliaryQConfig()
        self.q_a_mean = nn.Parameter(torch.zeros(c.dim_a))
        self.q_a_logvar = nn.Parameter(torch.zeros(c.dim_a))
        self.q_z_given_a = dnn.gaussian(c.dim_a, c.hidden, c.dim_z, "logvar", c.activation)
        self.p_a_given_z = dnn.gaussian(c.dim_z, c.hidden, c.dim_a, "logvar", c.activation)
        if c.init == "glorot":
            self.apply(_glorot_init)
        elif c.init != "torch":
            raise ValueError(f"unknown init {c.init!r}; choose 'glorot' (A §3) or 'torch' (PyTorch's default)")

    def q_a(self) -> Independent:
        return _free_gaussian(self.q_a_mean, self.q_a_logvar)

    @torch.no_grad()
    def sample(self, n: int, return_a: bool = False):
        """``n`` samples ``a ~ q(a)``, ``z ~ q(z|a)``; returns ``z`` (and ``a`` when ``return_a``)."""
        a = self.q_a().sample((n,))
        z = self.q_z_given_a(a).sample()
        return (z, a) if return_a else z

    def bound(self, target: Potential, n: int, beta: float = 1.0, temperature: float = 1.0) -> Output:
        """Monte Carlo estimate of eq. (4.19) with ``n`` reparameterised samples of ``(a, z)``.

        In the loss only, ``beta`` scales the ``-U`` term (annealing) and ``temperature`` scales the auxiliary KL
        ``log q(a) - log p(a|z)`` (see ``PotentialTrainConfig``: below 1 it penalises the use of ``a``, above 1 it
        rewards it); ``terms["bound"]`` is always the bound itself.
        """
        q_a = self.q_a()
        a = q_a.rsample((n,))
        q_z = self.q_z_given_a(a)
        z = q_z.rsample()
        log_f = target.log_f(z)
        log_p_a_given_z = self.p_a_given_z(z).log_prob(a)
        log_q_a, log_q_z_given_a = q_a.log_prob(a), q_z.log_prob(z)
        aux_kl = log_q_a - log_p_a_given_z  # single-sample estimate of the KL between q(a) and p(a|z)
        per_sample = log_f - aux_kl - log_q_z_given_a
        loss = -(beta * log_f - temperature * aux_kl - log_q_z_given_a).mean()
        terms = {"log_f": log_f.mean(), "log_p_a_given_z": log_p_a_given_z.mean(), "log_q_a": log_q_a.mean(),
                 "log_q_z_given_a": log_q_z_given_a.mean(), "bound": per_sample.mean()}
        return Output(loss, terms, {"bound_std": float(per_sample.detach().std())})


FAMILIES = {"gaussian": GaussianQ, "auxiliary": AuxiliaryQ}


def make_q(kind: str, config=None) -> GaussianQ | AuxiliaryQ:
    """Build a variational family by name: ``"gaussian"`` or ``"auxiliary"``."""
    try:
        return FAMILIES[kind](config)
    except KeyError:
        raise ValueError(f"unknown variational family {kind!r}; choose one of {sorted(FAMILIES)}") from None


@torch.no_grad()
def estimate_bound(q: GaussianQ | AuxiliaryQ, target: Potential, n: int = 100_000,
                   chunk: int = 50_000) -> tuple[float, float]:
    """The bound with ``n`` fresh samples: ``(mean, standard error)`` in nats (beta = 1)."""
    if n < 2:
        raise ValueError(f"need at least 2 samples to estimate the bound and its error, got n={n}")
    sums, sq, seen = 0.0, 0.0, 0
    while seen < n:
        m = min(chunk, n - seen)
        out = q.bound(target, m)
        mean, std = float(out.terms["bound"]), out.metrics["bound_std"]
        sums += mean * m
        sq += (std**2 * (m - 1) + mean**2 * m) if m > 1 else mean**2
        seen += m
    mean = sums / n
    var = max(sq / n - mean**2, 0.0) * n / (n - 1)
    return mean, math.sqrt(var / n)


# --------------------------------------------------------------------------------------------------------------------
# Mode coverage
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class ModeCoverage:
    """Where the samples of a fit sit. ``fractions[k]`` is the share of samples within ``radius`` of mode ``k``;
    mode ``k`` is *covered* when ``fractions[k] >= thresholds[k]``. ``covers_all`` is True when every mode of the
    target is covered (both modes for the ring reading, all four for the literal one)."""

    fractions: list[float]  # per mode, in the order of Potential.modes
    thresholds: list[float]
    radius: float

    @property
    def covered(self) -> list[bool]:
        return [f >= t for f, t in zip(self.fractions, self.thresholds)]

    @property
    def n_covered(self) -> int:
        return sum(self.covered)

    @property
    def covers_all(self) -> bool:
        return all(self.covered)


@lru_cache(maxsize=16)
def exact_mode_fractions(target: Potential, radius: float = 1.0, lim: float = 7.0, n: int = 701) -> tuple[float, ...]:
    """The probability mass of the exact ``p(z)`` within ``radius`` of each mode (grid quadrature), for reference:
    about 0.24 per mode for the ring reading and 0.21 for the literal one with ``radius=1``."""
    h = 2 * lim / n
    axis = torch.linspace(-lim + h / 2, lim - h / 2, n, dtype=torch.float64)
    z1, z2 = torch.meshgrid(axis, axis, indexing="xy")
    z = torch.stack([z1, z2], dim=-1).reshape(-1, 2)
    w = torch.softmax(target.log_f(z), dim=0)
    near = torch.cdist(z, target.modes.to(torch.float64)) <= radius
    return tuple((w[:, None] * near).sum(0).tolist())


def mode_coverage(z: torch.Tensor, target: Potential, radius: float = 1.0, relative: float = 0.75) -> ModeCoverage:
    """Share of the samples ``z`` (shape ``(n, 2)``) within ``radius`` of each mode centre, and which modes are
    covered.

    Criterion: a mode is covered when ``q`` puts at least ``relative`` (default three quarters) of the mass that the
    exact ``p(z)`` puts within ``radius`` of it. With ``radius=1`` the exact ring density has 0.24 there, so a mode
    counts as found when at least 18 % of the samples land near it. A one-mode fit leaks almost nothing into the other
    mode, and a broad Gaussian smeared over both modes (a poor local optimum, bound near -1.3) puts only about 10 %
    near each: neither counts as covering both.
    """
    _check_z(z)
    if not 0 < relative <= 1:
        raise ValueError(f"relative must lie in (0, 1], got {relative}")
    centres = target.modes.to(device=z.device, dtype=z.dtype)
    near = torch.cdist(z.reshape(-1, 2), centres) <= radius  # (n, n_modes)
    fractions = near.to(z.dtype).mean(0).tolist()
    thresholds = [relative * p for p in exact_mode_fractions(target, float(radius))]
    return ModeCoverage(fractions, thresholds, radius)

# --------------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class PotentialTrainConfig:
    """How to fit a family to the potential (reproduction notes T3; the thesis gives only Adam with lr 3e-4).

    ``anneal_steps > 0`` multiplies the ``-U`` term by ``beta`` rising linearly from ``anneal_from`` to 1 over the
    first ``anneal_steps`` steps (a broad q first, then the energy takes over).

    ``warmup_steps > 0`` multiplies the auxiliary KL ``log q(a) - log p(a|z)`` by a temperature ``T`` moving
    linearly from ``warmup_from`` to 1 over the first ``warmup_steps`` steps (only the auxiliary family has this
    term). Since ``E[log p(a|z) - log q(a)] = I(a; z) - E KL(q(a|z) || p(a|z))`` and
    ``E[-log q(z|a)] = H(z) - I(a; z)``, the loss is the negative of
    ``E[-U] + H(z) - (1 - T) I(a; z) - T E KL(q(a|z) || p(a|z))``:
    ``warmup_from=0`` (the warm-up of thesis Sec. 4.2 / Ch. 5) *penalises* using ``a`` here, where there is no data
    term, while ``warmup_from > 1`` rewards the mutual information early and then returns to the true bound.
    """

    steps: int = 3000
    batch_size: int = 500  # Monte Carlo samples of (a, z) per step
    lr: float = 3e-3
    anneal_steps: int = 0
    anneal_from: float = 0.01
    warmup_steps: int = 0
    warmup_from: float = 0.0
    log_every: int = 50
    clip_grad_norm: float | None = 10.0  # early steps can see huge energies far from the ring

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError(f"need steps >= 1, batch_size >= 2 and lr > 0, "
                             f"got {self.steps}, {self.batch_size}, {self.lr}")
        if self.warmup_steps < 0 or self.warmup_from < 0:
            raise ValueError(f"need warmup_steps >= 0 and warmup_from >= 0, "
                             f"got {self.warmup_steps}, {self.warmup_from}")
        if self.anneal_steps < 0 or not 0 < self.anneal_from <= 1:
            raise ValueError(f"need anneal_steps >= 0 and 0 < anneal_from <= 1, "
                             f"got {self.anneal_steps}, {self.anneal_from}")

    def beta(self, step: int) -> float:
        """The weight of the ``-U`` term at ``step`` (0-based)."""
        if self.anneal_steps == 0 or step >= self.anneal_steps:
            return 1.0
        return self.anneal_from + (1.0 - self.anneal_from) * step / self.anneal_steps

    def temperature(self, step: int) -> float:
        """The weight of the auxiliary KL at ``step`` (0-based)."""
        if self.warmup_steps == 0 or step >= self.warmup_steps:
            return 1.0
        return self.warmup_from + (1.0 - self.warmup_from) * step / self.warmup_steps


def fit_potential(q: GaussianQ | AuxiliaryQ, target: Potential, config: PotentialTrainConfig) -> list[dict]:
    """Maximise the bound of ``q`` on ``target`` with Adam (seed the global RNG first for reproducible Monte Carlo
    noise, as ``fit_restarts`` does); returns the history, one dict per ``log_every`` steps
    (and the last step): ``{"step", "beta", "temperature", "bound", "loss", <terms>}`` (the bound of that step's
    batch)."""
    opt = torch.optim.Adam(q.parameters(), lr=config.lr)
    history: list[dict] = []
    for step in range(config.steps):
        beta, temperature = config.beta(step), config.temperature(step)
        out = q.bound(target, config.batch_size, beta, temperature)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if config.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(q.parameters(), config.clip_grad_norm)
        opt.step()
        if step % config.log_every == 0 or step == config.steps - 1:
            row = {"step": step, "beta": beta, "temperature": temperature, "loss": float(out.loss.detach())}
            row.update({k: float(v.detach()) for k, v in out.terms.items()})
            history.append(row)
    return history


@dataclass
class FitResult:
    """One fitted restart: the model, its history, the bound on fresh samples and where its samples sit."""

    kind: str
    seed: int
    q: nn.Module
    history: list[dict]
    bound: float
    bound_stderr: float
    coverage: ModeCoverage
    log_z: float = float("nan")

    @property
    def gap(self) -> float:
        """``log Z - bound``: the KL divergence of the fit from the truth (plus the auxiliary KL for ``auxiliary``)."""
        return self.log_z - self.bound


def fit_restarts(kind: str, target: Potential, config: PotentialTrainConfig, seeds: Sequence[int],
                 family_config=None, eval_samples: int = 20_000, log_z: float | None = None) -> list[FitResult]:
    """Fit one fresh ``kind`` model per seed (the seed sets the initialisation and the Monte Carlo noise) and
    evaluate each with ``eval_samples`` fresh samples."""
    log_z = target.exact_log_z() if log_z is None else log_z
    results = []
    for seed in seeds:
        seed_everything(int(seed))
        q = make_q(kind, family_config)
        history = fit_potential(q, target, config)
        bound, stderr = estimate_bound(q, target, eval_samples)
        coverage = mode_coverage(q.sample(eval_samples), target)
        results.append(FitResult(kind, int(seed), q, history, bound, stderr, coverage, log_z))
    return results


__all__ = ["READINGS", "Potential", "energy", "importance_log_z", "GaussianQConfig", "AuxiliaryQConfig", "GaussianQ",
           "AuxiliaryQ", "make_q", "estimate_bound", "ModeCoverage", "mode_coverage", "exact_mode_fractions",
           "PotentialTrainConfig", "fit_potential", "FitResult", "fit_restarts"]
