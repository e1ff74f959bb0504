"""The layer explorer of chapter 5.1 (dgmlab.widgets.layers): per-layer grids decoded downward through the generative
model, layers above left at their posterior means, the reconstruction at the centre, self-contained HTML with one
panel per layer, the live view, input errors and the shipped 5-layer LVAE."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from dgmlab.models.hvae import HVAE
from dgmlab.models.lvae import LVAE
from dgmlab.models.vae import VAE, VAEConfig
from dgmlab.widgets import ExplorerView, StaticView, layer_explorer, save_page
from dgmlab.widgets.layers import LayerData, LiveLayerExplorer

X_DIM = 16  # 4x4 "images": tiny models, quick tests
MODELS = [HVAE, LVAE]


def tiny(cls, z_dims=(6, 5, 4), **overrides):
    torch.manual_seed(0)
    hidden = tuple(8 for _ in z_dims)
    return cls(cls.Config(**{"x_dim": X_DIM, "z_dims": z_dims, "hidden": hidden, "eval_iw": 0, **overrides}))


def digit(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, X_DIM, generator=g) < 0.5).float()


def panels(markup: str) -> list[str]:
    return re.findall(r'<div class="dgmx-lpanel".*?</div></div></div>', markup, re.S)


# --------------------------------------------------------------------------------------------- the computation
@pytest.mark.parametrize("cls", MODELS)
def test_every_layer_gets_a_grid_of_images_of_the_right_shape(cls):
    model, x = tiny(cls), digit()
    ld = LayerData(model, x, grid=5, extent=2.0)
    assert ld.names == ["z1", "z2", "z3"] and ld.shown == [0, 1, 2] and ld.initial == 2
    for i, d in enumerate((6, 5, 4)):
        z, images, xs, ys = ld.layer_grid(i)
        assert images.shape == (25, 4, 4) and images.dtype == np.float32
        assert 0 <= images.min() and images.max() <= 1
        assert [tuple(zj.shape) for zj in z] == [(25, 6), (25, 5), (25, 4)]
        assert np.allclose(xs, [-2, -1, 0, 1, 2]) and np.allclose(ys, [2, 1, 0, -1, -2])
        assert len(ld.units[i]) == 2 and len(set(ld.units[i])) == 2
    view = layer_explorer(model, x, grid=5, mode="static")
    assert isinstance(view, StaticView) and view.kind == "layers"
    assert view.n_images == 3 * 25 + 1 + 3  # grids, the input, the reconstruction from each layer
    found = panels(view.data)
    assert len(found) == 3 and all(p.count('class="dgmx-cell"') == 25 for p in found)


@pytest.mark.parametrize("cls", MODELS)
def test_posterior_means_and_prior_scale(cls):
    model, x = tiny(cls), digit()
    ld = LayerData(model, x, grid=3, extent=1.5)
    post = model.posterior(x)
    assert all(torch.equal(ld.means[i], post[f"z{i + 1}"]) for i in range(3))
    assert torch.equal(ld.prior_sd[2], torch.ones(4)), "the top layer's prior is N(0, I)"
    with torch.no_grad():
        model.eval()
        for i in range(2):  # sd of p(z_i | z_{i+1} = posterior mean)
            assert torch.allclose(ld.prior_sd[i], model.p_z[i](post[f"z{i + 2}"]).base_dist.scale[0])
    for i in range(3):  # corner cell (top left): -extent along the x unit, +extent along the y unit
        z, _, _, _ = ld.layer_grid(i)
        a, b = ld.units[i]
        expect = ld.means[i][0].clone()
        expect[a] -= 1.5 * ld.prior_sd[i][a]
        expect[b] += 1.5 * ld.prior_sd[i][b]
        assert torch.allclose(z[i][0], expect)


@pytest.mark.parametrize("cls", MODELS)
def test_changing_a_layer_leaves_the_layers_above_and_its_other_units_unchanged(cls):
    model, x = tiny(cls), digit(1)
    ld = LayerData(model, x, grid=3)
    for i in range(3):
        z, images, _, _ = ld.layer_grid(i)
        for j in range(i + 1, 3):
            assert torch.equal(z[j], ld.means[j].expand(9, -1)), f"z{j + 1} must stay at its posterior mean"
        others = [u for u in range(ld.sizes[i]) if u not in ld.units[i]]
        assert torch.equal(z[i][:, others], ld.means[i][:, others].expand(9, -1))
        assert len(torch.unique(z[i][:, list(ld.units[i])], dim=0)) == 9
        with torch.no_grad():  # the layers below follow the generative means
            model.eval()
            for j in reversed(range(i)):
                assert torch.allclose(z[j], model.p_z[j](z[j + 1]).mean)
        assert np.ptp(images, axis=0).max() > 1e-4, f"moving {ld.names[i]} must change the decoded image"


def test_a_unit_the_model_ignores_leaves_the_image_unchanged():
    model, x = tiny(LVAE), digit()
    with torch.no_grad():
        model.p_x.body[0].weight[:, 3] = 0.0  # p(x|z_1) no longer reads unit 3 of z_1
    ld = LayerData(model, x, grid=3, units={"z1": (3, 0)})
    _, images, _, _ = ld.layer_grid(0)
    rows = images.reshape(3, 3, 4, 4)  # rows: unit 0 (y), columns: unit 3 (x)
    assert np.array_equal(rows, np.repeat(rows[:, :1], 3, axis=1)), "moving the ignored unit changes nothing"
    assert np.ptp(rows, axis=0).max() > 1e-4, "the other unit still matters"


@pytest.mark.parametrize("cls", MODELS)
def test_the_centre_is_the_decoding_of_the_posterior_mean(cls):
    model, x = tiny(cls, batch_norm=True), digit(2)
    model.train()
    ld = LayerData(model, x, grid=5)
    assert model.training, "the model's mode is restored"
    model.eval()
    post = model.posterior(x)
    # z1 at its posterior mean decodes to model.reconstruct(x), bit for bit (same ops, batch of one)
    assert np.array_equal(ld.centre[0], model.reconstruct(x).numpy().reshape(4, 4))
    with torch.no_grad():
        for i in range(3):  # layer i at its posterior mean, decoded downward through the generative model
            z = post[f"z{i + 1}"]
            for j in reversed(range(i)):
                z = model.p_z[j](z).mean
            assert np.array_equal(ld.centre[i], model.p_x(z).mean.numpy().reshape(4, 4))
            codes, images, _, _ = ld.layer_grid(i)
            assert torch.equal(codes[i][12], post[f"z{i + 1}"][0]), "the centre cell is the posterior mean exactly"
            assert np.allclose(images[12], ld.centre[i], atol=1e-6)  # same code, decoded in a batch of 25


def test_default_units_are_the_most_active_by_kl_and_can_be_chosen():
    model, x = tiny(LVAE), digit()
    ld = LayerData(model, x)
    for i in range(3):
        order = np.argsort(-ld.digit_kl[i], kind="stable")
        assert ld.units[i] == tuple(order[:2])
        assert np.all(ld.digit_kl[i] >= -1e-6)
    ranked = LayerData(model, x, kl={"z2": [0, 0, 5, 0, 9]}, units={"z3": (3, 1)})
    assert ranked.units[1] == (4, 2) and ranked.units[2] == (3, 1) and ranked.units[0] == ld.units[0]


def test_depth_one_and_one_unit_layers_vary_one_direction():
    model, x = tiny(HVAE, z_dims=(1,)), digit()
    view = layer_explorer(model, x, grid=7, mode="static")
    (panel,) = panels(view.data)
    assert 'data-gx="7" data-gy="1"' in panel and panel.count('class="dgmx-cell"') == 7
    ld = LayerData(model, x, grid=7)
    z, images, xs, ys = ld.layer_grid(0)
    assert ld.units == [(0,)] and images.shape == (7, 4, 4) and z[0].shape == (7, 1) and list(ys) == [0.0]
    assert torch.allclose(z[0][:, 0], ld.means[0][0, 0] + torch.as_tensor(xs, dtype=torch.float32))  # prior sd 1
    deep = tiny(LVAE, z_dims=(3, 1))  # a one-unit top layer above a 3-unit one
    view = layer_explorer(deep, x, grid=3, mode="static")
    assert [p.count('class="dgmx-cell"') for p in panels(view.data)] == [9, 3]
    four = tiny(LVAE, z_dims=(4,))  # a lone 4-unit layer (as the thesis' top layer)
    assert len(panels(layer_explorer(four, x, grid=3, mode="static").data)) == 1


def test_layer_names_choose_the_panels():
    model, x = tiny(HVAE), digit()
    view = layer_explorer(model, x, layer_names=["z3", "z1"], layer="z1", grid=3, mode="static")
    found = panels(view.data)
    assert [re.search(r'data-name="(z\d)"', p).group(1) for p in found] == ["z1", "z3"]
    assert 'data-layer="0"' in view.data and "display:none" in found[1] and "display:none" not in found[0]


# --------------------------------------------------------------------------------------------- static view
def test_static_view_is_self_contained_with_unique_ids(tmp_path):
    model, x = tiny(LVAE), digit()
    views = [layer_explorer(model, x, grid=3, mode="static") for _ in range(2)]
    markup = views[0].data
    assert "http://" not in markup and "https://" not in markup and "require(" not in markup
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup)
    assert len(re.findall(r"<script>", markup)) == 1 and markup.count("data:image/png;base64,") == 3 * 9 + 1 + 3 + 1
    assert markup.count('data-show="') == 2 * 3  # a button and a strip figure per layer
    page = tmp_path / "page.html"
    save_page(views, page)
    ids = re.findall(r'\sid="([^"]+)"', page.read_text())
    assert len(ids) == 2 and len(set(ids)) == 2


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_inline_javascript_parses(tmp_path):
    markup = layer_explorer(tiny(HVAE), digit(), grid=3, mode="static").data
    (js,) = re.findall(r"<script>(.*?)</script>", markup, re.S)
    path = tmp_path / "view.js"
    path.write_text(js)
    res = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------------------------- live view
def test_live_view_decodes_on_change_and_keeps_the_layers_above():
    model, x = tiny(LVAE), digit()
    live = layer_explorer(model, x, grid=3, mode="live")
    assert isinstance(live, LiveLayerExplorer) and live.layer.value == 2 and live.n_maps == 1
    ld = live.ld
    n = live.n_decodes
    live.shift_a.value = 1.5  # what a browser does when the slider moves
    assert live.n_decodes == n + 1 and "+1.50 sd" in live.readout.value
    a = ld.units[2][0]
    assert torch.allclose(live.current_codes()[2][0, a], ld.means[2][0, a] + 1.5)  # top prior sd is 1
    live.layer.value = 0
    assert live.units == ld.units[0] and live.shift_a.value == 0.0 and live.n_maps == 2
    live.shift_b.value = -1.0
    z = live.current_codes()
    assert torch.equal(z[1], ld.means[1]) and torch.equal(z[2], ld.means[2])
    b = ld.units[0][1]
    assert torch.allclose(z[0][0, b], ld.means[0][0, b] - ld.prior_sd[0][b])
    a = live.unit_a.value
    live.unit_a.value = b  # the same unit on both axes swaps them instead
    assert live.units == (b, a) and live.n_maps == 3
    live.set_shifts(0.0, 0.0)
    _, image = ld.decode(0, live.units, live.shifts())
    assert np.array_equal(image[0], ld.centre[0])


def test_live_one_unit_layer_hides_the_second_direction():
    live = layer_explorer(tiny(HVAE, z_dims=(3, 1)), digit(), grid=3, mode="live")
    assert live.units == (0,) and live.shift_b.layout.display == "none"
    live.shift_a.value = -2.0
    assert live.current_codes()[1].shape == (1, 1)
    live.layer.value = 0
    assert len(live.units) == 2 and live.shift_b.layout.display is None


def test_auto_mode_gives_both_and_the_environment_can_choose(monkeypatch):
    model, x = tiny(HVAE), digit()
    view = layer_explorer(model, x, grid=3)
    assert isinstance(view, ExplorerView) and isinstance(view.static, StaticView)
    assert isinstance(view.live, LiveLayerExplorer) and view._repr_html_() == view.static.data
    monkeypatch.setenv("DGMLAB_EXPLORER_MODE", "static")
    assert isinstance(layer_explorer(model, x, grid=3), StaticView)


# --------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("change, error, message", [
    ({"x": torch.zeros(2, X_DIM)}, ValueError, r"one digit of shape \(1, 16\).*test_inputs\(\)\[:1\]"),
    ({"x": torch.zeros(1, 28, 28)}, ValueError, r"shape \(1, 16\)"),
    ({"x": torch.full((1, X_DIM), 0.5)}, ValueError, "must be binary.*binarize"),
    ({"x": "a digit"}, TypeError, "x must be a tensor or array"),
    ({"grid": 1}, ValueError, "grid must be an integer from 2 to 30"),
    ({"grid": 3.0}, ValueError, "grid must be an integer"),
    ({"extent": 0}, ValueError, "extent must be a positive number of prior standard deviations"),
    ({"extent": -1.0}, ValueError, "extent must be a positive number"),
    ({"mode": "sideways"}, ValueError, "mode must be one of"),
    ({"layer_names": ["z9"]}, ValueError, r"layer_names must name layers of this model \(z1, z2, z3\)"),
    ({"layer": "z2", "layer_names": ["z1"]}, ValueError, "layer must be one of the shown layers"),
    ({"units": {"z3": (1, 1)}}, ValueError, r"units\['z3'\] must be 2 different unit indices in \[0, 4\)"),
    ({"units": {"z3": (0, 9)}}, ValueError, "units"),
    ({"kl": {"z2": [1.0]}}, ValueError, r"kl\['z2'\] must hold 5 finite values"),
])
def test_bad_input_gives_one_clear_error(change, error, message):
    kwargs = {"model": tiny(HVAE), "x": digit(), **change}
    with pytest.raises(error, match=message):
        layer_explorer(kwargs.pop("model"), kwargs.pop("x"), **kwargs)


def test_a_model_that_is_not_a_hierarchical_vae_is_refused():
    vae = VAE(VAEConfig(x_dim=X_DIM, z_dim=2, hidden=(8,)))
    with pytest.raises(TypeError, match=r"hierarchical VAE \(dgmlab.models.hvae.HVAE or.*latent_explorer"):
        layer_explorer(vae, digit())
    with pytest.raises(TypeError, match="got Linear"):
        layer_explorer(torch.nn.Linear(2, 2), digit())


# --------------------------------------------------------------------------------------------- the shipped model
def test_shipped_five_layer_lvae_on_a_real_test_digit(mnist_available):
    from dgmlab.data import load_data
    from dgmlab.pretrained import load_pretrained

    model = load_pretrained("lvae-bn-wu-d5-mnist")
    x = load_data("mnist", n_train=100, n_test=10).test_inputs()[:1]
    view = layer_explorer(model, x, mode="static")
    found = panels(view.data)
    assert len(found) == 5 and all(p.count('class="dgmx-cell"') == 49 for p in found)
    assert view.n_images == 5 * 49 + 1 + 5
    assert len(view.data.encode()) < 1_500_000
    assert "http://" not in view.data and "https://" not in view.data
