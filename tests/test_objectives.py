"""The bounds of chapter 3 against exact answers: importance-weighted bound, chunked log-likelihood, KL terms, and the
linear-Gaussian model whose ``log p(x)`` and posterior are known in closed form (thesis eqs. 3.9-3.11, 3.31)."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from dgmlab import objectives
from dgmlab.models.linear_gaussian import LinearEncoder, LinearGaussian


# --- importance weights ---------------------------------------------------------------------------------------------
def test_iw_bound_is_log_of_mean_weight():
    log_w = torch.randn(7, 5, dtype=torch.float64)
    expected = torch.log(torch.exp(log_w).mean(0))
    torch.testing.assert_close(objectives.iw_bound(log_w), expected)
    torch.testing.assert_close(objectives.iw_bound(log_w[:1]), log_w[0])  # K = 1: the weight itself
    torch.testing.assert_close(objectives.iw_bound(log_w.T, dim=1), expected)


def test_iw_bound_is_stable_for_tiny_weights():
    log_w = torch.tensor([[-1e4], [-1e4 + math.log(3.0)]], dtype=torch.float64)
    torch.testing.assert_close(objectives.iw_bound(log_w), torch.tensor([-1e4 + math.log(2.0)], dtype=torch.float64))


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 500])
def test_chunked_log_mean_exp_equals_one_shot(chunk):
    k = 64
    log_w = 50 * torch.randn(k, 4, 3, dtype=torch.float64) - 300  # wide range: the running max must move
    served = []

    def next_chunk(n):
        start = sum(served)
        served.append(n)
        return log_w[start:start + n]

    out = objectives.chunked_log_mean_exp(next_chunk, k, chunk)
    torch.testing.assert_close(out, objectives.log_mean_exp(log_w, 0))
    assert sum(served) == k and max(served) <= chunk


def test_chunked_log_mean_exp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="positive integer"):
        objectives.chunked_log_mean_exp(lambda n: torch.zeros(n), 0, 10)
    with pytest.raises(ValueError, match="chunk"):
        objectives.chunked_log_mean_exp(lambda n: torch.zeros(n), 10, 0)
    with pytest.raises(ValueError, match="expected 5"):
        objectives.chunked_log_mean_exp(lambda n: torch.zeros(n + 1), 5, 10)


def test_effective_sample_size_limits():
    assert float(objectives.effective_sample_size(torch.zeros(10))) == pytest.approx(10.0)
    peaked = torch.tensor([0.0, -200.0, -200.0, -200.0])
    assert float(objectives.effective_sample_size(peaked)) == pytest.approx(1.0)
    torch.testing.assert_close(objectives.normalized_weights(torch.zeros(4, 2)).sum(0), torch.ones(2))


# --- KL ---------------------------------------------------------------------------------------------------------------
def _diag_gaussian(batch, dim, seed):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    std = 0.3 + torch.rand(batch, dim, generator=g, dtype=torch.float64)
    return Independent(Normal(mu, std), 1)


def test_kl_per_unit_sums_to_kl_and_matches_the_formula():
    q, p = _diag_gaussian(6, 4, 0), _diag_gaussian(6, 4, 1)
    units = objectives.kl_per_unit(q, p)
    assert units.shape == (6, 4)
    torch.testing.assert_close(units.sum(-1), kl_divergence(q, p))
    m1, s1, m2, s2 = q.base_dist.loc, q.base_dist.scale, p.base_dist.loc, p.base_dist.scale
    formula = torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5  # closed form (reproduction notes G15)
    torch.testing.assert_close(units, formula)


def test_analytic_kl_equals_monte_carlo_kl():
    torch.manual_seed(0)
    q, p = _diag_gaussian(3, 5, 2), _diag_gaussian(3, 5, 3)
    z = q.sample((200_000,))
    diff = q.log_prob(z) - p.log_prob(z)
    se = diff.std(0) / math.sqrt(len(z))
    assert torch.all((diff.mean(0) - kl_divergence(q, p)).abs() < 4 * se)


def test_active_units_counts_units_above_threshold():
    assert objectives.active_units(torch.tensor([0.0, 0.005, 0.02, 3.0])) == 2
    assert objectives.active_units(torch.tensor([0.0, 0.5]), threshold=1.0) == 0
    with pytest.raises(ValueError, match="mean\\(0\\)"):
        objectives.active_units(torch.zeros(3, 2))


def test_kl_temperature_schedule():
    assert objectives.kl_temperature(0, 0) == 1.0  # warm-up off
    assert objectives.kl_temperature(0, 10) == 0.0
    assert objectives.kl_temperature(5, 10) == pytest.approx(0.5)
    assert objectives.kl_temperature(10, 10) == 1.0 and objectives.kl_temperature(500, 10) == 1.0
    assert objectives.kl_temperature(0, 200, start=0.3) == pytest.approx(0.3)  # FAME's schedule
    assert objectives.kl_temperature(100, 200, start=0.3) == pytest.approx(0.65)
    with pytest.raises(ValueError):
        objectives.kl_temperature(0, -1)
    with pytest.raises(ValueError):
        objectives.kl_temperature(0, 10, start=1.5)


# --- the exact linear-Gaussian model ---------------------------------------------------------------------------------
@pytest.fixture
def lg():
    """A 6-d observation, 3-d latent model with a correlated posterior, so a diagonal q can never be exact."""
    model = LinearGaussian.random(6, 3, sigma=0.7, seed=0)
    torch.manual_seed(1)
    x = model.marginal().sample((16,))
    return model, x


def test_linear_gaussian_posterior_and_evidence_satisfy_bayes_rule(lg):
    model, x = lg
    z = torch.randn(5, 16, 3, dtype=torch.float64)
    lhs = model.posterior(x).log_prob(z)
    rhs = model.decode(z).log_prob(x) + model.prior(z).log_prob(z) - model.log_px(x)  # (3.1)
    torch.testing.assert_close(lhs, rhs)


def test_linear_gaussian_evidence_matches_sample_moments():
    model = LinearGaussian.random(3, 2, sigma=0.5, seed=4)
    torch.manual_seed(0)
    z = torch.randn(100_000, 2, dtype=torch.float64)
    x = model.decode(z).sample()
    marginal = model.marginal()
    torch.testing.assert_close(x.mean(0), marginal.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), marginal.covariance_matrix, atol=0.05, rtol=0.02)


def test_elbo_gap_equals_kl_to_the_true_posterior(lg):
    model, x = lg
    gap = model.log_px(x) - model.elbo_exact(x)  # (3.10)
    torch.testing.assert_close(gap, model.posterior_gap(x))
    assert torch.all(gap > 0.1)  # a random encoder is far from the posterior
    model.use_optimal_encoder()
    gap_opt = model.log_px(x) - model.elbo_exact(x)
    torch.testing.assert_close(gap_opt, model.posterior_gap(x))
    assert torch.all(gap_opt < gap) and torch.all(gap_opt > 1e-3)  # mean field cannot capture correlations


def test_monte_carlo_elbo_matches_exact_elbo(lg):
    model, x = lg
    torch.manual_seed(2)
    with torch.no_grad():
        _, _, log_px_z, log_pz, log_qz = model.joint_terms(x, (20_000,))
        per_sample = log_px_z + log_pz - log_qz
        se = per_sample.std(0) / math.sqrt(len(per_sample))
        assert torch.all((per_sample.mean(0) - model.elbo_exact(x)).abs() < 4 * se)
        torch.testing.assert_close(model.elbo(x, mc=20_000)["elbo"], model.elbo_exact(x), atol=0.0, rtol=0.02)


def test_iw_bound_grows_with_k_and_stays_below_log_px(lg):
    model, x = lg
    model.use_optimal_encoder()
    with torch.no_grad():  # a worse q makes the differences between K large
        model.encoder.raw_std.sub_(1.0)
        log_px = model.log_px(x).mean()
        elbo = float(model.elbo_exact(x).mean())
        torch.manual_seed(3)
        means, ses = [], []
        for k in (1, 5, 50):
            reps = torch.stack([model.iw_bound(x, k).mean() for _ in range(300)])
            means.append(float(reps.mean()))
            ses.append(float(reps.std() / math.sqrt(len(reps))))
    for m, se in zip(means, ses):
        assert m <= float(log_px) + 3 * se
    assert means[0] + 3 * (ses[0] + ses[1]) < means[1]
    assert means[1] + 3 * (ses[1] + ses[2]) < means[2]
    assert abs(means[0] - elbo) < 4 * ses[0]  # L_1 is the ELBO in expectation


def test_log_likelihood_matches_exact_log_px(lg):
    model, x = lg
    model.use_optimal_encoder()
    torch.manual_seed(4)
    estimate = model.log_likelihood(x, k=5000, chunk=500)
    exact = model.log_px(x).detach()
    assert estimate.shape == exact.shape
    # per point the Monte Carlo error of L_5000 here is about 0.013 nats (effective sample size ~2700 of 5000)
    torch.testing.assert_close(estimate, exact, atol=0.0, rtol=0.01)
    assert float((estimate - exact).abs().mean()) < 0.02
    assert abs(float((estimate - exact).mean())) < 0.01


def test_log_likelihood_with_the_exact_posterior_has_no_variance():
    # Orthogonal columns of W make the posterior diagonal: q = p(z|x) and every weight equals p(x).
    model = LinearGaussian.random(5, 2, sigma=0.5, seed=1, orthogonal=True)
    model.use_optimal_encoder()
    torch.manual_seed(0)
    x = model.marginal().sample((8,))
    exact = model.log_px(x).detach()
    torch.testing.assert_close(model.posterior_gap(x).detach(), torch.zeros(8, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(model.log_weights(x, 4).detach(), exact.expand(4, 8))
    unchunked = model.log_likelihood(x, k=300, chunk=300)
    chunked = model.log_likelihood(x, k=300, chunk=7, batch_size=3)
    torch.testing.assert_close(unchunked, exact)
    torch.testing.assert_close(chunked, unchunked)


def test_trained_linear_encoder_approaches_the_optimal_mean_field_encoder(lg):
    model, x = lg
    assert float(model.posterior_gap(x).mean().detach()) > 1.0  # the random starting encoder is far off
    for p in (model.W, model.b, model.log_sigma):
        p.requires_grad_(False)
    torch.manual_seed(5)
    data = model.marginal().sample((256,))
    opt = torch.optim.Adam(model.encoder.parameters(), lr=0.05)
    for _ in range(200):
        loss = -model.elbo(data, mc=2)["elbo"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained_gap = float(model.posterior_gap(x).mean().detach())
    model.use_optimal_encoder()
    optimal_gap = float(model.posterior_gap(x).mean().detach())
    assert optimal_gap - 1e-9 <= trained_gap < optimal_gap + 0.05  # the optimum is the smallest gap a diagonal q has


def test_linear_gaussian_input_checks():
    model = LinearGaussian.random(4, 2)
    with pytest.raises(ValueError, match="shape"):
        model.log_px(torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        model.encode(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="z_dim <= x_dim"):
        LinearGaussian.random(2, 3, orthogonal=True)
    model.set_encoder(torch.nn.Identity())
    with pytest.raises(TypeError, match="LinearEncoder"):
        model.use_optimal_encoder()
    model.set_encoder(LinearEncoder(4, 2).double())
    model.use_optimal_encoder()


def test_linear_gaussian_trains_with_the_training_loop_contract(lg):
    model, x = lg
    torch.manual_seed(6)
    data = model.marginal().sample((256,)).detach()
    before = model.evaluate(x)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for epoch in range(150):
        out = model.step({"x": data}, epoch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = model.evaluate(x)
    assert set(after) == {"test_elbo", "test_log_px", "test_gap"}
    assert after["test_gap"] == pytest.approx(after["test_log_px"] - after["test_elbo"])
    assert after["test_elbo"] > before["test_elbo"] + 1.0 and 0 < after["test_gap"] < before["test_gap"]
