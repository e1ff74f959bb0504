"""The auxiliary VAE (thesis eqs. 4.12-4.17, Appendix A eq. 2), and its two-layer form (Appendix A eqs. 19-20)."""

import json
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


@pytest.mark.parametrize("layers", [1, 2])
def test_warmup_scales_the_kl_terms(layers):
    """The temperature multiplies every KL-like term (kl_z, kl_a; or kl_z1, kl_a1, kl_z2, kl_a2), never log p(x|z)."""
    m = tiny(warmup_epochs=10) if layers == 1 else tiny2(warmup_epochs=10)
    x = torch.randn(6, 4)
    torch.manual_seed(2)
    out = m.step({"x": x}, epoch=3)
    torch.manual_seed(2)
    b = m.bound(x)
    assert {k for k in b if k.startswith("kl_")} == {f"kl_{v}" for v in m.latents}
    kl = sum(b[f"kl_{v}"] for v in m.latents)
    torch.testing.assert_close(out.loss, -(b["log_px"] - 0.3 * kl).mean())
    assert out.metrics["temperature"] == pytest.approx(0.3)
    out.loss.backward()  # every network is trained
    assert all(p.grad is not None for p in m.parameters())


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
    model_opts, train_opts = AVAE.recipe("mnist")
    assert model_opts["batch_norm"] is True and train_opts["epochs"] == 2000 and train_opts["batch_size"] == 256
    assert AVAE.recipe("halfmoons") == ({}, {"lr": 1e-3, "batch_size": 256})   # no recipe: the defaults alone
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



# ------------------------------------------------------------------------------------------- layers=1 unchanged
def test_one_layer_loss_is_unchanged_by_the_layers_option():
    """The loss below was computed with the code *before* the ``layers`` option existed (same seeds, same call)."""
    for batch_norm, before in ((False, 6.539404392242432), (True, 6.8610687255859375)):
        m = tiny(warmup_epochs=10, batch_norm=batch_norm)
        assert m.config.layers == 1 and m.config.aux_conditional == "zx"
        x = torch.randn(6, 4)
        torch.manual_seed(2)
        assert m.step({"x": x}, epoch=3).loss.item() == before


# ------------------------------------------------------------------------------------------------- layers=2
def tiny2(**kw) -> AVAE:
    cfg = dict(layers=2, hidden2=(8,), z2_dim=2, a2_dim=2)
    cfg.update(kw)
    return tiny(**cfg)


def noise2(s: int, b: int) -> dict:
    return {"a1": torch.randn(s, b, 3), "z1": torch.randn(s, b, 2), "a2": torch.randn(s, b, 2),
            "z2": torch.randn(s, b, 2)}


def test_two_layers_shapes_and_conditioning():
    m = tiny2()
    assert m.config.aux_conditional == "z" and m.latents == ("z1", "a1", "z2", "a2")  # A(20): p(a_i|z_{>=i}), no x
    assert m.p_a.body[0].in_features == 2 + 2 and m.q_a2.body[0].in_features == 3 + 4
    assert tiny2(aux_conditional="zx").p_a2.body[0].in_features == 2 + 4
    x = torch.randn(5, 4)
    h, q, p = m.draw(x, 3)
    assert {v: t.shape for v, t in h.items()} == {"a1": (3, 5, 3), "z1": (3, 5, 2), "a2": (3, 5, 2), "z2": (3, 5, 2)}
    b = m.bound(x, noise=noise2(2, 5))
    assert set(b) == {"elbo", "log_px", "kl_z1", "kl_a1", "kl_z2", "kl_a2"} and all(v.shape == (5,) for v in b.values())
    torch.testing.assert_close(b["elbo"], b["log_px"] - b["kl_z1"] - b["kl_a1"] - b["kl_z2"] - b["kl_a2"])
    assert m.log_likelihood(x, k=7, chunk=3).shape == (5,)
    assert m.sample(7).shape == (7, 4) and m.posterior_samples(x, 9).shape == (9, 5, 2)
    ev = m.evaluate(x)
    assert {f"test_active_units_{v}" for v in ("a1", "z1", "a2", "z2")} <= set(ev)
    assert {f"test_kl_{v}" for v in ("a1", "z1", "a2", "z2")} <= set(ev) and math.isfinite(ev["test_elbo"])


def test_two_layer_bound_by_hand():
    """A(19)-(20) at fixed noise, each density rebuilt from the networks."""
    m = tiny2()
    x = torch.randn(5, 4)
    eps = noise2(2, 5)
    got = m.bound(x, noise=eps)

    def draw(dist, e):
        return dist.base_dist.loc + dist.base_dist.scale * e

    q_a1 = m.q_a(x)
    a1 = draw(q_a1, eps["a1"])
    q_z1 = m.q_z(torch.cat([a1, x.expand(2, 5, 4)], -1))
    z1 = draw(q_z1, eps["z1"])
    q_a2 = m.q_a2(torch.cat([a1, x.expand(2, 5, 4)], -1))
    a2 = draw(q_a2, eps["a2"])
    q_z2 = m.q_z2(torch.cat([a2, z1], -1))
    z2 = draw(q_z2, eps["z2"])
    log_q = q_a1.log_prob(a1) + q_z1.log_prob(z1) + q_a2.log_prob(a2) + q_z2.log_prob(z2)
    log_p = (m.p_x(z1).log_prob(x) + Normal(0.0, 1.0).log_prob(z2).sum(-1) + m.p_a2(z2).log_prob(a2)
             + m.p_z1(z2).log_prob(z1) + m.p_a(torch.cat([z1, z2], -1)).log_prob(a1))
    torch.testing.assert_close(got["elbo"], (log_p - log_q).mean(0), rtol=1e-5, atol=1e-5)


