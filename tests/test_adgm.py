"""ADGM, SDGM and the deterministic-auxiliary ablation (thesis eqs. 4.20-4.23; Appendix A eqs. 3-17)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from dgmlab.models import get_model_class
from dgmlab.models.adgm import ADGM, SDGM, ADGMConfig, ADGMDeterministic, SDGMConfig

VARIANTS = [("adgm", "zy"), ("adgm", "xzy"), ("sdgm", "zy"), ("adgm_det", "zy")]


def tiny(name: str, aux: str = "zy", **kw):
    torch.manual_seed(0)
    cls = get_model_class(name)
    cfg = dict(x_dim=5, n_classes=3, likelihood="bernoulli", hidden=(16,), z_dim=2, a_dim=3, fixed_alpha=2.0,
               aux_conditional=aux)
    cfg.update(kw)
    return cls(cls.Config(**cfg)).eval()  # eval mode: batch normalisation treats every point alone


def brute_force_unlabelled(m, x, eps_a, eps_z):
    """U(x) of A(11) with the MC scheme A(17), one pass per class, every term written out."""
    n_classes = m.config.n_classes
    if m.stochastic:
        q_a = m.q_a(x)
        a = q_a.base_dist.loc + q_a.base_dist.scale * eps_a  # (S, B, a_dim)
        log_qa = q_a.log_prob(a)
    else:
        a = m.a_net(x).expand(eps_z.shape[0], -1, -1)
        log_qa = torch.zeros(())
    q_y = torch.softmax(m.q_y(a, x).logits, -1)  # (S, B, K)
    total = -(q_y * q_y.log()).sum(-1)  # H[q(y|a,x)]
    for y in range(n_classes):
        y_oh = F.one_hot(torch.full((len(x),), y), n_classes).float()
        q_z = m.q_z(a, y_oh, x)
        z = q_z.base_dist.loc + q_z.base_dist.scale * eps_z[:, y]
        if m.skip_connection:
            log_px = m.p_x(a, y_oh, z).log_prob(x)  # SDGM: p(x|a,y,z)
        else:
            log_px = m.p_x(z, y_oh).log_prob(x)  # ADGM: p(x|y,z)
        if not m.stochastic:
            log_pa = torch.zeros(())
        elif m.config.aux_conditional == "xzy":
            log_pa = m.p_a(x, y_oh, z).log_prob(a)
        else:
            log_pa = m.p_a(z, y_oh).log_prob(a)
        log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        f = log_px + log_pa - math.log(n_classes) + log_pz - log_qa - q_z.log_prob(z)
        total = total + q_y[..., y] * f
    return total.mean(0)


@pytest.mark.parametrize("name,aux", VARIANTS)
def test_batched_unlabelled_bound_equals_loop_over_classes(name, aux):
    m = tiny(name, aux)
    x = torch.rand(6, 5).bernoulli()
    S = 3
    eps_a, eps_z = torch.randn(S, 6, 3), torch.randn(S, 3, 6, 2)
    batched = m.unlabelled_bound(x, noise={"a": eps_a, "z": eps_z})
    torch.testing.assert_close(batched.value, brute_force_unlabelled(m, x, eps_a, eps_z), rtol=1e-5, atol=1e-5)
    t = batched.terms
    torch.testing.assert_close(batched.value, t["log_px"] + t["log_py"] - t["kl_z"] - t["kl_a"] + t["entropy_y"])


@pytest.mark.parametrize("name,aux", VARIANTS)
def test_one_sample_unlabelled_bound_is_the_q_weighted_labelled_bounds(name, aux):
    """With one a-sample: U(x) = sum_y q(y|a,x) ELBO_l(x, y) + H[q(y|a,x)] for the same a and z draws."""
    m = tiny(name, aux)
    x = torch.rand(6, 5).bernoulli()
    eps_a, eps_z = torch.randn(1, 6, 3), torch.randn(1, 3, 6, 2)
    u = m.unlabelled_bound(x, noise={"a": eps_a, "z": eps_z}).value
    labelled = [m.labelled_bound(x, torch.full((6,), y), noise={"a": eps_a, "z": eps_z[:, y]}) for y in range(3)]
    q_y = labelled[0].class_log_probs[0].exp()  # q(y|a,x) at the shared a
    parts = torch.stack([b.value for b in labelled], 1)
    torch.testing.assert_close(u, (q_y * parts).sum(1) - (q_y * q_y.log()).sum(1), rtol=1e-5, atol=1e-5)


def test_labelled_bound_terms_by_hand():
    """ELBO_l (4.22) for one sample: log p(x|y,z) + log p(a|z,y) + log p(y) + log p(z) - log q(a|x) - log q(z|a,y,x)."""
    m = tiny("adgm")
    x, y = torch.rand(4, 5).bernoulli(), torch.tensor([0, 2, 1, 1])
    eps_a, eps_z = torch.randn(1, 4, 3), torch.randn(1, 4, 2)
    b = m.labelled_bound(x, y, noise={"a": eps_a, "z": eps_z})
    q_a = m.q_a(x)
    mu_a, sd_a = q_a.base_dist.loc, q_a.base_dist.scale
    a = mu_a + sd_a * eps_a[0]
    y_oh = F.one_hot(y, 3).float()
    q_z = m.q_z(a, y_oh, x)
    z = q_z.base_dist.loc + q_z.base_dist.scale * eps_z[0]
    logits = m.p_x.head.logits(m.p_x.body(torch.cat([z, y_oh], -1)))
    log_px = (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(-1)
    log_qa = (-0.5 * math.log(2 * math.pi) - sd_a.log() - 0.5 * eps_a[0] ** 2).sum(-1)
    p_a = m.p_a(z, y_oh)
    log_pa = Normal(p_a.base_dist.loc, p_a.base_dist.scale).log_prob(a).sum(-1)
    log_pz = (-0.5 * math.log(2 * math.pi) - 0.5 * z**2).sum(-1)
    log_qz = Normal(q_z.base_dist.loc, q_z.base_dist.scale).log_prob(z).sum(-1)
    expected = log_px + log_pa - math.log(3) + log_pz - log_qa - log_qz
    torch.testing.assert_close(b.value, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.terms["kl_a"], log_qa - log_pa, rtol=1e-5, atol=1e-5)


def test_cross_entropy_uses_the_averaged_classifier():
    m = tiny("adgm", mc_samples=4)
    x, y = torch.rand(6, 5).bernoulli(), torch.tensor([0, 1, 2, 0, 1, 2])
    b = m.labelled_bound(x, y)
    assert b.class_log_probs.shape == (4, 6, 3)
    from dgmlab.objectives.semisupervised import classification_loss

    marginal = classification_loss(b.class_log_probs, y, "marginal")
    expected = -torch.log(b.class_log_probs.exp().mean(0).gather(1, y[:, None]).squeeze(1))
    torch.testing.assert_close(marginal, expected)


# ------------------------------------------------------------------------------------------- log-likelihood
@pytest.mark.parametrize("name", ["adgm", "sdgm", "adgm_det"])
def test_importance_weighted_estimate_is_above_the_bound(name):
    m = tiny(name).double()
    with torch.no_grad():  # Glorot weights in the Gaussian heads too: a posterior far from the prior
        for layer in m.modules():
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.xavier_normal_(layer.weight)
    x = torch.rand(40, 5, dtype=torch.float64).bernoulli()
    torch.manual_seed(1)
    with torch.no_grad():
        elbo = torch.stack([m.unlabelled_bound(x).value for _ in range(20)]).mean()
        l_1 = torch.stack([m.log_likelihood(x, k=1) for _ in range(20)]).mean()
        l_200 = m.log_likelihood(x, k=200, chunk=64).mean()
    assert elbo < l_1 + 0.05  # one importance sample with y summed exactly: at least U(x) on average
    assert l_200 > l_1 + 0.1 and l_200 > elbo + 0.1


def test_log_likelihood_chunking_is_exact():
    """Chunks are combined with a running logsumexp: the result does not depend on the chunk size."""
    m = tiny("adgm").double()
    x = torch.rand(5, 5, dtype=torch.float64).bernoulli()
    torch.manual_seed(0)
    one = m.log_likelihood(x, k=30, chunk=30)
    torch.manual_seed(0)
    many = m.log_likelihood(x, k=30, chunk=7)
    assert one.shape == (5,) and torch.isfinite(many).all()
    assert (one - many).abs().max() < 1.0  # different draws, same quantity: close but not identical


# ---------------------------------------------------------------------------------------- models and helpers
def test_registry_and_variants():
    assert get_model_class("adgm") is ADGM and get_model_class("sdgm") is SDGM
    assert get_model_class("adgm_det") is ADGMDeterministic
    for name in ("adgm", "sdgm", "adgm_det"):
        assert get_model_class(name).setting == "semi-supervised"
    assert not tiny("adgm_det").stochastic and not hasattr(tiny("adgm_det"), "p_a")
    with pytest.raises(ValueError, match="cyclic"):
        SDGM(SDGMConfig(x_dim=5, n_classes=3, aux_conditional="xzy", fixed_alpha=1.0))
    with pytest.raises(ValueError, match="aux_conditional"):
        ADGMConfig(x_dim=5, n_classes=3, aux_conditional="xy")
    with pytest.raises(ValueError, match="deterministic"):
        ADGMDeterministic(ADGMDeterministic.Config(x_dim=5, n_classes=3, auxiliary="stochastic"))
    assert tiny("adgm", auxiliary="deterministic").evaluate(torch.rand(4, 5).bernoulli()).keys() >= {"test_elbo"}


@pytest.mark.parametrize("name", ["adgm", "sdgm", "adgm_det"])
def test_analysis_helpers(name):
    m = tiny(name)
    x = torch.rand(7, 5).bernoulli()
    probs = m.classify(x, samples=5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(7))
    z, y = m.encode_style(x)
    assert z.shape == (7, 2) and y.shape == (7,)
    images = m.generate(z, 1)  # one class for every style (a column of thesis Fig. 4.2)
    assert images.shape == (7, 5) and ((images >= 0) & (images <= 1)).all()
    kl = m.kl_per_unit(x)
    assert kl["z"].shape == (2,)
    assert ("a" in kl) == m.stochastic
    assert m.auxiliary_samples(x).shape == (7, 3)
    ev = m.evaluate(x, torch.zeros(7, dtype=torch.long), batch_size=3, samples=4)
    assert 0 <= ev["test_error"] <= 100 and math.isfinite(ev["test_elbo"])


def test_bad_inputs():
    m = tiny("adgm")
    x = torch.rand(4, 5).bernoulli()
    with pytest.raises(TypeError, match="integer class indices"):
        m.step({"x_u": x, "x_l": x, "y_l": torch.tensor([0.0, 1.0, 2.0, 0.0])}, 0)
    with pytest.raises(ValueError, match="outside 0..2"):
        m.step({"x_u": x, "x_l": x, "y_l": torch.tensor([0, 1, 3, 0])}, 0)
    with pytest.raises(ValueError, match=r"\(batch, 5\)"):
        m.step({"x_u": torch.rand(4, 6), "x_l": x, "y_l": torch.tensor([0, 1, 2, 0])}, 0)
    with pytest.raises(ValueError, match=r"\(batch, 5\)"):
        m.classify(torch.rand(2, 4, 5))


def test_fit_runs_one_short_epoch():
    from dgmlab.data import load_data, make_config
    from dgmlab.training import TrainConfig, fit

    data = load_data("halfmoons", labels=6, n_train=300, n_test=200)
    model = ADGM(make_config(ADGMConfig, data, hidden=(16,), z_dim=2, a_dim=2, eval_samples=2))
    history = fit(model, data, TrainConfig(epochs=2, batch_size=100, lr=1e-3, max_batches=2, progress=False))
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"train_loss", "train_labelled_error", "test_error", "test_elbo"} <= set(history[-1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["adgm", "sdgm", "adgm_det"])
def test_runs_on_cuda(name):
    m = tiny(name).to("cuda")
    x, y = torch.rand(5, 5, device="cuda").bernoulli(), torch.tensor([0, 1, 2, 0, 1], device="cuda")
    out = m.step({"x_u": x, "x_l": x, "y_l": y}, 0)
    out.loss.backward()
    assert out.loss.device.type == "cuda"
    assert m.log_likelihood(x, k=10).device.type == "cuda"
    assert m.kl_per_unit(x)["z"].device.type == "cuda"
    assert m.evaluate(x, y)["test_error"] >= 0


def test_halfmoons_training_lowers_the_test_error():
    """A short run of the chapter-4 half-moons experiment (six labels, reproduction notes T4) learns a classifier."""
    from dgmlab.data import iterate_batches, load_data, make_config

    data = load_data("halfmoons", labels=6, n_test=1000)
    torch.manual_seed(0)
    m = ADGM(make_config(ADGMConfig, data, hidden=(32, 32), z_dim=4, a_dim=4, eval_samples=5))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    before = m.evaluate(data.x_test, data.y_test)["test_error"]
    gen, steps = torch.Generator().manual_seed(0), 0
    while steps < 150:
        for batch in iterate_batches(data, "semi-supervised", 100, gen, 100):
            out = m.step(batch, 0)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            steps += 1
            if steps == 150:
                break
    after = m.evaluate(data.x_test, data.y_test)["test_error"]
    assert after < 30 and after < before - 10, (before, after)


def test_fixed_observation_variance():
    m = tiny("adgm", likelihood="gaussian", x_logvar=-2.0)
    x = torch.randn(4, 5)
    eps_a, eps_z = torch.randn(1, 4, 3), torch.randn(1, 4, 2)
    b = m.labelled_bound(x, torch.tensor([0, 1, 2, 0]), noise={"a": eps_a, "z": eps_z})
    a = m.q_a(x).base_dist.loc + m.q_a(x).base_dist.scale * eps_a
    y_oh = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    q_z = m.q_z(a, y_oh, x)
    z = q_z.base_dist.loc + q_z.base_dist.scale * eps_z
    mean = m.p_x(z, y_oh).base_dist.loc
    expected = Normal(mean, math.exp(-1.0)).log_prob(x).sum(-1).mean(0)
    torch.testing.assert_close(b.terms["log_px"], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="gaussian"):
        ADGMConfig(x_dim=5, n_classes=3, x_logvar=-2.0)
