"""Monte Carlo gradient estimators for ``grad_phi E_{q_phi(z)}[f(z)]`` (thesis section 3.2.1-3.2.2; reproduction
notes rn-gradient-variance).

Book section 3.2 (``book/ch03_generative_models/gradient_estimators.ipynb``) derives and compares them:

* the **score-function** (REINFORCE, likelihood-ratio) estimator (3.16)-(3.18)::

      grad_phi E_q[f(z)] = E_q[ f(z) grad_phi log q_phi(z) ]  ~=  (1/S) sum_s (f(z_s) - b_s) grad_phi log q_phi(z_s)

  which only needs ``f``'s *values*; a baseline ``b_s`` that does not depend on ``z_s`` leaves it unbiased, because the
  score ``grad_phi log q_phi(z)`` has mean zero (the control variate of NVIL, Mnih and Gregor, 2014);
* the **reparameterisation** (pathwise) estimator (3.19)-(3.21)::

      z = g_phi(eps) = mu + sigma * eps,  eps ~ N(0, I):   grad_phi E_q[f(z)] ~= (1/S) sum_s grad_phi f(g_phi(eps_s))

  which needs ``f`` to be differentiable in ``z``.

The problem is described by two functions:

* ``family(phi) -> q``: the variational distribution for parameters ``phi`` of shape ``(*lead, P)``, with batch shape
  ``(*lead, *extra)``. ``extra`` holds independent factors (e.g. one Gaussian per data point, see
  :func:`diagonal_gaussian`); the objective is the *sum* of their expectations;
* ``integrand(z, q) -> f``: the value ``f_e(z_e)`` per sample and factor, shape ``(S, *lead, *extra)``. It receives
  ``q`` so that an ELBO integrand ``log p(x, z) - log q(z)`` can be written (:func:`elbo_integrand`). The
  score-function estimator uses only its value (so for the ELBO it is exactly (3.18)); the reparameterised one
  differentiates through ``z`` *and* ``q`` (3.20).

Every estimator returns ``n_estimates`` independent estimates, each from ``n_samples`` samples, as a tensor of shape
``(n_estimates, P)``; :func:`summarize` turns them into bias, variance and standard errors. All computations follow the
dtype and device of ``phi``; the random numbers come from torch's global generator (seed it with
``dgmlab.seed_everything``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch.distributions import Distribution, Independent, Normal

Family = Callable[[torch.Tensor], Distribution]
Integrand = Callable[[torch.Tensor, Distribution], torch.Tensor]
Baseline = Union[None, float, torch.Tensor, str, "RunningMeanBaseline"]

BASELINE_NAMES = ("leave_one_out",)


# --- families and integrands --------------------------------------------------------------------------------------
def diagonal_gaussian(dim: int, n_factors: int | None = None) -> Family:
    """A family ``phi -> N(mu, diag sigma^2)`` with ``phi = (mu, log sigma)``, i.e. ``P = 2 * dim`` parameters.

    With ``n_factors = N`` the parameters of ``N`` independent Gaussians (one per data point, say) are stacked in one
    vector of ``P = N * 2 * dim`` entries and ``q`` has batch shape ``(*lead, N)``. ``log sigma`` is unconstrained,
    so plain gradient ascent on ``phi`` never produces an invalid distribution.
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if n_factors is not None and (not isinstance(n_factors, int) or n_factors < 1):
        raise ValueError(f"n_factors must be a positive integer or None, got {n_factors!r}")
    per_factor = 2 * dim
    expected = per_factor * (n_factors or 1)

    def family(phi: torch.Tensor) -> Independent:
        if phi.shape[-1] != expected:
            raise ValueError(f"phi must have {expected} entries in its last axis (mean and log-std of "
                             f"{n_factors or 1} x {dim}-d Gaussians), got shape {tuple(phi.shape)}")
        if n_factors is not None:
            phi = phi.reshape(*phi.shape[:-1], n_factors, per_factor)
        mu, log_sigma = phi[..., :dim], phi[..., dim:]
        return Independent(Normal(mu, log_sigma.exp()), 1)

    return family


