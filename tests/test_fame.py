"""FAME and FAME No Concatenation (thesis section 5.2; Maaløe and Winther 2018, thesis Appendix E): the masks and
the causality of the PixelCNN head by gradients, the architecture of Table 1, odd image sizes through every block,
the bounds, warm-up from 0.3, exact resume, generation, errors and the command line. Tiny channel counts throughout."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from dgmlab import objectives
from dgmlab.data.bundle import DataBundle, make_config
from dgmlab.models import get_model_class
from dgmlab.models.fame import FAME, SMALL_CPU, FAMEConfig, FAMENoConcat, upsample_bn_relu
from dgmlab.models.pixelcnn import MaskedConv2d, PixelCNN, causal_mask

SHAPE = (6, 6)
TINY = {"z_dims": (6, 5, 4, 3, 2), "channels": 4, "residual_blocks": 1}
MODELS = [FAME, FAMENoConcat]


def tiny(cls=FAME, shape=SHAPE, **overrides):
    torch.manual_seed(0)
    return cls(cls.Config(**{"x_dim": shape[0] * shape[1], "image_shape": shape, **TINY, **overrides}))


def binary_images(n=8, shape=SHAPE, seed=0):
    """Noisy copies of three binary prototypes, flattened."""
    g = torch.Generator().manual_seed(seed)
    d = shape[0] * shape[1]
    protos = (torch.rand(3, d, generator=g) < 0.5).float()
    x = protos[torch.randint(0, 3, (n,), generator=g)]
    return (x + (torch.rand(n, d, generator=g) < 0.05).float()) % 2


def noise_for(model, shape, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, n, d, generator=g) for d in model.config.sizes]


# --- construction ---------------------------------------------------------------------------------------------------
def test_registry_defaults_and_recipes():
    from dgmlab.cli import recipes_text

    assert get_model_class("fame") is FAME and get_model_class("fame_noconcat") is FAMENoConcat
    cfg = FAMEConfig(x_dim=784)
    assert cfg.image_shape == (28, 28) and cfg.z_dims == (64, 32, 16, 8, 4) and cfg.channels == 64
    assert (cfg.warmup_epochs, cfg.warmup_start, cfg.iw, cfg.concat) == (200, 0.3, 1, True)
    assert FAMENoConcat.Config(x_dim=784).concat is False
    assert FAMEConfig(x_dim=784, z_dims=[4, 2], image_shape=[28, 28]).image_shape == (28, 28)  # from JSON lists
    for cls in MODELS:
        assert cls.setting == "unsupervised" and cls.trim_mnist is False
        model, train = cls.recipe("mnist")
        assert model["warmup_epochs"] == 200 and model["warmup_start"] == 0.3 and model["iw"] == 1
        assert train["lr"] == 3e-4 and model["channels"] == 64
        assert "--set channels=16" in cls.recipes["mnist"]["source"]
    assert FAMENoConcat.recipe("mnist")[0]["concat"] is False
    assert SMALL_CPU == {"channels": 16}
    text = recipes_text()
    assert "fame --data mnist" in text and "fame_noconcat --data mnist" in text and "untrimmed" in text


def test_architecture_follows_table_1():
    m = FAME(FAMEConfig(x_dim=784)).eval()
    convs = [[(c.kernel_size[0], c.stride[0], c.out_channels) for c in block if isinstance(c, torch.nn.Conv2d)]
             for block in m.up]
    assert convs == [[(5, 2, 32), (3, 1, 64)]] + [[(3, 2, 64), (3, 1, 64)]] * 4
    assert all(isinstance(b[1], torch.nn.BatchNorm2d) and isinstance(b[2], torch.nn.ReLU) for b in m.up)
    assert [g.dense[1].out_features for g in m.q_hat] == [64, 32, 16, 8, 4]  # DENSE D = latent size
    maps, h = [], torch.zeros(2, 1, 28, 28)
    for block in m.up:
        h = block(h)
        maps.append(tuple(h.shape[1:]))
    assert maps == [(64, 14, 14), (64, 7, 7), (64, 4, 4), (64, 2, 2), (64, 1, 1)]
    assert tuple(m.decoder_output(torch.zeros(2, 64)).shape) == (2, 32, 28, 28)
    head = m.pixelcnn
    assert head.first.kernel_size == (7, 7) and head.first.out_channels == 64 and head.first.in_channels == 1 + 32
    assert len(head.blocks) == 4 and all(b.conv1.kernel_size == (3, 3) for b in head.blocks)
    assert [(o.kernel_size, o.out_channels) for o in head.out] == [((1, 1), 64), ((1, 1), 64), ((1, 1), 1)]
    # the first layer: mask A on the image channel, open on the 32 decoder channels
    torch.testing.assert_close(head.first.mask[0, 0], causal_mask(7, "A"))
    assert bool((head.first.mask[:, 1:] == 1).all())
    assert not any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in head.modules())
    assert FAMENoConcat(FAMENoConcat.Config(x_dim=784, channels=8)).pixelcnn.first.in_channels == 4


@pytest.mark.parametrize("shape", [(28, 28), (9, 11), (13, 13), (1, 3)])
def test_odd_sizes_through_every_block(shape):
    """Every bottom-up block rounds up (n -> ceil(n/2)); every transposed convolution returns to exactly the size of
    the block below it, and the decoder to the image."""
    m = tiny(shape=shape).eval()
    expect, (h, w) = [], shape
    for _ in range(5):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        expect.append((h, w))
    assert m.config.map_shapes == expect
    x = binary_images(3, shape)
    maps = m.to_images(x)
    for block, size in zip(m.up, expect):
        maps = block(maps)
        assert tuple(maps.shape) == (3, 4, *size)
    for i, block in enumerate(m.p_z):  # p(z_i|z_{i+1}) passes through the map of block i
        assert tuple(block.maps(torch.zeros(3, m.config.sizes[i + 1])).shape) == (3, 4, *expect[i])
    assert tuple(m.decoder_output(torch.zeros(3, 6)).shape) == (3, 2, *shape)
    assert tuple(m.logits(x, torch.zeros(3, 6)).shape) == (3, shape[0] * shape[1])
    assert m.elbo(x)["elbo"].shape == (3,) and m.sample(2).shape == (2, shape[0] * shape[1])


def test_28x28_transposed_convolutions_pad_explicitly():
    m = tiny(shape=(28, 28))
    ups = [next(l for l in b.maps if isinstance(l, torch.nn.ConvTranspose2d)) for b in m.p_z]
    assert [u.output_padding for u in ups] == [(1, 1), (0, 0), (1, 1), (1, 1)]  # 7->14, 4->7, 2->4, 1->2
    last = next(l for l in m.decoder if isinstance(l, torch.nn.ConvTranspose2d))
    assert last.kernel_size == (5, 5) and last.output_padding == (1, 1)  # 14 -> 28
    with pytest.raises(ValueError, match="cannot map"):
        upsample_bn_relu(4, 4, 3, (4, 4), (9, 9))


# --- the PixelCNN head ----------------------------------------------------------------------------------------------
def test_masks():
    a, b = causal_mask(3, "A"), causal_mask(3, "B")
    torch.testing.assert_close(a, torch.tensor([[1., 1, 1], [1, 0, 0], [0, 0, 0]]))
    torch.testing.assert_close(b, torch.tensor([[1., 1, 1], [1, 1, 0], [0, 0, 0]]))
    assert causal_mask(1, "B").item() == 1 and causal_mask(1, "A").item() == 0
    with pytest.raises(ValueError, match="odd"):
        causal_mask(4, "A")
    with pytest.raises(ValueError, match="kind"):
        causal_mask(3, "C")


def pixel_jacobian(fn, x):
    """``J[j, k] = d out_j / d x_k`` over the pixels of one image (x: (1, 1, H, W), out: (1, 1, H, W))."""
    x = x.clone().requires_grad_(True)
    out = fn(x).flatten()
    rows = [torch.autograd.grad(out[j], x, retain_graph=True, allow_unused=True)[0] for j in range(len(out))]
    return torch.stack([torch.zeros_like(x).flatten() if r is None else r.flatten() for r in rows])


@pytest.mark.parametrize("kind", ["A", "B"])
def test_a_masked_layer_reads_only_the_past(kind):
    """Mask A: output j reads inputs < j (raster order); mask B: inputs <= j, pixel j itself through the centre."""
    torch.manual_seed(0)
    conv = MaskedConv2d(1, 1, 5, kind)
    jac = pixel_jacobian(conv, torch.randn(1, 1, 5, 6)).abs()
    past = torch.ones(30, 30).tril(-1 if kind == "A" else 0).bool()
    assert float(jac[~past].max()) == 0.0
    assert bool((jac.diagonal() > 0).all()) == (kind == "B")
    assert bool((jac[1:].sum(1) > 0).all())  # every pixel but the first reads something


def test_pixelcnn_is_causal_by_gradient():
    """Logit j of the whole head (mask A, 4 residual mask-B blocks, output layers) has zero gradient with respect to
    every image pixel >= j, a non-zero one with respect to the pixel just before it, and reads the decoder output
    everywhere, pixel j included."""
    torch.manual_seed(0)
    head = PixelCNN(cond_channels=2, channels=8, residual_blocks=4)
    d = torch.randn(1, 2, 6, 7)
    # summed over three random images, so that a ReLU that happens to be off cannot hide a dependence
    jac = sum(pixel_jacobian(lambda x: head(x, d), (torch.rand(1, 1, 6, 7) < 0.5).float()).abs() for _ in range(3))
    assert float(jac.triu().max()) == 0.0  # j >= k: no dependence on the current or later pixels
    left = jac.diagonal(-1).view(-1)[[j - 1 for j in range(42) if j % 7]]  # (r, c-1) -> (r, c) for c > 0
    assert bool((left > 0).all()) and bool((jac[1:].sum(1) > 0).all())  # every pixel but the first reads the past
    jac_d = pixel_jacobian(lambda dd: head(torch.zeros(1, 1, 6, 7), dd.expand(1, 2, 6, 7)), d[:, :1])
    assert bool((jac_d.diagonal() != 0).all())  # the decoder output at pixel j is read


def test_the_model_logits_are_causal_in_the_image():
    """The same check through FAME's own ``logits(x, z_1)`` (training mode, batch-normalised decoder)."""
    m = tiny(shape=(5, 5))
    z1 = torch.randn(3, 6)
    x = binary_images(3, (5, 5)).requires_grad_(True)
    out = m.logits(x, z1)
    for j in (0, 7, 12, 24):
        g = torch.autograd.grad(out[:, j].sum(), x, retain_graph=True)[0]
        assert float(g[:, j:].abs().max()) == 0.0
        if j:
            assert float(g[:, :j].abs().sum()) > 0


