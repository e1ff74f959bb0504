"""The 2-D potential of thesis Fig. 4.4 (reproduction notes T2, T3): energy, exact log Z, bounds, training, modes."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from dgmlab.potential import (READINGS, AuxiliaryQ, AuxiliaryQConfig, GaussianQ, Potential, PotentialTrainConfig,
                              energy, estimate_bound, exact_mode_fractions, fit_potential, fit_restarts,
                              importance_log_z, make_q, mode_coverage)


def _argmin_on_grid(target, mask_fn, lim=4.0, n=401):
    z1, z2, log_f = target.grid(lim, n)
    u = -log_f.clone()
    u[~mask_fn(z1, z2)] = float("inf")
    i = int(torch.argmin(u))
    return torch.tensor([float(z1.flatten()[i]), float(z2.flatten()[i])])


def test_ring_reading_has_two_minima_at_0_pm2():
    target = Potential("ring")
    top = _argmin_on_grid(target, lambda a, b: b > 0)
    bottom = _argmin_on_grid(target, lambda a, b: b < 0)
    assert torch.allclose(top, torch.tensor([0.0, 2.0]), atol=0.03)
    assert torch.allclose(bottom, torch.tensor([0.0, -2.0]), atol=0.03)
    # the two minima are equally deep and lower than the sides of the ring and the centre
    u = energy(torch.tensor([[0.0, 2.0], [0.0, -2.0], [2.0, 0.0], [0.0, 0.0]]), "ring").tolist()
    assert u[0] == pytest.approx(u[1], abs=1e-6) and u[0] == pytest.approx(0.0, abs=1e-6)
    assert u[2] > u[0] + 4 and u[3] > u[0] + 10


def test_literal_reading_has_four_minima_at_pm2_pm2():
    target = Potential("literal")
    for sx in (-1, 1):
        for sy in (-1, 1):
            found = _argmin_on_grid(target, lambda a, b: (a * sx > 0) & (b * sy > 0))
            assert torch.allclose(found, torch.tensor([2.0 * sx, 2.0 * sy]), atol=0.03)
    assert target.modes.shape == (4, 2) and Potential("ring").modes.shape == (2, 2)


def test_energy_rejects_bad_input():
    with pytest.raises(ValueError, match="reading"):
        energy(torch.zeros(3, 2), "rings")
    with pytest.raises(ValueError, match="reading"):
        Potential("four")
    with pytest.raises(ValueError, match="size 2"):
        energy(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="floating"):
        energy(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="family"):
        make_q("flow")


def test_exact_log_z_literal_matches_closed_form():
    # Literally read, exp(-U) factorises: (two half-Gaussians in z1 of width 0.4) x (two Gaussians in z2 of width 0.6).
    closed = math.log(2 * 0.4 * math.sqrt(2 * math.pi)) + math.log(2 * 0.6 * math.sqrt(2 * math.pi))
    assert Potential("literal").exact_log_z() == pytest.approx(closed, abs=1e-5)


@pytest.mark.parametrize("reading", READINGS)
def test_exact_log_z_matches_importance_sampling(reading):
    target = Potential(reading)
    exact = target.exact_log_z()
    assert exact == pytest.approx(target.exact_log_z(lim=8.0, n=1601), abs=1e-6)  # grid converged
    proposal = Independent(Normal(torch.zeros(2), 2.5 * torch.ones(2)), 1)
    estimate, stderr = importance_log_z(target, proposal, n=200_000, generator_seed=0)
    assert abs(estimate - exact) < 4 * stderr + 1e-3


@pytest.mark.parametrize("kind", ["gaussian", "auxiliary"])
def test_bound_never_exceeds_log_z(kind):
    torch.manual_seed(0)
    target = Potential("ring")
    log_z = target.exact_log_z()
    q = make_q(kind)
    for _ in range(2):  # untrained, then after a short fit
        bound, stderr = estimate_bound(q, target, n=20_000)
        assert math.isfinite(bound) and bound < log_z + 4 * stderr
        fit_potential(q, target, PotentialTrainConfig(steps=150, batch_size=200, lr=1e-2))


def test_best_gaussian_bound_is_close_to_one_mode_optimum():
    # A Gaussian placed on one mode gets log Z minus (about log 2 + a shape penalty): below, but not far below.
    target = Potential("ring")
    q = GaussianQ()
    with torch.no_grad():
        q.mean.copy_(torch.tensor([0.0, 1.9]))
        q.logvar.copy_(torch.log(torch.tensor([0.8, 0.25]) ** 2))
    bound, stderr = estimate_bound(q, target, n=50_000)
    log_z = target.exact_log_z()
    assert log_z - math.log(2) - 1.0 < bound < log_z - math.log(2) + 4 * stderr


@pytest.mark.parametrize("kind", ["gaussian", "auxiliary"])
def test_short_training_increases_the_bound(kind):
    torch.manual_seed(1)
    target = Potential("ring")
    q = make_q(kind)
    before, _ = estimate_bound(q, target, n=10_000)
    history = fit_potential(q, target, PotentialTrainConfig(steps=200, batch_size=200, lr=1e-2, log_every=20))
    after, stderr = estimate_bound(q, target, n=10_000)
    assert after > before + 0.5
    assert history[0]["step"] == 0 and history[-1]["step"] == 199
    expected = {"gaussian": {"log_f", "log_q_z"}, "auxiliary": {"log_f", "log_p_a_given_z", "log_q_a", "log_q_z_given_a"}}
    assert expected[kind] | {"bound", "loss", "beta", "temperature"} <= set(history[-1])


def test_auxiliary_bound_terms_add_up():
    torch.manual_seed(0)
    out = AuxiliaryQ(AuxiliaryQConfig()).bound(Potential("ring"), 64)
    t = {k: v.detach() for k, v in out.terms.items()}
    assert float(t["bound"]) == pytest.approx(
        float(t["log_f"] + t["log_p_a_given_z"] - t["log_q_a"] - t["log_q_z_given_a"]), abs=1e-4)
    # beta = 1 and temperature = 1: the loss is the negative bound
    assert float(out.loss.detach()) == pytest.approx(-float(t["bound"]), abs=1e-4)
    out.loss.backward()  # gradients reach every network
    # the temperature changes the loss but never the reported bound
    torch.manual_seed(0)
    hot = AuxiliaryQ(AuxiliaryQConfig())
    torch.manual_seed(0)
    cold = AuxiliaryQ(AuxiliaryQConfig())
    torch.manual_seed(5)
    out_hot = hot.bound(Potential("ring"), 64, temperature=3.0)
    torch.manual_seed(5)
    out_cold = cold.bound(Potential("ring"), 64, temperature=1.0)
    hot_t = {k: v.detach() for k, v in out_hot.terms.items()}
    cold_t = {k: v.detach() for k, v in out_cold.terms.items()}
    assert float(hot_t["bound"]) == pytest.approx(float(cold_t["bound"]), abs=1e-5)
    aux_kl = cold_t["log_q_a"] - cold_t["log_p_a_given_z"]
    assert float((out_hot.loss - out_cold.loss).detach()) == pytest.approx(2.0 * float(aux_kl), abs=1e-4)
    q = AuxiliaryQ()
    q.bound(Potential("ring"), 16).loss.backward()
    assert all(p.grad is not None for p in q.parameters())


def test_annealing_and_temperature_schedules():
    cfg = PotentialTrainConfig(steps=100, anneal_steps=10, anneal_from=0.01)
    assert cfg.beta(0) == pytest.approx(0.01) and cfg.beta(5) == pytest.approx(0.505) and cfg.beta(10) == 1.0
    assert PotentialTrainConfig().beta(0) == 1.0 and PotentialTrainConfig().temperature(0) == 1.0
    warm = PotentialTrainConfig(steps=100, warmup_steps=10, warmup_from=3.0)
    assert warm.temperature(0) == pytest.approx(3.0) and warm.temperature(5) == pytest.approx(2.0)
    assert warm.temperature(10) == 1.0 and warm.beta(0) == 1.0
    with pytest.raises(ValueError):
        PotentialTrainConfig(warmup_from=-1.0)
    with pytest.raises(ValueError):
        PotentialTrainConfig(anneal_from=0.0)
    with pytest.raises(ValueError):
        PotentialTrainConfig(steps=0)


@pytest.mark.parametrize("reading", READINGS)
def test_mode_coverage_exact_samples_cover_all_modes(reading):
    target = Potential(reading)
    z = target.sample_exact(20_000, generator=torch.Generator().manual_seed(0))
    cov = mode_coverage(z, target)
    assert cov.covers_all and cov.n_covered == len(target.modes)
    for got, want in zip(cov.fractions, exact_mode_fractions(target)):
        assert got == pytest.approx(want, abs=0.02)


def test_mode_coverage_one_mode_and_broad_fits():
    target = Potential("ring")
    one_mode = torch.randn(5000, 2) * torch.tensor([0.6, 0.3]) + torch.tensor([0.0, 2.0])
    cov = mode_coverage(one_mode, target)
    assert cov.covered == [True, False] and not cov.covers_all
    broad = torch.randn(5000, 2) * torch.tensor([1.0, 2.0])  # a Gaussian smeared over both modes
    assert mode_coverage(broad, target).n_covered == 0


def test_fit_restarts_reports_gap_and_coverage():
    target = Potential("ring")
    results = fit_restarts("gaussian", target, PotentialTrainConfig(steps=20, batch_size=50), seeds=[0, 1],
                           eval_samples=2000)
    assert [r.seed for r in results] == [0, 1]
    for r in results:
        assert r.gap == pytest.approx(target.exact_log_z() - r.bound)
        assert len(r.coverage.fractions) == 2
