"""The auxiliary VAE (thesis eqs. 4.12-4.17, Appendix A eq. 2)."""

import math

import pytest
import torch
from torch.distributions import Normal

from dgmlab.checkpoints import load_model, save_checkpoint
from dgmlab.models import get_model_class
from dgmlab.models.avae import AVAE, AVAEConfig


def tiny(**kw) -> AVAE:
    torch.manual_seed(0)
    cfg = dict(x_dim=4, likelihood="gaussian", hidden=(16,), z_dim=2, a_dim=3, warmup_epochs=0)
    cfg.update(kw)
    return AVAE(AVAEConfig(**cfg))


@pytest.mark.parametrize("aux", ["zx", "z"])
def test_bound_by_hand(aux):
    """A(2) at fixed noise: log p(x|z) + log p(z) + log p(a|z,x) - log q(a|x) - log q(z|a,x)."""
    m = tiny(aux_conditional=aux)
    x = torch.randn(5, 4)
    eps_a, eps_z = torch.randn(2, 5, 3), torch.randn(2, 5, 2)
    got = m.bound(x, noise={"a": eps_a, "z": eps_z})
    q_a = m.q_a(x)
    a = q_a.base_dist.loc + q_a.base_dist.scale * eps_a
    log_qa = Normal(q_a.base_dist.loc, q_a.base_dist.scale).log_prob(a).sum(-1)
    q_z = m.q_z(torch.cat([a, x.expand(2, 5, 4)], -1))
    z = q_z.base_dist.loc + q_z.base_dist.scale * eps_z
    log_qz = Normal(q_z.base_dist.loc, q_z.base_dist.scale).log_prob(z).sum(-1)
    p_a = m.p_a(torch.cat([z, x.expand(2, 5, 4)], -1)) if aux == "zx" else m.p_a(z)
    log_pa = Normal(p_a.base_dist.loc, p_a.base_dist.scale).log_prob(a).sum(-1)
    p_x = m.p_x(z)
    log_px = Normal(p_x.base_dist.loc, p_x.base_dist.scale).log_prob(x).sum(-1)
    log_pz = (-0.5 * math.log(2 * math.pi) - 0.5 * z**2).sum(-1)
    expected = (log_px + log_pz + log_pa - log_qa - log_qz).mean(0)
    torch.testing.assert_close(got["elbo"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["elbo"], got["log_px"] - got["kl_z"] - got["kl_a"])


def test_warmup_scales_the_kl_terms():
    m = tiny(warmup_epochs=10)
    x = torch.randn(6, 4)
    torch.manual_seed(2)
    out = m.step({"x": x}, epoch=3)
    torch.manual_seed(2)
    b = m.bound(x)
    torch.testing.assert_close(out.loss, -(b["log_px"] - 0.3 * (b["kl_z"] + b["kl_a"])).mean())
    assert out.metrics["temperature"] == pytest.approx(0.3)


def test_importance_weighted_log_likelihood_is_above_the_bound():
    m = tiny().double()
    x = torch.randn(30, 4, dtype=torch.float64)
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([m.bound(x)["elbo"] for _ in range(20)]).mean()
        l_1 = torch.stack([m.log_likelihood(x, k=1) for _ in range(20)]).mean()
        l_500 = m.log_likelihood(x, k=500, chunk=128).mean()
    assert abs(float(l_1 - elbo)) < 0.3  # k = 1: the same estimator as the bound, in expectation
    assert l_500 > elbo + 0.1


def test_training_improves_the_bound_and_helpers():
    m = tiny()
    torch.manual_seed(1)
    x = torch.randn(128, 4) @ torch.randn(4, 4)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    before = m.evaluate(x)["test_elbo"]
    for i in range(100):
        out = m.step({"x": x}, i)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    ev = m.evaluate(x)
    assert ev["test_elbo"] > before + 1.0
    assert {"test_recon", "test_kl_z", "test_kl_a", "test_active_units_a", "test_active_units_z"} <= set(ev)
    units = m.kl_per_unit(x)
    assert units["a"].shape == (3,) and units["z"].shape == (2,)
    assert m.sample(7).shape == (7, 4)
    assert m.posterior_samples(x[:5], 9).shape == (9, 5, 2)


def test_registry_checkpoint_and_errors(tmp_path):
    assert get_model_class("avae") is AVAE and AVAE.setting == "unsupervised"
    m = tiny(batch_norm=True)
    save_checkpoint(tmp_path / "avae.pt", m)
    back = load_model(tmp_path / "avae.pt", expect="avae", device="cpu")
    x = torch.randn(5, 4)
    torch.manual_seed(0)
    one = back.log_likelihood(x, k=3)
    m.eval()
    torch.manual_seed(0)
    torch.testing.assert_close(one, m.log_likelihood(x, k=3))
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        m.bound(torch.randn(5, 3))
    with pytest.raises(KeyError, match="'x'"):
        m.step({"x_u": x}, 0)
    with pytest.raises(ValueError, match="aux_conditional"):
        AVAEConfig(x_dim=4, aux_conditional="a")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    m = tiny().to("cuda")
    x = torch.randn(5, 4, device="cuda")
    out = m.step({"x": x}, 0)
    out.loss.backward()
    assert m.log_likelihood(x, k=10).device.type == "cuda"
    assert math.isfinite(m.evaluate(x)["test_elbo"])