def test_no_concatenation_head_ignores_the_image():
    m = tiny(FAMENoConcat)
    x = binary_images(4).requires_grad_(True)
    out = m.logits(x, torch.randn(4, 6))
    (grad,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    assert grad is None or float(grad.abs().max()) == 0.0
    assert bool((m.pixelcnn.first.mask == 1).all()) and m.pixelcnn.first.in_channels == 2
    torch.testing.assert_close(m.logits(None, torch.zeros(2, 6)), m.logits(binary_images(2), torch.zeros(2, 6)))


# --- generation -----------------------------------------------------------------------------------------------------
def naive_generate(head, d, u):
    """One full pass of the head per pixel, in raster order."""
    x = torch.zeros_like(u)
    for r in range(u.shape[2]):
        for c in range(u.shape[3]):
            p = torch.sigmoid(head(x, d))[:, 0, r, c]
            x[:, 0, r, c] = (u[:, 0, r, c] < p).float()
    return x


def test_generation_equals_a_naive_pixel_loop():
    """The windowed loop (rows the pixel can reach, decoder term computed once) draws the same images as full passes,
    and the probabilities it used are those the head gives to the finished image in one pass."""
    torch.manual_seed(0)
    head = PixelCNN(cond_channels=2, channels=4, residual_blocks=1)  # reaches 5 rows up; the image has 9
    d, u = torch.randn(3, 2, 9, 5), torch.rand(3, 1, 9, 5)
    x, probs = head.generate(d, u)
    with torch.no_grad():
        torch.testing.assert_close(x, naive_generate(head, d, u))
        torch.testing.assert_close(probs, torch.sigmoid(head(x, d)))
    assert head.receptive_rows == 5


def test_sample_and_generate():
    for cls in MODELS:
        m = tiny(cls)
        x = m.sample(3)
        assert x.shape == (3, 36) and set(x.unique().tolist()) <= {0.0, 1.0}
        probs = m.sample(2, mean=True)
        assert bool(((probs >= 0) & (probs <= 1)).all())
        z1, u = torch.randn(4, 6), torch.rand(4, 36)
        a, b = m.generate(z1, uniforms=u), m.generate(z1, uniforms=u)
        torch.testing.assert_close(a, b)  # a fixed z and fixed uniforms give one image
        p = m.generate(z1, mean=True, uniforms=u)
        torch.testing.assert_close(a, (u < p).float())
        assert m.reconstruct(binary_images(5)).shape == (5, 36)
        assert m.training  # generation runs in eval mode and restores the mode
        with torch.no_grad():  # along the drawn images, the pixel probabilities are the teacher-forced ones
            torch.testing.assert_close(p, torch.sigmoid(m.eval().logits(a, z1)))


def test_reconstruction_masks_of_fig_3():
    m = tiny().eval()
    x, other = binary_images(4, seed=1), binary_images(4, seed=2)
    z1 = torch.randn(4, 6)
    with torch.no_grad():
        torch.testing.assert_close(m.logits(x, z1, mask="image"), m.logits(other, z1, mask="image"))
        torch.testing.assert_close(m.logits(x, z1, mask="latent"), m.logits(x, torch.randn(4, 6), mask="latent"))
    assert m.reconstruct(x, mask="latent").shape == (4, 36)
    with pytest.raises(ValueError, match="mask"):
        m.logits(x, z1, mask="both")


# --- bounds ----------------------------------------------------------------------------------------------------------
def test_elbo_by_hand_for_two_layers():
    """Top-down: z2 from the bottom-up term, z1 from its merge with p(z1|z2); log p(x|z1) from the PixelCNN on the
    image and the decoder output; every KL analytic given the parent."""
    m = tiny(z_dims=(6, 3))
    x = binary_images(5)
    eps = noise_for(m, (2,), 5)
    got = m.elbo(x, mc=2, noise=eps)
    h1 = m.up[0](m.to_images(x))
    h2 = m.up[1](h1)
    (mu1, s1), (mu2, s2) = m.q_hat[0].params(h1), m.q_hat[1].params(h2)
    z2 = mu2 + s2 * eps[1]
    kl2 = (torch.log(1 / s2) + (s2 ** 2 + mu2 ** 2) / 2 - 0.5).sum(-1)
    mu_p, s_p = m.p_z[0](z2.reshape(-1, 3))
    mu_p, s_p = mu_p.reshape(2, 5, 6), s_p.reshape(2, 5, 6)
    var_q = 1 / (1 / s1 ** 2 + 1 / s_p ** 2)
    mu_q = (mu1 / s1 ** 2 + mu_p / s_p ** 2) * var_q
    z1 = mu_q + var_q.sqrt() * eps[0]
    kl1 = torch.distributions.kl_divergence(Normal(mu_q, var_q.sqrt()), Normal(mu_p, s_p)).sum(-1)
    d = m.decoder(z1.reshape(-1, 6))
    logits = m.pixelcnn(m.to_images(x.expand(2, 5, 36).reshape(-1, 36)), d).reshape(2, 5, 36)
    recon = -F.binary_cross_entropy_with_logits(logits, x.expand(2, 5, 36), reduction="none").sum(-1)
    want = {"kl_layer1": kl1.mean(0), "kl_layer2": kl2, "recon": recon.mean(0)}
    want["elbo"] = want["recon"] - want["kl_layer1"] - want["kl_layer2"]
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, msg=key, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cls", MODELS)
def test_one_sample_iw_bound_is_the_elbo_and_more_samples_help(cls):
    m = tiny(cls)
    x = binary_images(6)
    eps = noise_for(m, (1,), 6)
    torch.testing.assert_close(m.iw_bound(x, 1, noise=eps), m.elbo(x, analytic_kl=False, noise=eps)["elbo"])
    with torch.no_grad():
        torch.manual_seed(3)
        log_w = m.log_weights(x, 400)  # 400 draws of L_1, or 20 independent draws of L_20
        l1, l20 = log_w.mean(), objectives.log_mean_exp(log_w.view(20, 20, 6), dim=1).mean()
    assert float(l1) < float(l20)


@pytest.mark.parametrize("cls", MODELS)
def test_bounds_are_negative_for_binary_images(cls):
    m = tiny(cls)
    x = binary_images(6)
    torch.manual_seed(1)
    assert bool((m.elbo(x)["elbo"] < 0).all()) and bool((m.elbo(x)["recon"] < 0).all())
    assert bool((m.iw_bound(x, 5) < 0).all())
    ll = m.log_likelihood(x, k=30, chunk=7)
    assert ll.shape == (6,) and bool((ll < 0).all()) and m.training


def test_eval_slices_change_nothing():
    """In eval mode the networks run in slices of ``eval_rows`` images; the numbers are those of one slice."""
    m = tiny().eval()
    x = binary_images(7)
    eps = noise_for(m, (5,), 7)
    with torch.no_grad():
        whole = m.log_weights(x, 5, noise=eps)
        m.eval_rows = 3
        torch.testing.assert_close(m.log_weights(x, 5, noise=eps), whole)


def test_per_layer_kl_and_active_units_in_evaluate():
    m = tiny(eval_iw=4)
    x = binary_images(10)
    metrics = m.evaluate(x, batch_size=4)
    layers = [f"test_kl_layer{i}" for i in range(1, 6)]
    assert {"test_elbo", "test_recon", "test_kl", "test_iw_bound", "test_active_units", *layers,
            *(f"test_active_units_layer{i}" for i in range(1, 6)),
            *(f"test_unit_kl_layer{i}" for i in range(1, 6))} == set(metrics)
    assert sum(metrics[k] for k in layers) == pytest.approx(metrics["test_kl"], abs=1e-4)
    assert metrics["test_elbo"] == pytest.approx(metrics["test_recon"] - metrics["test_kl"], abs=1e-4)
    assert "test_iw_bound" not in tiny().evaluate(x)  # eval_iw = 0 by default
    assert {k: tuple(v.shape) for k, v in m.kl_per_unit(x).items()} == {f"z{i + 1}": (d,) for i, d in
                                                                          enumerate(TINY["z_dims"])}


# --- training -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("iw", [1, 3])
def test_warmup_starts_at_0_3_and_multiplies_only_the_kl(iw):
    m = tiny(warmup_epochs=4, iw=iw)
    x = binary_images(8)
    for epoch, temp in ((0, 0.3), (2, 0.65), (4, 1.0), (9, 1.0)):
        torch.manual_seed(7)
        out = m.step({"x": x}, epoch)
        assert out.metrics["temperature"] == pytest.approx(temp)
        torch.manual_seed(7)
        s = m.forward_pass(x, (iw,))
        if iw == 1:
            torch.testing.assert_close(out.loss.detach(), -(out.terms["recon"] - temp * out.terms["kl"]))
        else:
            want = -objectives.iw_bound(s.log_px + temp * m.log_ratio(s), dim=0).mean()
            torch.testing.assert_close(out.loss, want)
            assert "iw_bound" in out.terms
    assert FAMEConfig(x_dim=784).warmup_start == 0.3
    assert objectives.kl_temperature(0, 200, start=0.3) == 0.3


def test_a_short_training_run_lowers_the_loss():
    m = tiny(warmup_epochs=0)
    x = binary_images(16)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    torch.manual_seed(0)
    before = m.evaluate(x)["test_elbo"]
    for _ in range(12):
        out = m.step({"x": x}, epoch=0)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert m.evaluate(x)["test_elbo"] > before + 2.0


def tiny_bundle():
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(3, 36, generator=g)
    x = grey[torch.randint(0, 3, (48,), generator=g)].clamp(0.05, 0.95)
    y = torch.zeros(48, dtype=torch.long)
    return DataBundle("tiny-images", x[:40], y[:40], x[40:], y[40:], n_classes=1, likelihood="bernoulli",
                      dynamic_binarization=True, image_shape=SHAPE)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    from dgmlab.checkpoints import load_checkpoint
    from dgmlab.runtime import seed_everything
    from dgmlab.training import TrainConfig, fit

    data = tiny_bundle()

    def build(seed):
        seed_everything(seed)
        return FAME(make_config(FAMEConfig, data, image_shape=SHAPE, **TINY, warmup_epochs=2))

    cfg = TrainConfig(epochs=2, batch_size=16, lr=3e-4, seed=5, progress=False)
    full = build(0)
    h_full = fit(full, data, cfg, checkpoint=tmp_path / "full.pt")
    part = build(0)
    fit(part, data, TrainConfig(**{**cfg.__dict__, "epochs": 1}), checkpoint=tmp_path / "part.pt")
    assert load_checkpoint(tmp_path / "part.pt")["epoch"] == 1
    resumed = build(123)  # another initialisation: the checkpoint must win
    h_resumed = fit(resumed, data, cfg, checkpoint=tmp_path / "part.pt")
    assert [h["epoch"] for h in h_resumed] == [1, 2]
    assert [h["train_temperature"] for h in h_resumed] == pytest.approx([0.3, 0.65])
    for (key, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key
    assert h_resumed[-1]["test_elbo"] == h_full[-1]["test_elbo"]
    assert h_resumed[-1]["train_loss"] == h_full[-1]["train_loss"]


def test_checkpoint_roundtrip(tmp_path):
    from dgmlab.checkpoints import load_model, save_checkpoint

    for cls in MODELS:
        m = tiny(cls, shape=(5, 7))
        m.step({"x": binary_images(8, (5, 7))}, 0)  # move the running averages
        save_checkpoint(tmp_path / f"{cls.name}.pt", m)
        loaded = load_model(tmp_path / f"{cls.name}.pt", expect=cls.name, device="cpu")
        assert loaded.config == m.config and loaded.config.image_shape == (5, 7)
        x = binary_images(4, (5, 7))
        torch.testing.assert_close(loaded.reconstruct(x), m.reconstruct(x))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cls", MODELS)
def test_runs_on_cuda(cls):
    m = tiny(cls, iw=2, eval_iw=3).to("cuda")
    x = binary_images(8).to("cuda")
    out = m.step({"x": x}, 0)
    out.loss.backward()
    assert out.loss.device.type == "cuda" and m.log_likelihood(x, k=20, chunk=7).device.type == "cuda"
    assert m.sample(3).device.type == "cuda" and m.reconstruct(x).device.type == "cuda"
    assert {"test_elbo", "test_iw_bound", "test_kl_layer5"} <= set(m.evaluate(x))


# --- errors ----------------------------------------------------------------------------------------------------------
def test_bad_image_sizes_raise_one_clear_error():
    with pytest.raises(ValueError, match="444 pixels do not form a square image.*drop --trim"):
        FAMEConfig(x_dim=444)
    with pytest.raises(ValueError, match="image_shape"):
        FAMEConfig(x_dim=784, image_shape=(28, 27))
    assert FAMEConfig(x_dim=756, image_shape=(28, 27), channels=4).map_shapes[0] == (14, 14)
    m = tiny(shape=(28, 28))
    for bad in (torch.zeros(2, 444), torch.zeros(2, 28 * 27), torch.zeros(2, 1, 28, 28)):
        with pytest.raises(ValueError, match=r"whole 28x28 images.*\(batch, 784\).*drop --trim"):
            m.elbo(bad)


def test_bad_inputs_raise_clear_errors():
    m = tiny()
    with pytest.raises(TypeError, match="floating-point"):
        m.step({"x": torch.zeros(4, 36, dtype=torch.long)}, 0)
    with pytest.raises(KeyError, match="'x'"):
        m.step({"x_u": binary_images(4)}, 0)
    with pytest.raises(ValueError, match="binar"):
        m.elbo(torch.full((4, 36), 0.3))
    with pytest.raises(ValueError, match="z1 must have shape"):
        m.generate(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="pass x"):
        m.logits(None, torch.zeros(2, 6))
    with pytest.raises(ValueError, match="positive integer"):
        m.sample(0)
    with pytest.raises(ValueError, match="one tensor per latent layer"):
        m.elbo(binary_images(4), noise=[torch.zeros(1, 4, 6)])
    for bad, match in (({"channels": 1}, "channels"), ({"warmup_start": 1.5}, "warmup_start"),
                       ({"z_dims": ()}, "z_dims"), ({"iw": 0}, "iw"), ({"first_kernel": 4}, "first_kernel"),
                       ({"likelihood": "gaussian"}, "Bernoulli"), ({"eval_iw": -1}, "eval_iw")):
        with pytest.raises(ValueError, match=match):
            FAMEConfig(x_dim=784, **bad)


# --- the command line -------------------------------------------------------------------------------------------------
def test_cli_trains_and_evaluates_on_mnist(tmp_path, mnist_available):
    from dgmlab.cli import main

    out = tmp_path / "run"
    assert main(["train", "fame", "--data", "mnist", "--epochs", "1", "--max-batches", "2", "--batch-size", "16",
                 "--n-test", "20", "--set", "channels=4", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    record = metrics["history"][0]
    assert metrics["config"]["image_shape"] == [28, 28] and metrics["config"]["z_dims"] == [64, 32, 16, 8, 4]
    assert metrics["train_config"]["lr"] == 3e-4 and record["train_temperature"] == 0.3
    for i in range(1, 6):
        assert {f"test_kl_layer{i}", f"test_active_units_layer{i}", f"train_kl_layer{i}"} <= set(record)
    assert record["test_elbo"] < 0
    assert main(["eval", str(out / "model.pt"), "--iw", "4", "--chunk", "2", "--device", "cpu"]) == 0
    assert json.loads((out / "metrics.json").read_text())["eval"]["test_log_likelihood_iw4"] < 0
    assert main(["train", "fame", "--data", "mnist", "--trim", "--epochs", "1", "--out", str(tmp_path / "t"),
                 "--no-progress", "--device", "cpu"]) == 2  # trimmed MNIST is refused with the fix
