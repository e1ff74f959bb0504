"""Gradient estimators (dgmlab.estimators, thesis eqs. 3.16-3.21): unbiasedness against closed-form gradients,
variance ordering, baselines, and clear errors."""

import math

import pytest
import torch

from dgmlab.estimators import (RunningMeanBaseline, diagonal_gaussian, elbo_integrand, optimal_baseline,
                               reparameterised_gradient, score_function_gradient, summarize, variance_curve)
from dgmlab.models.linear_gaussian import LinearGaussian

DTYPE = torch.float64
R = 4000  # independent estimates per check; the bias is judged in standard errors, so R only sets the resolution
Z_TOL = 4.5  # max |mean - exact| / std_error over all coordinates: fails with probability ~1e-4 for an unbiased one


def quadratic_problem():
    """``E_q ||z - c||^2`` under ``q = N(mu, diag sigma^2)``: value ``||mu - c||^2 + sum sigma^2``, gradient
    ``2 (mu - c)`` w.r.t. ``mu`` and ``2 sigma^2`` w.r.t. ``log sigma``."""
    c = torch.tensor([2.0, -1.0, 0.5], dtype=DTYPE)
    phi = torch.tensor([0.3, 0.2, -0.4, -0.3, 0.4, 0.1], dtype=DTYPE)  # (mu, log sigma)
    mu, log_sigma = phi[:3], phi[3:]
    exact = torch.cat([2 * (mu - c), 2 * torch.exp(2 * log_sigma)])
    return diagonal_gaussian(3), (lambda z, q: ((z - c) ** 2).sum(-1)), phi, exact


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("baseline", [None, 5.0, "leave_one_out", "running_mean", "optimal"])
def test_score_function_is_unbiased(baseline):
    family, f, phi, exact = quadratic_problem()
    if baseline == "running_mean":
        baseline = RunningMeanBaseline(decay=0.5)
        score_function_gradient(family, f, phi, 4, 8, baseline)  # give it some history first
    elif baseline == "optimal":
        baseline = optimal_baseline(family, f, phi, n_samples=2000)
    est = score_function_gradient(family, f, phi, n_samples=4, n_estimates=R, baseline=baseline)
    assert est.shape == (R, 6)
    stats = summarize(est, exact)
    assert stats.max_z < Z_TOL, f"score-function estimate is biased: {stats.mean} vs exact {exact}"


def test_reparameterised_is_unbiased():
    family, f, phi, exact = quadratic_problem()
    stats = summarize(reparameterised_gradient(family, f, phi, n_samples=4, n_estimates=R), exact)
    assert stats.max_z < Z_TOL


def test_a_biased_estimate_is_detected():
    # the check above is not vacuous: a gradient off by 5% in one coordinate fails it
    family, f, phi, exact = quadratic_problem()
    est = reparameterised_gradient(family, f, phi, n_samples=4, n_estimates=R)
    assert summarize(est, exact * torch.tensor([1.05, 1, 1, 1, 1, 1], dtype=DTYPE)).max_z > Z_TOL


def test_reparameterised_variance_is_below_score_function():
    family, f, phi, _ = quadratic_problem()
    rep = summarize(reparameterised_gradient(family, f, phi, 8, 2000)).variance
    sf = summarize(score_function_gradient(family, f, phi, 8, 2000)).variance
    assert rep < 0.2 * sf, f"reparameterised variance {rep:.3g} should be far below score-function {sf:.3g}"


@pytest.mark.parametrize("kind", ["leave_one_out", "optimal", "running_mean", "constant_mean"])
def test_control_variates_reduce_variance(kind):
    family, f, phi, _ = quadratic_problem()
    if kind == "optimal":
        baseline = optimal_baseline(family, f, phi, n_samples=4000)
    elif kind == "running_mean":
        baseline = RunningMeanBaseline(decay=0.5)
        for _ in range(10):
            score_function_gradient(family, f, phi, 8, 100, baseline)
    elif kind == "constant_mean":
        baseline = float(f(family(phi).sample((4000,)), None).mean())  # E[f] from a separate pilot run
    else:
        baseline = kind
    plain = summarize(score_function_gradient(family, f, phi, 8, 3000)).variance
    reduced = summarize(score_function_gradient(family, f, phi, 8, 3000, baseline=baseline)).variance
    assert reduced < 0.8 * plain, f"{kind}: variance {reduced:.3g} is not below the plain estimator's {plain:.3g}"


def test_variance_falls_like_one_over_s():
    family, f, phi, _ = quadratic_problem()
    v1, v16 = variance_curve(lambda s: reparameterised_gradient(family, f, phi, s, 3000), [1, 16])
    assert 8 < v1 / v16 < 32  # 16 in expectation