def elbo_integrand(log_joint: Callable[[torch.Tensor], torch.Tensor]) -> Integrand:
    """The ELBO's integrand ``f(z) = log p(x, z) - log q(z)`` of (3.11), for a ``log_joint(z) = log p(x, z)``.

    Its expectation under ``q`` is the ELBO, so either estimator applied to it estimates the ELBO's gradient w.r.t. the
    variational parameters: the score-function one gives (3.18), the reparameterised one (3.20).
    """

    def integrand(z: torch.Tensor, q: Distribution) -> torch.Tensor:
        return log_joint(z) - q.log_prob(z)

    return integrand


# --- baselines ----------------------------------------------------------------------------------------------------
class RunningMeanBaseline:
    """An exponential moving average of past values of ``f``, one per factor:
    ``b <- decay * b + (1 - decay) * mean f``.

    The estimator uses the value *before* it is updated with the current samples, so ``b`` does not depend on them and
    the estimator stays unbiased. The first call has no history and uses ``b = 0``.
    """

    def __init__(self, decay: float = 0.9):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
        self.decay = decay
        self.value: torch.Tensor | None = None

    def current(self, f: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), dtype=f.dtype, device=f.device) if self.value is None else self.value

    def update(self, f: torch.Tensor) -> None:
        mean = f.detach().mean((0, 1))  # average over samples and replicates, one value per factor
        self.value = mean if self.value is None else self.decay * self.value + (1 - self.decay) * mean


def _baseline_values(baseline: Baseline, f: torch.Tensor) -> torch.Tensor:
    """The baseline ``b_s`` for every sample and factor, broadcastable to ``f`` (shape ``(S, R, *extra)``)."""
    if baseline is None:
        return torch.zeros((), dtype=f.dtype, device=f.device)
    if isinstance(baseline, RunningMeanBaseline):
        return baseline.current(f)
    if isinstance(baseline, str):
        if baseline != "leave_one_out":
            raise ValueError(f"unknown baseline {baseline!r}; use None, a number, a tensor with one value per factor, "
                             f"a RunningMeanBaseline or one of {BASELINE_NAMES}")
        s = f.shape[0]
        if s < 2:
            raise ValueError("the leave_one_out baseline averages the *other* samples, so it needs n_samples >= 2")
        # b_s = mean of the other S-1 values: independent of z_s, hence unbiased (the "RLOO" estimator)
        return (f.sum(0, keepdim=True) - f) / (s - 1)
    b = torch.as_tensor(baseline, dtype=f.dtype, device=f.device)
    extra = f.shape[2:]
    if b.shape != () and b.shape != extra:
        raise ValueError(f"a constant baseline must be a number or a tensor with one value per factor, shape "
                         f"{tuple(extra)}, got shape {tuple(b.shape)}")
    return b


