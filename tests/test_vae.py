"""The VAE and IWAE of chapter 3 (thesis eqs. 3.19-3.31; reproduction notes rn-vae-settings): shapes, bounds,
training, devices, errors."""

import math

import pytest
import torch
from torch.distributions import kl_divergence

from dgmlab.models import get_model_class
from dgmlab.models.vae import IWAE, VAE, IWAEConfig, VAEConfig

X_DIM, Z_DIM = 12, 3


def small_vae(cls=VAE, **overrides):
    torch.manual_seed(0)
    cfg = cls.Config(**{"x_dim": X_DIM, "z_dim": Z_DIM, "hidden": (16,), **overrides})
    return cls(cfg)


def binary_data(n=32, seed=0, d=X_DIM):
    """Noisy copies of three binary prototypes: structure a VAE can learn."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(3, d, generator=g) < 0.5).float()
    x = protos[torch.randint(0, 3, (n,), generator=g)]
    flip = (torch.rand(n, d, generator=g) < 0.05).float()
    return (x + flip) % 2


# --- construction ---------------------------------------------------------------------------------------------------
def test_registry_and_defaults():
    assert get_model_class("vae") is VAE and get_model_class("iwae") is IWAE
    assert VAE.setting == IWAE.setting == "unsupervised"
    cfg = VAEConfig(x_dim=784)
    assert (cfg.z_dim, cfg.hidden, cfg.variance, cfg.iw, cfg.warmup_epochs) == (50, (500, 500), "softplus_std", 1, 0)
    assert IWAEConfig(x_dim=784).iw > 1
    assert VAEConfig(x_dim=4, hidden=[8, 8]).hidden == (8, 8)  # lists from JSON become tuples


@pytest.mark.parametrize("bad, match", [({"likelihood": "poisson"}, "likelihood"), ({"z_dim": 0}, "z_dim"),
                                        ({"iw": 0}, "iw"), ({"variance": "var"}, "variance"),
                                        ({"activation": "swish"}, "activation"), ({"warmup_epochs": -1}, "warmup")])
def test_config_rejects_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        VAEConfig(x_dim=4, **bad)


# --- shapes ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("variance", ["softplus_std", "logvar"])
def test_shapes_and_broadcasting(likelihood, variance):
    model = small_vae(likelihood=likelihood, variance=variance)
    x = binary_data(5)
    q = model.encode(x)
    assert q.batch_shape == (5,) and q.event_shape == (Z_DIM,)
    z = q.rsample((7,))
    p_x = model.decode(z)
    assert p_x.batch_shape == (7, 5) and p_x.event_shape == (X_DIM,)
    assert p_x.log_prob(x).shape == (7, 5)
    terms = model.elbo(x, mc=3)
    assert {k: v.shape for k, v in terms.items()} == {"recon": (5,), "kl": (5,), "elbo": (5,)}
    assert model.log_weights(x, 4).shape == (4, 5)
    assert model.iw_bound(x, 4).shape == (5,)
    assert model.log_likelihood(x, k=20, chunk=6).shape == (5,)
    assert model.kl_per_unit(x).shape == (Z_DIM,)
    assert model.sample(6).shape == (6, X_DIM)
    assert model.reconstruct(x).shape == (5, X_DIM)
    assert model.training  # the evaluation helpers restore the training mode


def test_sample_and_reconstruct_give_probabilities_for_binary_data():
    model = small_vae()
    means = model.sample(10)
    assert torch.all((means >= 0) & (means <= 1))
    draws = model.sample(10, mean=False)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(model.reconstruct(binary_data(4)), model.reconstruct(binary_data(4)))  # deterministic


# --- bounds ---------------------------------------------------------------------------------------------------------
def test_analytic_kl_matches_monte_carlo_kl_of_the_encoder():
    model = small_vae()
    x = binary_data(4)
    with torch.no_grad():
        q = model.encode(x)
        z = q.sample((100_000,))
        diff = q.log_prob(z) - model.prior(z).log_prob(z)
        se = diff.std(0) / math.sqrt(len(z))
        analytic = kl_divergence(q, model.prior(x))
    assert torch.all((diff.mean(0) - analytic).abs() < 4 * se)
    torch.testing.assert_close(model.elbo(x)["kl"].detach(), analytic)


def test_one_sample_iw_bound_is_the_elbo_with_the_same_samples():
    model = small_vae()
    x = binary_data(6)
    torch.manual_seed(11)
    iw1 = model.iw_bound(x, 1)
    torch.manual_seed(11)
    elbo_mc = model.elbo(x, mc=1, analytic_kl=False)["elbo"]
    torch.testing.assert_close(iw1, elbo_mc)


def test_one_sample_iw_bound_is_the_analytic_elbo_in_expectation():
    model = small_vae()
    x = binary_data(4)
    with torch.no_grad():
        torch.manual_seed(1)
        log_w = model.log_weights(x, 50_000)  # 50 000 independent draws of L_1
        se = log_w.std(0) / math.sqrt(len(log_w))
        terms = model.elbo(x, mc=50_000)  # analytic KL; recon averaged over its own samples
    assert torch.all((log_w.mean(0) - terms["elbo"]).abs() < 5 * se)


def test_iw_bound_grows_with_k_on_average():
    model = small_vae()
    x = binary_data(8)
    torch.manual_seed(2)
    with torch.no_grad():
        means = [float(torch.stack([model.iw_bound(x, k).mean() for _ in range(100)]).mean()) for k in (1, 10, 100)]
        ll = float(model.log_likelihood(x, k=5000).mean())
    assert means[0] < means[1] < means[2] < ll + 0.05


def fixed_noise_encoder(model, eps):
    """``model.encode`` whose ``q(z|x).sample`` reads successive slices of a fixed noise bank ``eps`` (shape
    ``(k, n_points, z_dim)``), so that any chunking of samples and data sees exactly the same ``z``."""
    encode, state = model.encode, {"row": 0}

    def encode_fixed(x):
        q = encode(x)
        rows, taken = slice(state["row"], state["row"] + len(x)), {"k": 0}
        state["row"] += len(x)

        def sample(shape):
            e = eps[taken["k"]:taken["k"] + shape[0], rows]
            taken["k"] += shape[0]
            return q.base_dist.loc + q.base_dist.scale * e

        q.sample = sample
        return q

    return encode_fixed


def test_chunked_log_likelihood_equals_one_chunk(monkeypatch):
    model = small_vae()
    x = binary_data(6)
    eps = torch.randn(300, 6, Z_DIM)
    monkeypatch.setattr(model, "encode", fixed_noise_encoder(model, eps))
    one = model.log_likelihood(x, k=300, chunk=300)
    monkeypatch.setattr(model, "encode", fixed_noise_encoder(model, eps))
    many = model.log_likelihood(x, k=300, chunk=7, batch_size=4)
    torch.testing.assert_close(many, one)
    assert not many.requires_grad
    with torch.no_grad():  # and both equal the one-shot logsumexp of the same weights
        q = VAE.encode(model, x)
        z = q.base_dist.loc + q.base_dist.scale * eps
        log_w = model.decode(z).log_prob(x) + model.prior(z).log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(one, torch.logsumexp(log_w, 0) - math.log(300))


def test_kl_per_unit_sums_to_the_mean_kl():
    model = small_vae()
    x = binary_data(20)
    torch.testing.assert_close(model.kl_per_unit(x, batch_size=7).sum(), model.elbo(x)["kl"].mean().detach())


# --- training -------------------------------------------------------------------------------------------------------
def test_step_output_and_warmup():
    model = small_vae(warmup_epochs=4)
    x = binary_data(10)
    out = model.step({"x": x}, epoch=0)  # T = 0: only the reconstruction term is trained
    assert out.metrics["temperature"] == 0.0
    assert set(out.terms) == {"elbo", "recon", "kl"} and out.loss.requires_grad
    torch.testing.assert_close(out.loss.detach(), -out.terms["recon"])
    out = model.step({"x": x}, epoch=2)
    assert out.metrics["temperature"] == 0.5
    assert set(out.metrics) == {"temperature", "elbo", "recon", "kl"}


def test_iwae_step_reports_the_iw_bound():
    model = small_vae(IWAE, iw=5, mc=2)
    out = model.step({"x": binary_data(10)}, epoch=0)
    assert "iw_bound" in out.terms
    assert float(out.terms["iw_bound"]) > float(out.terms["elbo"]) - 1.0  # tighter up to MC noise
    torch.testing.assert_close(out.loss.detach(), -out.terms["iw_bound"])  # no warm-up: the loss is -L_5


@pytest.mark.parametrize("cls, extra", [(VAE, {}), (IWAE, {"iw": 4}), (VAE, {"batch_norm": True, "mc": 2})])
def test_a_short_training_run_lowers_the_loss(cls, extra):
    model = small_vae(cls, **extra)
    x = binary_data(64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    before = model.evaluate(x)["test_elbo"]
    for step in range(150):
        out = model.step({"x": x}, epoch=step // 50)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = model.evaluate(x)["test_elbo"]
    assert after > before + 1.0, (before, after)


def test_evaluate_keys_and_values():
    model = small_vae(eval_iw=5)
    x = binary_data(30)
    metrics = model.evaluate(x, batch_size=7)
    assert set(metrics) == {"test_elbo", "test_recon", "test_kl", "test_iw_bound", "test_active_units"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["test_elbo"] == pytest.approx(metrics["test_recon"] - metrics["test_kl"], abs=1e-4)
    assert 0 <= metrics["test_active_units"] <= Z_DIM
    assert "test_iw_bound" not in model.evaluate(x, iw=1)


# --- devices, dtypes, errors, saving ----------------------------------------------------------------------------------
def test_dtype_follows_the_model_and_inputs():
    model = small_vae(likelihood="gaussian").double()
    x = torch.randn(5, X_DIM, dtype=torch.float64)
    assert model.step({"x": x}, 0).loss.dtype == torch.float64
    assert model.log_likelihood(x, k=10).dtype == torch.float64
    assert model.sample(3).dtype == torch.float64


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_cuda():
    model = small_vae(IWAE, iw=3).to("cuda")
    x = binary_data(16).to("cuda")
    out = model.step({"x": x}, 0)
    out.loss.backward()
    assert out.loss.device.type == "cuda"
    assert model.log_likelihood(x, k=50, chunk=20).device.type == "cuda"
    assert model.kl_per_unit(x).device.type == "cuda"
    assert model.sample(4).device.type == "cuda"
    assert set(model.evaluate(x)) >= {"test_elbo", "test_iw_bound"}


def test_bad_inputs_raise_clear_errors():
    model = small_vae()
    with pytest.raises(ValueError, match=f"shape \\(batch, {X_DIM}\\)"):
        model.elbo(torch.zeros(4, X_DIM + 1))
    with pytest.raises(ValueError, match="shape"):
        model.encode(torch.zeros(X_DIM))
    with pytest.raises(TypeError, match="floating-point"):
        model.step({"x": torch.zeros(4, X_DIM, dtype=torch.long)}, 0)
    with pytest.raises(ValueError, match="binar"):
        model.elbo(torch.full((4, X_DIM), 0.3))
    with pytest.raises(ValueError, match="z must have shape"):
        model.decode(torch.zeros(4, Z_DIM + 2))
    with pytest.raises(ValueError, match="positive integer"):
        model.iw_bound(binary_data(2), 0)
    with pytest.raises(ValueError, match="positive integer"):
        model.sample(0)
    with pytest.raises(ValueError, match="chunk"):
        model.log_likelihood(binary_data(2), k=10, chunk=0)
    with pytest.raises(ValueError, match="mc"):
        model.elbo(binary_data(2), mc=0)


def test_state_dict_roundtrip(tmp_path):
    model = small_vae(IWAE, iw=3)
    path = tmp_path / "vae.pt"
    torch.save({"config": model.config_dict(), "state": model.state_dict()}, path)
    stored = torch.load(path, weights_only=True)
    clone = IWAE(IWAEConfig(**stored["config"]))
    clone.load_state_dict(stored["state"])
    x = binary_data(5)
    torch.testing.assert_close(clone.reconstruct(x), model.reconstruct(x))


def test_checkpoint_roundtrip(tmp_path):
    checkpoints = pytest.importorskip("dgmlab.checkpoints")
    model = small_vae(likelihood="gaussian", hidden=(16, 8))
    path = tmp_path / "vae.pt"
    checkpoints.save_checkpoint(path, model)
    loaded = checkpoints.load_model(path, expect="vae", device="cpu")
    assert loaded.config == model.config
    x = torch.randn(5, X_DIM)
    torch.testing.assert_close(loaded.reconstruct(x), model.reconstruct(x))
    with pytest.raises(checkpoints.CheckpointError, match="iwae"):
        checkpoints.load_model(path, expect="iwae")