def linear_gaussian_elbo_problem(n_points=3):
    """Per-point diagonal q's for a linear-Gaussian model: the ELBO has a closed form, so its gradient is exact."""
    model = LinearGaussian.random(4, 2, sigma=0.8, seed=1).requires_grad_(False)
    x = model.marginal().sample((n_points,))
    family = diagonal_gaussian(2, n_factors=n_points)

    def log_joint(z):
        return model.decode(z).log_prob(x) + model.prior(z).log_prob(z)

    def exact_elbo(phi):
        q = family(phi)
        mu, var = q.base_dist.loc, q.base_dist.scale ** 2
        s2 = model.sigma ** 2
        resid = x - mu @ model.W.T - model.b
        expected_sq = (resid ** 2).sum(-1) + (var * (model.W ** 2).sum(0)).sum(-1)  # E_q ||x - W z - b||^2
        recon = -0.5 * 4 * torch.log(2 * math.pi * s2) - expected_sq / (2 * s2)
        return (recon - torch.distributions.kl_divergence(q, model.prior(mu))).sum()

    phi = torch.cat([torch.tensor([0.2, -0.1, -0.5, -0.2], dtype=DTYPE) + 0.1 * i for i in range(n_points)])
    phi_ = phi.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(exact_elbo(phi_), phi_)
    return family, elbo_integrand(log_joint), phi, exact, exact_elbo


def test_elbo_gradients_are_unbiased_on_linear_gaussian():
    family, f, phi, exact, exact_elbo = linear_gaussian_elbo_problem()
    # the integrand's expectation is the closed-form ELBO
    q = family(phi)
    mc = f(q.sample((5000,)), q).sum(-1)
    assert abs(float(mc.mean() - exact_elbo(phi))) < 5 * float(mc.std()) / math.sqrt(5000)
    rep = summarize(reparameterised_gradient(family, f, phi, 2, R), exact)
    sf = summarize(score_function_gradient(family, f, phi, 2, R, baseline="leave_one_out"), exact)
    assert rep.max_z < Z_TOL and sf.max_z < Z_TOL
    assert rep.variance < sf.variance


def test_optimal_baseline_has_one_value_per_factor():
    family, f, phi, _, _ = linear_gaussian_elbo_problem(n_points=3)
    b = optimal_baseline(family, f, phi, n_samples=200)
    assert b.shape == (3,)
    est = score_function_gradient(family, f, phi, 2, 5, baseline=b)
    assert est.shape == (5, phi.numel())


def test_reparameterised_gradient_of_a_step_function_is_zero():
    # f = 1[z > 0] is flat almost everywhere: the pathwise gradient is 0 although d/dmu P(z > 0) is not
    family = diagonal_gaussian(1)
    phi = torch.tensor([0.3, 0.0], dtype=DTYPE)
    f = lambda z, q: (z[..., 0] > 0).to(z.dtype)  # noqa: E731
    exact = torch.tensor([math.exp(-0.5 * 0.3**2) / math.sqrt(2 * math.pi), 0.0], dtype=DTYPE)
    exact[1] = -0.3 * exact[0]  # d/dlog sigma Phi(mu / sigma) = -(mu / sigma) phi(mu / sigma)
    assert torch.all(reparameterised_gradient(family, f, phi, 8, 10) == 0)
    assert summarize(score_function_gradient(family, f, phi, 8, R, "leave_one_out"), exact).max_z < Z_TOL


def test_bad_inputs_raise_clear_errors():
    family, f, phi, _ = quadratic_problem()
    with pytest.raises(ValueError, match="n_samples >= 2"):
        score_function_gradient(family, f, phi, 1, 3, baseline="leave_one_out")
    with pytest.raises(ValueError, match="unknown baseline"):
        score_function_gradient(family, f, phi, 2, 3, baseline="mean")
    with pytest.raises(ValueError, match="one value per factor"):
        score_function_gradient(family, f, phi, 2, 3, baseline=torch.zeros(6, dtype=DTYPE))
    with pytest.raises(ValueError, match="1-d"):
        reparameterised_gradient(family, f, phi.reshape(2, 3), 2, 3)
    with pytest.raises(ValueError, match="6 entries"):
        reparameterised_gradient(family, f, phi[:4], 2, 3)
    with pytest.raises(ValueError, match="positive integer"):
        reparameterised_gradient(family, f, phi, 0, 3)
    with pytest.raises(ValueError, match="one value per sample"):
        reparameterised_gradient(family, lambda z, q: z.sum(), phi, 2, 3)
    with pytest.raises(ValueError, match="R >= 2"):
        summarize(torch.zeros(1, 6))
    with pytest.raises(ValueError, match="decay"):
        RunningMeanBaseline(decay=1.0)
