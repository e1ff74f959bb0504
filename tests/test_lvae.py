"""The hierarchical VAE with bottom-up inference (thesis eqs. 3.32-3.36) and the ladder VAE (thesis eqs. 5.1-5.5;
Sønderby et al. 2016): the precision-weighted merge, the bounds against hand computations, the single-layer VAE and an
exact log-likelihood, warm-up, per-layer KL, shapes for every depth, errors and the command line."""

import json
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from dgmlab import objectives
from dgmlab.models import get_model_class
from dgmlab.models.hvae import HVAE, HVAEConfig
from dgmlab.models.lvae import LVAE, LVAEConfig, precision_weighted_merge
from dgmlab.models.vae import VAE, VAEConfig

X_DIM = 12
TINY = {"z_dims": (6, 5, 4, 3, 2), "hidden": (16, 12, 10, 8, 6)}
MODELS = [HVAE, LVAE]


def tiny(cls, **overrides):
    torch.manual_seed(0)
    return cls(cls.Config(**{"x_dim": X_DIM, **TINY, "depth": 3, "eval_iw": 0, **overrides}))


def binary_data(n=32, seed=0, d=X_DIM):
    """Noisy copies of three binary prototypes: structure a VAE can learn."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(3, d, generator=g) < 0.5).float()
    x = protos[torch.randint(0, 3, (n,), generator=g)]
    flip = (torch.rand(n, d, generator=g) < 0.05).float()
    return (x + flip) % 2


def noise_for(model, shape, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, n, d, generator=g) for d in model.config.sizes]


def gauss(dist):
    return dist.base_dist.loc, dist.base_dist.variance


# --- construction ---------------------------------------------------------------------------------------------------
def test_registry_defaults_and_recipes():
    assert get_model_class("hvae") is HVAE and get_model_class("lvae") is LVAE
    for cls in MODELS:
        cfg = cls.Config(x_dim=784)
        assert cfg.z_dims == (64, 32, 16, 8, 4) and cfg.hidden == (512, 256, 128, 64, 32)
        assert (cfg.activation, cfg.variance, cfg.iw, cfg.batch_norm, cfg.warmup_epochs) == \
               ("leaky_relu", "softplus_var", 1, False, 0)
        assert cfg.sizes == cfg.z_dims and cls.Config(x_dim=784, depth=2).sizes == (64, 32)
        assert cls.Config(x_dim=4, z_dims=[3, 2], hidden=[8, 8]).z_dims == (3, 2)  # lists from JSON become tuples
        assert cls.setting == "unsupervised" and cls.train_defaults == {"lr": 1e-3, "batch_size": 256}
        model, train = cls.recipe("mnist")
        assert model == {"batch_norm": True, "batch_norm_heads": True, "warmup_epochs": 200}
        assert train == {"lr": 1e-3, "batch_size": 256, "epochs": 2000}
        assert "64-32-16-8-4" in cls.recipes["mnist"]["source"]


def test_architecture_follows_the_thesis():
    """Stage i uses width w_i in both hidden layers: x<->z1 512, z1<->z2 256, ... (Sønderby et al. section 3)."""
    h, lv = HVAE(HVAEConfig(x_dim=784)), LVAE(LVAEConfig(x_dim=784))
    widths = lambda mlp: [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)]  # noqa: E731
    assert [widths(q.body) for q in h.q_z] == [[w, w] for w in (512, 256, 128, 64, 32)]
    assert [q.body[0].in_features for q in h.q_z] == [784, 64, 32, 16, 8]
    assert [widths(u) for u in lv.up] == [[w, w] for w in (512, 256, 128, 64, 32)]
    assert [u[0].in_features for u in lv.up] == [784, 512, 256, 128, 64]  # d_i = MLP(d_{i-1})
    for m in (h, lv):  # the generative model is the same: p(z_i|z_{i+1}) through the MLP of stage i+1
        assert widths(m.p_x.body) == [512, 512] and m.p_x.body[0].in_features == 64
        assert [widths(p.body) for p in m.p_z] == [[w, w] for w in (256, 128, 64, 32)]
        assert [p.body[0].in_features for p in m.p_z] == [32, 16, 8, 4]
        assert isinstance(m.p_x.body[1], torch.nn.LeakyReLU) and m.p_x.body[1].negative_slope == 0.1


@pytest.mark.parametrize("bad, match", [
    ({"depth": 0}, "depth must be an integer from 1 to 5"), ({"depth": 6}, "depth"), ({"depth": 2.5}, "depth"),
    ({"z_dims": (4, 3), "hidden": (8,)}, "same length"), ({"z_dims": (4, 0, 2), "hidden": (8, 8, 8)}, "positive"),
    ({"hidden": (8, -1, 4, 4, 4)}, "positive"), ({"z_dims": (), "hidden": ()}, "at least one"),
    ({"warmup_epochs": -1}, "warmup"), ({"iw": 0}, "iw"), ({"mc": 0}, "mc"), ({"eval_iw": -1}, "eval_iw"),
    ({"likelihood": "poisson"}, "likelihood"), ({"activation": "swish"}, "activation"),
    ({"variance": "var"}, "variance"), ({"x_dim": 0}, "x_dim")])
@pytest.mark.parametrize("cls", MODELS)
def test_config_rejects_bad_options(cls, bad, match):
    with pytest.raises(ValueError, match=match):
        cls.Config(**{"x_dim": 4, **bad})


# --- the precision-weighted merge -------------------------------------------------------------------------------------
def test_merge_is_the_normalised_product_of_two_gaussians():
    mu1, var1 = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), torch.tensor([0.5, 2.0, 1e-2], dtype=torch.float64)
    mu2, var2 = torch.tensor([-0.7, 1.5, 1.0], dtype=torch.float64), torch.tensor([1.5, 0.1, 3.0], dtype=torch.float64)
    mu, var = precision_weighted_merge(mu1, var1, mu2, var2)
    # closed form, eqs. (5.3)-(5.4) with precisions
    torch.testing.assert_close(var, 1 / (1 / var1 + 1 / var2))
    torch.testing.assert_close(mu, (mu1 / var1 + mu2 / var2) * var)
    z = torch.linspace(-8, 8, 40_001, dtype=torch.float64)[:, None]
    log_prod = Normal(mu1, var1.sqrt()).log_prob(z) + Normal(mu2, var2.sqrt()).log_prob(z)
    # the product equals N(mu, var) times the constant N(mu1; mu2, var1 + var2), at every z
    const = Normal(mu2, (var1 + var2).sqrt()).log_prob(mu1)
    torch.testing.assert_close(log_prod - const, Normal(mu, var.sqrt()).log_prob(z))
    # and normalising the product numerically on the grid gives the same density, mean and variance
    dz = float(z[1] - z[0])
    density = log_prod.exp() / (log_prod.exp().sum(0) * dz)
    torch.testing.assert_close(density, Normal(mu, var.sqrt()).log_prob(z).exp(), atol=1e-6, rtol=1e-5)
    mean = (density * z).sum(0) * dz
    torch.testing.assert_close(mean, mu, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close((density * (z - mean) ** 2).sum(0) * dz, var, atol=1e-6, rtol=1e-5)


def test_merge_limits_and_broadcasting():
    mu_p, var_p = torch.randn(7, 4), torch.rand(7, 4) + 0.1
    mu, var = precision_weighted_merge(torch.zeros(4), torch.full((4,), 1e12), mu_p, var_p)  # flat likelihood
    torch.testing.assert_close(mu, mu_p)
    torch.testing.assert_close(var, var_p)
    mu, var = precision_weighted_merge(mu_p, var_p, mu_p, var_p)  # two equal Gaussians: same mean, half the variance
    torch.testing.assert_close(mu, mu_p)
    torch.testing.assert_close(var, var_p / 2)
    assert precision_weighted_merge(torch.zeros(5, 1, 4), torch.ones(5, 1, 4), mu_p, var_p)[0].shape == (5, 7, 4)


# --- the bounds by hand ---------------------------------------------------------------------------------------------
def test_hvae_bound_by_hand():
    """Bottom-up (3.35): z1 from q(z1|x), z2 from q(z2|z1); KL_1 Monte Carlo, KL_2 analytic against N(0, I)."""
    m = tiny(HVAE, depth=2)
    x = binary_data(5)
    eps = noise_for(m, (3,), 5)
    got = m.elbo(x, mc=3, noise=eps)
    q1 = m.q_z[0](x)
    z1 = q1.base_dist.loc + q1.base_dist.scale * eps[0]
    q2 = m.q_z[1](z1)
    z2 = q2.base_dist.loc + q2.base_dist.scale * eps[1]
    p1 = m.p_z[0](z2)
    kl1 = (q1.log_prob(z1) - p1.log_prob(z1)).mean(0)
    kl2 = (0.5 * (q2.base_dist.variance + q2.base_dist.loc ** 2 - 1 - q2.base_dist.variance.log())).sum(-1).mean(0)
    recon = m.p_x(z1).log_prob(x).mean(0)
    for key, want in {"kl_layer1": kl1, "kl_layer2": kl2, "recon": recon, "elbo": recon - kl1 - kl2}.items():
        torch.testing.assert_close(got[key], want, msg=key)
    log_w = m.log_weights(x, 3, noise=eps)
    torch.testing.assert_close(log_w, m.p_x(z1).log_prob(x) + p1.log_prob(z1) + Normal(0, 1).log_prob(z2).sum(-1)
                               - q1.log_prob(z1) - q2.log_prob(z2))


def test_lvae_bound_by_hand():
    """Top-down (5.1)-(5.4): z3 from the likelihood term, z2 and z1 from the merge with the shared generative
    network at the sampled parent; every KL analytic given the parent."""
    m = tiny(LVAE, depth=3)
    x = binary_data(5)
    eps = noise_for(m, (2,), 5)
    got = m.elbo(x, mc=2, noise=eps)
    d1 = m.up[0](x)
    d2 = m.up[1](d1)
    d3 = m.up[2](d2)
    hats = [gauss(h(d)) for h, d in zip(m.q_hat, (d1, d2, d3))]
    z3 = hats[2][0] + hats[2][1].sqrt() * eps[2]
    kl3 = kl_divergence(Normal(hats[2][0], hats[2][1].sqrt()), Normal(0.0, 1.0)).sum(-1).expand(2, 5)
    mu_p2, var_p2 = gauss(m.p_z[1](z3))
    var_q2 = 1 / (1 / hats[1][1] + 1 / var_p2)
    mu_q2 = (hats[1][0] / hats[1][1] + mu_p2 / var_p2) * var_q2
    z2 = mu_q2 + var_q2.sqrt() * eps[1]
    kl2 = kl_divergence(Normal(mu_q2, var_q2.sqrt()), Normal(mu_p2, var_p2.sqrt())).sum(-1)
    mu_p1, var_p1 = gauss(m.p_z[0](z2))
    var_q1 = 1 / (1 / hats[0][1] + 1 / var_p1)
    mu_q1 = (hats[0][0] / hats[0][1] + mu_p1 / var_p1) * var_q1
    z1 = mu_q1 + var_q1.sqrt() * eps[0]
    kl1 = kl_divergence(Normal(mu_q1, var_q1.sqrt()), Normal(mu_p1, var_p1.sqrt())).sum(-1)
    recon = m.p_x(z1).log_prob(x)
    want = {"kl_layer1": kl1, "kl_layer2": kl2, "kl_layer3": kl3, "recon": recon, "elbo": recon - kl1 - kl2 - kl3}
    for key, value in want.items():
        torch.testing.assert_close(got[key], value.mean(0), msg=key, rtol=1e-5, atol=1e-5)
    posterior = m.posterior(x)  # zero noise: every z_i is the mean of its q
    torch.testing.assert_close(posterior["z3"], hats[2][0].detach())


@pytest.mark.parametrize("batch_norm", [False, True])
def test_depth_one_models_are_the_single_layer_vae(batch_norm):
    """With one latent layer, q(z1|x) of the HVAE, the LVAE's N(mu_hat_1, sigma_hat_1^2) and the VAE's encoder are
    the same network, and p(x|z1) the same decoder: copied weights give identical bounds for the same noise."""
    torch.manual_seed(0)
    vae = VAE(VAEConfig(x_dim=X_DIM, z_dim=4, hidden=(16, 16), variance="softplus_var", batch_norm=batch_norm))
    cfg = dict(x_dim=X_DIM, z_dims=(4,), hidden=(16,), batch_norm=batch_norm)
    h, lv = HVAE(HVAEConfig(**cfg)), LVAE(LVAEConfig(**cfg))
    h.q_z[0].load_state_dict(vae.q_z_given_x.state_dict())
    lv.up[0].load_state_dict(vae.q_z_given_x.body.state_dict())
    lv.q_hat[0].load_state_dict(vae.q_z_given_x.head.state_dict())
    for m in (h, lv):
        m.p_x.load_state_dict(vae.p_x_given_z.state_dict())
    x = binary_data(9)
    eps = torch.randn(3, 9, 4)
    q = vae.encode(x)
    z = q.base_dist.loc + q.base_dist.scale * eps
    log_px = vae.decode(z).log_prob(x)
    want = {"recon": log_px.mean(0), "kl": kl_divergence(q, vae.prior(x))}
    want["elbo"] = want["recon"] - want["kl"]
    log_w = log_px + vae.prior(z).log_prob(z) - q.log_prob(z)
    for m in (h, lv):
        got = m.elbo(x, mc=3, noise=[eps])
        for key in want:
            torch.testing.assert_close(got[key], want[key], msg=f"{type(m).name} {key}")
        torch.testing.assert_close(got["kl_layer1"], want["kl"])
        torch.testing.assert_close(m.log_weights(x, 3, noise=[eps]), log_w)
        torch.manual_seed(5)  # and drawing the noise itself, the same random numbers give the same bounds
        ours = m.elbo(x)["elbo"]
        torch.manual_seed(5)
        torch.testing.assert_close(ours, vae.elbo(x)["elbo"])


# --- exact log-likelihood -------------------------------------------------------------------------------------------
def exact_log_px(model, xs, lim=12.0, n=1201):
    """``log p(x)`` of a two-layer model with 1-d latents by quadrature over (z1, z2) on a grid."""
    grid = torch.linspace(-lim, lim, n, dtype=torch.float64)
    dz = float(grid[1] - grid[0])
    with torch.no_grad():
        log_pz2 = Normal(0.0, 1.0).log_prob(grid)  # (n,) over z2
        mu, var = gauss(model.p_z[0](grid[:, None]))  # (n, 1) per z2
        log_pz1 = Normal(mu, var.sqrt()).log_prob(grid[None, :])  # (n z2, n z1)
        log_px_z1 = model.p_x(grid[:, None]).log_prob(xs[:, None, :])  # (points, n z1)
        log_pz1_marg = torch.logsumexp(log_pz1 + log_pz2[:, None], 0) + math.log(dz)  # (n z1,)
        return torch.logsumexp(log_px_z1 + log_pz1_marg, 1) + math.log(dz)


@pytest.mark.parametrize("cls", MODELS)
def test_bounds_never_exceed_the_exact_log_likelihood(cls):
    torch.manual_seed(1)
    m = cls(cls.Config(x_dim=3, z_dims=(1, 1), hidden=(8, 4))).double()
    xs = torch.tensor([[(i >> b) & 1 for b in range(3)] for i in range(8)], dtype=torch.float64)
    exact = exact_log_px(m, xs)
    assert float(exact.exp().sum()) == pytest.approx(1.0, abs=1e-6)  # p(x) sums to one over the 8 binary x
    with torch.no_grad():
        torch.manual_seed(2)
        elbo = m.elbo(xs, mc=20_000)["elbo"]
        log_w = m.log_weights(xs, 20_000)  # 20 000 draws, grouped into independent L_k estimates
        bounds = {k: objectives.log_mean_exp(log_w.view(-1, k, 8), dim=1).mean(0) for k in (1, 10, 100)}
        ll = m.log_likelihood(xs, k=50_000, chunk=5000)
    assert torch.all(elbo < exact) and torch.all(bounds[1] < exact)
    assert float(bounds[1].mean()) < float(bounds[10].mean()) < float(bounds[100].mean()) < float(exact.mean())
    torch.testing.assert_close(ll, exact, atol=0.03, rtol=0)  # L_K -> log p(x); at K = 5e4 the spread is ~0.01
    assert float(ll.mean()) == pytest.approx(float(exact.mean()), abs=0.01)


# --- importance weighting -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", MODELS)
def test_one_sample_iw_bound_is_the_elbo_with_the_same_noise(cls):
    m = tiny(cls)
    x = binary_data(6)
    eps = noise_for(m, (1,), 6)
    torch.testing.assert_close(m.iw_bound(x, 1, noise=eps), m.elbo(x, analytic_kl=False, noise=eps)["elbo"])
    with torch.no_grad():  # L_1 <= L_50 on average (3.31)
        torch.manual_seed(3)
        log_w = m.log_weights(x, 1000)  # 1000 draws of L_1, or 20 independent draws of L_50
        l1, l50 = log_w.mean(), objectives.log_mean_exp(log_w.view(20, 50, 6), dim=1).mean()
    assert float(l1) < float(l50)


@pytest.mark.parametrize("cls", MODELS)
def test_analytic_kl_matches_monte_carlo(cls):
    """The analytic layer terms are unbiased for ``E_q[log q - log p]``: both ELBO estimators agree on average."""
    m = tiny(cls).double()
    x = binary_data(4).double()
    with torch.no_grad():
        torch.manual_seed(4)
        a = m.elbo(x, mc=20_000)
        b = m.elbo(x, mc=20_000, analytic_kl=False)
    for i in (1, 2, 3):
        torch.testing.assert_close(a[f"kl_layer{i}"], b[f"kl_layer{i}"], atol=0.05, rtol=0.02)


def test_chunked_log_likelihood_equals_one_chunk():
    m = tiny(LVAE)
    x = binary_data(6)
    bank = noise_for(m, (300,), 6)
    taken = {"k": 0}
    infer = m.infer

    def fixed(xb, sample_shape=(), noise=None):  # successive slices of one noise bank, whatever the chunking
        k = sample_shape[0]
        eps = [e[taken["k"]:taken["k"] + k] for e in bank]
        taken["k"] += k
        return infer(xb, sample_shape, eps)

    m.infer = fixed
    one = m.log_likelihood(x, k=300, chunk=300)
    taken["k"] = 0
    many = m.log_likelihood(x, k=300, chunk=7)
    torch.testing.assert_close(many, one)
    del m.infer
    with torch.no_grad():
        m.eval()
        torch.testing.assert_close(one, torch.logsumexp(m.log_weights(x, 300, noise=bank), 0) - math.log(300))


# --- KL bookkeeping ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", MODELS)
def test_per_layer_kl_sums_to_the_total_in_evaluate(cls):
    m = tiny(cls, depth=4, eval_iw=5)
    x = binary_data(30)
    metrics = m.evaluate(x, batch_size=7)
    layers = [f"test_kl_layer{i}" for i in (1, 2, 3, 4)]
    unit_keys = [f"test_unit_kl_layer{i}" for i in (1, 2, 3, 4)]
    assert set(metrics) == {"test_elbo", "test_recon", "test_kl", "test_iw_bound", "test_active_units",
                            *layers, *(f"test_active_units_layer{i}" for i in (1, 2, 3, 4)), *unit_keys}
    assert all(isinstance(v, float) for k, v in metrics.items() if k not in unit_keys)
    assert sum(metrics[k] for k in layers) == pytest.approx(metrics["test_kl"], abs=1e-4)
    # the per-unit record (the data of Fig. 5.2) has one value per unit and sums to its layer
    for i, (key, layer) in enumerate(zip(unit_keys, layers)):
        assert len(metrics[key]) == m.config.sizes[i]
        assert sum(metrics[key]) == pytest.approx(metrics[layer], abs=1e-3)
    assert metrics["test_elbo"] == pytest.approx(metrics["test_recon"] - metrics["test_kl"], abs=1e-4)
    assert metrics["test_active_units"] == sum(metrics[f"test_active_units_layer{i}"] for i in (1, 2, 3, 4))
    assert "test_iw_bound" not in m.evaluate(x, iw=1)
    # the per-unit KL of each layer sums to its layer KL (the same draws with the same seed)
    torch.manual_seed(6)
    metrics = m.evaluate(x, batch_size=7, iw=0)
    torch.manual_seed(6)
    units = m.kl_per_unit(x, batch_size=7)
    assert {k: tuple(v.shape) for k, v in units.items()} == {"z1": (6,), "z2": (5,), "z3": (4,), "z4": (3,)}
    for i in (1, 2, 3, 4):
        assert float(units[f"z{i}"].sum()) == pytest.approx(metrics[f"test_kl_layer{i}"], abs=1e-4)
        assert metrics[f"test_active_units_layer{i}"] == objectives.active_units(units[f"z{i}"])
    assert m.training  # the evaluation helpers restore the training mode


def test_collapsed_units_are_not_active():
    """A layer whose posterior equals its prior has zero KL in every unit (LVAE: analytic, exactly 0)."""
    m = tiny(LVAE, depth=2)
    with torch.no_grad():
        for p in m.q_hat[1].parameters():
            p.zero_()
        m.q_hat[1].scale.bias.fill_(math.log(math.e - 1))  # softplus(.) = 1: q(z2|x) = N(0, I)
    units = m.kl_per_unit(binary_data(20))
    assert float(units["z2"].abs().max()) < 1e-5 and objectives.active_units(units["z2"]) == 0


# --- training -------------------------------------------------------------------------------------------------------
def test_warmup_temperature_schedule():
    t = objectives.kl_temperature
    assert [t(e, 4) for e in (0, 1, 2, 4, 10)] == [0.0, 0.25, 0.5, 1.0, 1.0] and t(0, 0) == 1.0


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("iw", [1, 3])
def test_warmup_multiplies_only_the_kl_terms(cls, iw):
    m = tiny(cls, warmup_epochs=4, iw=iw, mc=2)
    x = binary_data(10)
    for epoch, temp in ((0, 0.0), (1, 0.25), (6, 1.0)):
        torch.manual_seed(7)
        out = m.step({"x": x}, epoch)
        assert out.metrics["temperature"] == temp
        if iw == 1:
            torch.testing.assert_close(out.loss.detach(), -(out.terms["recon"] - temp * out.terms["kl"]))
        else:
            torch.manual_seed(7)
            s = m.forward_pass(x, (2, iw))
            want = -objectives.iw_bound(s.log_px + temp * m.log_ratio(s), dim=1).mean()
            torch.testing.assert_close(out.loss, want)
            assert "iw_bound" in out.terms
    assert {"elbo", "recon", "kl", "kl_layer1", "kl_layer2", "kl_layer3"} <= set(out.terms)
    torch.testing.assert_close(out.terms["kl"], sum(out.terms[f"kl_layer{i}"] for i in (1, 2, 3)))


def test_zero_temperature_trains_only_the_reconstruction():
    """HVAE at T = 0: the priors p(z_i|z_{i+1}) and the upper q(z_i|z_{i-1}) only enter the KL terms, so they get no
    gradient; q(z1|x) and p(x|z1) do."""
    m = tiny(HVAE, warmup_epochs=10)
    m.step({"x": binary_data(10)}, epoch=0).loss.backward()
    grad = lambda mod: sum(float(p.grad.abs().sum()) for p in mod.parameters() if p.grad is not None)  # noqa: E731
    assert grad(m.p_z) == 0 and grad(m.q_z[1:]) == 0
    assert grad(m.q_z[0]) > 0 and grad(m.p_x) > 0


@pytest.mark.parametrize("cls, extra", [(HVAE, {}), (LVAE, {"batch_norm": True, "batch_norm_heads": True}),
                                        (LVAE, {"iw": 3})])
def test_a_short_training_run_lowers_the_loss(cls, extra):
    m = tiny(cls, **extra)
    x = binary_data(64)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    torch.manual_seed(0)
    before = m.evaluate(x)["test_elbo"]
    for step in range(80):
        out = m.step({"x": x}, epoch=step // 40)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = m.evaluate(x)["test_elbo"]
    assert after > before + 1.0, (before, after)


# --- shapes for every depth ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_shapes_for_every_depth(cls, depth):
    m = tiny(cls, depth=depth, batch_norm=depth % 2 == 0, iw=2)
    x = binary_data(5)
    names = [f"z{i + 1}" for i in range(depth)]
    sizes = TINY["z_dims"][:depth]
    assert len(m.p_z) == depth - 1 and m.layer_names() == names
    terms = m.elbo(x, mc=3)
    assert set(terms) == {"recon", "kl", "elbo", *(f"kl_layer{i + 1}" for i in range(depth))}
    assert all(v.shape == (5,) for v in terms.values())
    s = m.forward_pass(x, (4, 2))
    assert [tuple(z.shape) for z in s.z] == [(4, 2, 5, d) for d in sizes] and s.log_px.shape == (4, 2, 5)
    assert m.log_weights(x, 4).shape == (4, 5) and m.iw_bound(x, 4).shape == (5,)
    assert m.log_likelihood(x, k=20, chunk=6).shape == (5,)
    assert {k: tuple(v.shape) for k, v in m.kl_per_unit(x).items()} == {n: (d,) for n, d in zip(names, sizes)}
    assert {k: tuple(v.shape) for k, v in m.posterior(x).items()} == {n: (5, d) for n, d in zip(names, sizes)}
    assert m.sample(6).shape == (6, X_DIM) and m.reconstruct(x).shape == (5, X_DIM)
    assert {f"test_kl_layer{depth}", f"test_active_units_layer{depth}"} <= set(m.evaluate(x))
    out = m.step({"x": x}, 0)
    out.loss.backward()
    assert out.loss.shape == () and m.training


def test_sample_gives_probabilities_and_reconstruct_is_deterministic():
    m = tiny(LVAE, batch_norm=True)
    means = m.sample(10)
    assert torch.all((means >= 0) & (means <= 1))
    assert set(m.sample(10, mean=False).unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(m.reconstruct(binary_data(4)), m.reconstruct(binary_data(4)))


# --- devices, dtypes, errors, saving ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", MODELS)
def test_dtype_follows_the_model(cls):
    m = tiny(cls, likelihood="gaussian").double()
    x = torch.randn(5, X_DIM, dtype=torch.float64)
    assert m.step({"x": x}, 0).loss.dtype == torch.float64
    assert m.log_likelihood(x, k=10).dtype == torch.float64
    assert m.sample(3).dtype == torch.float64 and m.kl_per_unit(x)["z1"].dtype == torch.float64


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cls", MODELS)
def test_runs_on_cuda(cls):
    m = tiny(cls, iw=3, batch_norm=True, batch_norm_heads=True, eval_iw=5).to("cuda")
    x = binary_data(16).to("cuda")
    out = m.step({"x": x}, 0)
    out.loss.backward()
    assert out.loss.device.type == "cuda"
    assert m.log_likelihood(x, k=50, chunk=20).device.type == "cuda"
    assert m.kl_per_unit(x)["z1"].device.type == "cuda" and m.sample(4).device.type == "cuda"
    assert {"test_elbo", "test_iw_bound", "test_kl_layer3"} <= set(m.evaluate(x))


@pytest.mark.parametrize("cls", MODELS)
def test_bad_inputs_raise_clear_errors(cls):
    m = tiny(cls)
    with pytest.raises(ValueError, match=f"shape \\(batch, {X_DIM}\\)"):
        m.elbo(torch.zeros(4, X_DIM + 1))
    with pytest.raises(ValueError, match="shape"):
        m.elbo(torch.zeros(2, 4, X_DIM))
    with pytest.raises(TypeError, match="floating-point"):
        m.step({"x": torch.zeros(4, X_DIM, dtype=torch.long)}, 0)
    with pytest.raises(KeyError, match="'x'"):
        m.step({"x_u": binary_data(4)}, 0)
    with pytest.raises(ValueError, match="binar"):
        m.elbo(torch.full((4, X_DIM), 0.3))
    with pytest.raises(ValueError, match="one tensor per latent layer"):
        m.elbo(binary_data(4), noise=[torch.zeros(1, 4, 6)])
    with pytest.raises(ValueError, match="noise for z2"):
        m.elbo(binary_data(4), noise=[torch.zeros(1, 4, 6), torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match="positive integer"):
        m.iw_bound(binary_data(2), 0)
    with pytest.raises(ValueError, match="positive integer"):
        m.sample(0)
    with pytest.raises(ValueError, match="chunk"):
        m.log_likelihood(binary_data(2), k=10, chunk=0)
    with pytest.raises(ValueError, match="mc"):
        m.elbo(binary_data(2), mc=0)


@pytest.mark.parametrize("cls", MODELS)
def test_checkpoint_roundtrip(cls, tmp_path):
    from dgmlab.checkpoints import load_model, save_checkpoint

    m = tiny(cls, batch_norm=True, batch_norm_heads=True)
    m.step({"x": binary_data(16)}, 0)  # move the running averages
    path = tmp_path / "model.pt"
    save_checkpoint(path, m)
    loaded = load_model(path, expect=cls.name, device="cpu")
    assert loaded.config == m.config and loaded.config.z_dims == TINY["z_dims"]
    x = binary_data(5)
    torch.testing.assert_close(loaded.reconstruct(x), m.reconstruct(x))


# --- the command line -------------------------------------------------------------------------------------------------
def test_cli_trains_and_evaluates_on_mnist(tmp_path, mnist_available):
    from dgmlab.cli import main

    out = tmp_path / "run"
    assert main(["train", "lvae", "--data", "mnist", "--epochs", "1", "--max-batches", "2", "--n-test", "100",
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    record = metrics["history"][0]
    assert metrics["config"]["z_dims"] == [64, 32, 16, 8, 4] and metrics["config"]["batch_norm"] is True
    assert metrics["train_config"]["batch_size"] == 256 and metrics["train_config"]["lr"] == 1e-3
    for i in range(1, 6):
        assert {f"test_kl_layer{i}", f"test_active_units_layer{i}", f"train_kl_layer{i}"} <= set(record)
    assert record["train_temperature"] == 0.0 and record["test_elbo"] < 0
    assert sum(record[f"test_kl_layer{i}"] for i in range(1, 6)) == pytest.approx(record["test_kl"], rel=1e-4)
    assert main(["eval", str(out / "model.pt"), "--iw", "10", "--chunk", "5", "--device", "cpu"]) == 0
    evaluated = json.loads((out / "metrics.json").read_text())["eval"]
    assert evaluated["test_log_likelihood_iw10"] < 0 and evaluated["n_test"] == 100
    assert 0 < evaluated["test_log_likelihood_sem"] < 10        # standard error of the mean over the 100 digits
    assert "test_log_likelihood_per_point" not in evaluated   # only on request: a record stays small
    assert main(["eval", str(out / "model.pt"), "--iw", "10", "--chunk", "5", "--device", "cpu", "--n-test", "40",
                 "--per-point"]) == 0
    per_point = json.loads((out / "metrics.json").read_text())["eval"]
    points = per_point["test_log_likelihood_per_point"]
    assert len(points) == per_point["n_test"] == 40
    assert sum(points) / 40 == pytest.approx(per_point["test_log_likelihood_iw10"], abs=1e-3)
    # a shallower bottom-up VAE through --set
    out = tmp_path / "hvae"
    assert main(["train", "hvae", "--data", "mnist", "--epochs", "1", "--max-batches", "1", "--n-test", "100",
                 "--out", str(out), "--no-progress", "--device", "cpu", "--set", "depth=2"]) == 0
    record = json.loads((out / "metrics.json").read_text())["history"][0]
    assert "test_kl_layer2" in record and "test_kl_layer3" not in record