def test_two_layer_importance_weighted_bound():
    m = tiny2().double()
    x = torch.randn(30, 4, dtype=torch.float64)
    m.eval()
    torch.manual_seed(3)
    elbo = m.bound(x, 1)["elbo"]
    torch.manual_seed(3)
    torch.testing.assert_close(m.log_likelihood(x, k=1), elbo)  # k = 1 with the same noise: the ELBO itself
    torch.manual_seed(0)
    l_1 = torch.stack([m.log_likelihood(x, k=1) for _ in range(20)]).mean()
    l_500 = m.log_likelihood(x, k=500, chunk=128).mean()
    assert l_500 > l_1 + 0.1


def test_two_layer_bounds_stay_below_the_exact_log_likelihood():
    """One-dimensional x, z1, z2: log p(x) = log int int p(x|z1) p(z1|z2) p(z2) dz1 dz2 on a grid (a integrates out)."""
    torch.manual_seed(0)
    m = AVAE(AVAEConfig(x_dim=1, likelihood="gaussian", hidden=(8,), z_dim=1, a_dim=1, layers=2, hidden2=(8,),
                        z2_dim=1, a2_dim=1, warmup_epochs=0)).double().eval()
    x = torch.tensor([[-1.0], [0.3], [2.0]], dtype=torch.float64)
    grid = torch.linspace(-10, 10, 801, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    z2 = grid.view(-1, 1, 1)      # (G, 1, 1)
    z1 = grid.view(1, -1, 1)      # (1, G, 1)
    with torch.no_grad():
        log_joint = (m.prior_z(z2).log_prob(z2) + m.p_z1(z2).log_prob(z1)).unsqueeze(-1)  # (G, G, 1)
        log_px = m.p_x(z1.reshape(-1, 1)).log_prob(x.view(-1, 1, 1)).T.view(1, -1, len(x))  # (1, G, B)
        exact = torch.logsumexp((log_joint + log_px).flatten(0, 1), 0) + 2 * math.log(step)
    torch.manual_seed(1)
    l_1 = torch.stack([m.log_likelihood(x, k=1) for _ in range(200)]).mean(0)
    # E[L_k] <= log p(x); one L_k of an untrained q scatters by ~0.02 nats, so average ten of them
    l_k = torch.stack([m.log_likelihood(x, k=5000, chunk=5000) for _ in range(10)]).mean(0)
    assert (l_1 < l_k - 0.1).all() and (l_k < exact + 0.02).all() and (exact - l_k < 0.1).all()


@pytest.mark.parametrize("bad", [0, 3, 2.0, "2", True])
def test_layers_option_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=r"layers must be the integer 1 .* set layers=1 or layers=2"):
        AVAEConfig(x_dim=4, layers=bad)


def test_two_layer_checkpoint_round_trip(tmp_path):
    m = tiny2(batch_norm=True)
    save_checkpoint(tmp_path / "avae2.pt", m)
    back = load_model(tmp_path / "avae2.pt", expect="avae", device="cpu")
    assert back.config == m.config
    x = torch.randn(5, 4)
    m.eval()
    eps = noise2(1, 5)
    torch.testing.assert_close(back.bound(x, noise=eps)["elbo"], m.bound(x, noise=eps)["elbo"])


def test_cli_one_epoch_two_layers_on_mnist(tmp_path, mnist_available):
    from dgmlab.cli import main

    out = tmp_path / "run"
    assert main(["train", "avae", "--data", "mnist", "--set", "layers=2", "--n-train", "300", "--n-test", "100",
                 "--epochs", "1", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = metrics["config"]
    assert (cfg["layers"], cfg["z_dim"], cfg["z2_dim"], cfg["hidden"], cfg["hidden2"]) == (2, 64, 32, [512, 512],
                                                                                           [256, 256])
    # the MNIST recipe (thesis 4.2: the ladder VAE's settings) applies without any --set
    assert cfg["batch_norm"] is True and cfg["warmup_epochs"] == 200
    assert metrics["train_config"]["epochs"] == 1 and metrics["train_config"]["batch_size"] == 256
    record = metrics["history"][-1]
    assert math.isfinite(record["test_elbo"]) and "test_active_units_a2" in record


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    m = tiny().to("cuda")
    x = torch.randn(5, 4, device="cuda")
    out = m.step({"x": x}, 0)
    out.loss.backward()
    assert m.log_likelihood(x, k=10).device.type == "cuda"
    assert math.isfinite(m.evaluate(x)["test_elbo"])
