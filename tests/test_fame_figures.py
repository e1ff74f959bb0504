"""Helpers of the section 5.2 page (dgmlab.fame_figures): thesis numbers, per-layer summaries of training records, the
receptive field of the PixelCNN head, the head's NLL under masks, and seeded generation. Tiny models only."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from dgmlab import fame_figures as ff
from dgmlab.models.fame import FAME, FAMENoConcat
from dgmlab.models.pixelcnn import PixelCNN

SHAPE = (6, 6)
TINY = {"z_dims": (6, 5, 4, 3, 2), "channels": 4, "residual_blocks": 1}


def tiny(cls=FAME):
    torch.manual_seed(0)
    return cls(cls.Config(x_dim=SHAPE[0] * SHAPE[1], image_shape=SHAPE, **TINY)).eval()


def images(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, SHAPE[0] * SHAPE[1], generator=g) < 0.4).float()


def record(kls=(3.0, 0.5, 0.0), units=(4, 2, 2)):
    out = {}
    for i, (kl, n) in enumerate(zip(kls, units), start=1):
        unit = [kl / 2, kl / 2] + [0.0] * (n - 2)
        out.update({f"test_kl_layer{i}": kl, f"test_unit_kl_layer{i}": unit,
                    f"test_active_units_layer{i}": float(sum(u > 0.01 for u in unit))})
    return out


def test_thesis_numbers():
    assert ff.THESIS_TABLE_5_2["FAME"] == 77.82 and ff.THESIS_TABLE_5_2["FAME No Concatenation"] == 78.73
    assert min(ff.THESIS_TABLE_5_2.values()) == ff.THESIS_TABLE_5_2["FAME"]
    assert len(ff.THESIS_TABLE_5_2) == 9
    assert ff.THESIS_FAME_TEXT["kl_fame"] < ff.THESIS_FAME_TEXT["kl_noconcat"]


def test_layer_summary_and_epochs():
    rows = ff.layer_summary(record())
    assert [r["layer"] for r in rows] == ["z1", "z2", "z3"] and [r["units"] for r in rows] == [4, 2, 2]
    assert [r["active"] for r in rows] == [2, 2, 0] and rows[0]["kl"] == 3.0
    assert ff.n_layers(record()) == 3
    with pytest.raises(KeyError, match="per-layer KL"):
        ff.n_layers({"test_elbo": -90.0})
    metrics = {"history": [{"epoch": 1, "a": 1}, {"epoch": 2, "a": 2}]}
    assert ff.at_epoch(metrics, 2)["a"] == 2
    with pytest.raises(KeyError, match="epoch 3"):
        ff.at_epoch(metrics, 3)


def test_plot_layers_runs():
    fig, axes = plt.subplots(1, 3)
    ff.plot_layers(axes, {"a": record(), "b": record(kls=(1.0, 0.0, 0.0))})
    assert len(axes[0].patches) == 6 and len(axes[2].lines) == 3  # 2 models x 3 layers; 2 curves + threshold
    plt.close(fig)


def test_receptive_field_is_causal_and_local():
    # A fixed initialisation: with a few random channels behind ReLUs, some draws leave the chosen logit with no
    # path to the image at all (every unit on it inactive), which says nothing about the masks.
    torch.manual_seed(0)
    head = PixelCNN(cond_channels=3, channels=8, residual_blocks=1)
    h, w = 12, 12
    pixel = (9, 5)
    img, cond = ff.receptive_field(head, (h, w), pixel, cond_channels=3)
    flat = np.arange(h * w).reshape(h, w)
    current = pixel[0] * w + pixel[1]
    assert (img[flat >= current] == 0).all()                # the pixel itself and everything after it: unseen
    assert img[flat < current].sum() > 0
    reach = head.receptive_rows
    assert (img[:pixel[0] - reach] == 0).all()              # rows beyond the receptive field: unseen
    assert cond[pixel] > 0                                  # the decoder output is read at the pixel itself
    noconcat = PixelCNN(cond_channels=3, channels=8, residual_blocks=1, autoregressive=False)
    img2, cond2 = ff.receptive_field(noconcat, (h, w), pixel, cond_channels=3)
    assert (img2 == 0).all() and cond2[pixel] > 0


def test_head_nll_matches_log_px():
    model = tiny()
    x = images()
    z1 = model.posterior(x)["z1"]
    with torch.no_grad():
        expected = -model.log_px(x, z1)
    assert torch.allclose(ff.head_nll(model, x), expected, atol=1e-5)
    assert torch.allclose(ff.head_nll(model, x, z1=z1), expected, atol=1e-5)
    for mask in ("latent", "image"):
        assert torch.isfinite(ff.head_nll(model, x, mask=mask)).all()


@pytest.mark.parametrize("cls", [FAME, FAMENoConcat])
def test_prior_z1_and_timed_generate_are_seeded(cls):
    model = tiny(cls)
    z_a = ff.prior_z1(model, 3, torch.Generator().manual_seed(1))
    z_b = ff.prior_z1(model, 3, torch.Generator().manual_seed(1))
    assert z_a.shape == (3, TINY["z_dims"][0]) and torch.equal(z_a, z_b)
    x_a, seconds = ff.timed_generate(model, z_a, torch.Generator().manual_seed(2))
    x_b, _ = ff.timed_generate(model, z_a, torch.Generator().manual_seed(2))
    assert x_a.shape == (3, 36) and torch.equal(x_a, x_b) and seconds >= 0
    assert bool(((x_a == 0) | (x_a == 1)).all()) and not model.training


def test_claims_table():
    rows = ff.claims_table([("a", True), ("b", False), ("c", None)])
    assert [r["holds in our run"] for r in rows] == ["yes", "no", "n/a"]