# --- the estimators -----------------------------------------------------------------------------------------------
def _check(phi: torch.Tensor, n_samples: int, n_estimates: int) -> None:
    if not isinstance(phi, torch.Tensor) or phi.dim() != 1 or not torch.is_floating_point(phi):
        raise ValueError(f"phi must be a 1-d floating-point tensor of variational parameters, got "
                         f"{type(phi).__name__} {tuple(getattr(phi, 'shape', ()))}; flatten it with phi.reshape(-1)")
    for name, value in (("n_samples", n_samples), ("n_estimates", n_estimates)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _replicate(phi: torch.Tensor, *lead: int) -> torch.Tensor:
    """Independent, differentiable copies of ``phi`` with leading shape ``lead``: the gradient of a sum of per-copy
    terms w.r.t. them is every copy's own gradient, all from one backward pass."""
    return phi.detach().expand(*lead, phi.shape[0]).clone().requires_grad_(True)


def _values(integrand: Integrand, z: torch.Tensor, q: Distribution, shape: torch.Size) -> torch.Tensor:
    f = integrand(z, q)
    if f.shape != shape:
        raise ValueError(f"the integrand must return one value per sample and factor, shape {tuple(shape)}, "
                         f"got {tuple(f.shape)}")
    return f


def score_function_gradient(family: Family, integrand: Integrand, phi: torch.Tensor, n_samples: int,
                            n_estimates: int = 1, baseline: Baseline = None) -> torch.Tensor:
    """The score-function estimator (3.18): ``(1/S) sum_s sum_e (f_e(z_s) - b_se) grad_phi log q_e(z_s)``.

    With several factors ``e`` (e.g. one per data point), each factor's score is weighted by its *own* value ``f_e``:
    the other factors' values are independent of it and would only add variance (this is how a minibatch surrogate
    ``sum_n log w_n.detach() * log q(z_n|x_n)`` behaves too).

    Args:
        family: ``phi -> q_phi``; integrand: ``(z, q) -> f(z)`` (only its value is used, so for the ELBO integrand
            this is exactly (3.18)).
        phi: the variational parameters, shape ``(P,)``.
        n_samples: ``S``, samples per estimate.
        n_estimates: ``R`` independent estimates (for measuring the variance).
        baseline: ``None`` (plain REINFORCE); a number, or a tensor with one constant per factor (e.g. from
            :func:`optimal_baseline`); ``"leave_one_out"`` (``b_s`` = mean of the other ``S - 1`` values, needs
            ``S >= 2``); or a :class:`RunningMeanBaseline`, updated after use.

    Returns:
        Estimates of shape ``(R, P)``; each is unbiased whatever the baseline, since ``b_s`` never depends on ``z_s``
        and the score has mean zero.
    """
    _check(phi, n_samples, n_estimates)
    phi_r = _replicate(phi, n_estimates)
    q = family(phi_r)  # batch shape (R, *extra)
    with torch.no_grad():
        z = q.sample((n_samples,))
        f = _values(integrand, z, family(phi.detach()), z.shape[:1] + q.batch_shape)  # (S, R, *extra)
        b = _baseline_values(baseline, f)
    surrogate = ((f - b) * q.log_prob(z)).mean(0).sum()
    (grad,) = torch.autograd.grad(surrogate, phi_r)
    if isinstance(baseline, RunningMeanBaseline):
        baseline.update(f)
    return grad


def reparameterised_gradient(family: Family, integrand: Integrand, phi: torch.Tensor, n_samples: int,
                             n_estimates: int = 1) -> torch.Tensor:
    """The reparameterisation estimator (3.20): ``(1/S) sum_s grad_phi f(g_phi(eps_s))`` with ``z = g_phi(eps)``
    (3.19), e.g. ``mu + sigma * eps`` for a Gaussian (3.21). Needs ``q.rsample`` and an ``f`` differentiable in ``z``.

    Returns estimates of shape ``(n_estimates, P)``.
    """
    _check(phi, n_samples, n_estimates)
    phi_r = _replicate(phi, n_estimates)
    q = family(phi_r)
    if not q.has_rsample:
        raise ValueError(f"{type(q).__name__} cannot be reparameterised (no rsample); use score_function_gradient")
    z = q.rsample((n_samples,))  # (S, R, *extra, d), differentiable in phi_r
    f = _values(integrand, z, q, z.shape[:1] + q.batch_shape)
    if not f.requires_grad:
        # f is piecewise constant in z (a comparison, a rounding): its pathwise derivative is 0 wherever it exists,
        # so this estimator returns 0 -- a biased answer that the score-function estimator does not give.
        return torch.zeros_like(phi_r)
    (grad,) = torch.autograd.grad(f.mean(0).sum(), phi_r)
    return grad


def optimal_baseline(family: Family, integrand: Integrand, phi: torch.Tensor, n_samples: int = 1000) -> torch.Tensor:
    """The constant per factor ``b*_e = E[f_e |s_e|^2] / E[|s_e|^2]``, ``s_e = grad_phi log q_e(z)``, that minimises
    the total variance of the score-function estimator, estimated from ``n_samples`` pilot draws.

    (The variance of ``(f - b) s`` is ``E[(f - b)^2 |s|^2] - |grad|^2``; setting its derivative in ``b`` to zero
    gives ``b*``.) Draw the pilot samples separately from the ones the baseline is used with: then ``b*`` does not
    depend on them and the estimator stays unbiased. Returns a tensor of shape ``extra`` (a scalar for one factor).
    """
    _check(phi, n_samples, 1)
    phi_s = _replicate(phi, n_samples)  # one copy per sample: per-sample scores from one backward pass
    q = family(phi_s)  # batch shape (S, *extra)
    with torch.no_grad():
        z = q.sample()
        f = _values(integrand, z, family(phi.detach()), q.batch_shape)  # (S, *extra)
    log_q = q.log_prob(z).reshape(n_samples, -1)  # (S, E)
    score_sq = torch.stack([  # |grad log q_e|^2 per sample; a short loop over factors, in the pilot only
        torch.autograd.grad(log_q[:, e].sum(), phi_s, retain_graph=True)[0].pow(2).sum(-1)
        for e in range(log_q.shape[1])], dim=-1)
    f = f.reshape(n_samples, -1)
    b = (f * score_sq).sum(0) / score_sq.sum(0).clamp_min(torch.finfo(score_sq.dtype).tiny)
    return b.reshape(q.batch_shape[1:])


# --- measuring ----------------------------------------------------------------------------------------------------
@dataclass
class EstimatorSummary:
    """Statistics of ``R`` independent gradient estimates (each of shape ``(P,)``).

    Attributes:
        mean: their average, shape ``(P,)``.
        variance: the total variance ``sum_j Var[g_j]`` (the trace of the covariance), a float.
        std_error: the standard error of ``mean`` per coordinate, shape ``(P,)``.
        max_z: ``max_j |mean_j - exact_j| / std_error_j`` when an exact gradient was given (else ``nan``): about 1-3
            for an unbiased estimator, growing like ``sqrt(R)`` for a biased one.
    """

    mean: torch.Tensor
    variance: float
    std_error: torch.Tensor
    max_z: float


def summarize(estimates: torch.Tensor, exact: torch.Tensor | None = None) -> EstimatorSummary:
    """Mean, total variance, standard errors and (given the ``exact`` gradient) the largest z-score of the bias."""
    if estimates.dim() != 2 or estimates.shape[0] < 2:
        raise ValueError(f"estimates must have shape (R, P) with R >= 2 independent estimates, "
                         f"got {tuple(estimates.shape)}")
    mean = estimates.mean(0)
    var = estimates.var(0)
    se = (var / estimates.shape[0]).sqrt()
    max_z = float("nan")
    if exact is not None:
        if exact.shape != mean.shape:
            raise ValueError(f"exact gradient has shape {tuple(exact.shape)}, estimates have {tuple(mean.shape)}")
        max_z = float(((mean - exact).abs() / se.clamp_min(torch.finfo(se.dtype).tiny)).max())
    return EstimatorSummary(mean=mean, variance=float(var.sum()), std_error=se, max_z=max_z)


def variance_curve(estimator: Callable[[int], torch.Tensor], sample_sizes: list[int]) -> list[float]:
    """Total variance of ``estimator(S)`` (which returns ``(R, P)`` estimates) for every ``S`` in ``sample_sizes``."""
    return [summarize(estimator(s)).variance for s in sample_sizes]


__all__ = ["BASELINE_NAMES", "EstimatorSummary", "RunningMeanBaseline", "diagonal_gaussian", "elbo_integrand",
           "optimal_baseline", "reparameterised_gradient", "score_function_gradient", "summarize", "variance_curve"]
