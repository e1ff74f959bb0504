"""Latent-space explorers (dgmlab.widgets): static HTML content, decoder calls, live callbacks, input errors."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dgmlab.widgets import ExplorerView, StaticView, class_conditional_explorer, latent_explorer, latent_grid, save_page
from dgmlab.widgets.live import LiveClassExplorer, LiveLatentExplorer

YY, XX = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")


class Recorder:
    """An analytic decoder (a blob that moves with z[0], z[1]) that records the inputs it was called with."""

    def __init__(self):
        self.calls: list[torch.Tensor] = []

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls.append(z.clone())
        cx, cy = 14 + 3 * z[:, 0], 14 - 3 * z[:, 1]
        d2 = (XX - cx[:, None, None]) ** 2 + (YY - cy[:, None, None]) ** 2
        return torch.exp(-d2 / 18).reshape(len(z), -1)  # flat (N, 784), as most decoders return


class ClassRecorder:
    def __init__(self):
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append((z.clone(), y.clone()))
        img = Recorder()(z).reshape(-1, 28, 28).clone()
        img[torch.arange(len(y)), 2:26, 2 + 2 * y] = 1.0  # a bar whose column encodes the class
        return img


def srcs(markup: str, cls: str) -> list[str]:
    return re.findall(rf'<img class="{cls}" src="(data:image/png;base64,[^"]+)"', markup)


def png_pixels(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


# ---------------------------------------------------------------------------------------------- static latent view

def test_static_view_holds_one_png_per_cell_a_script_and_no_external_urls():
    dec = Recorder()
    view = latent_explorer(dec, 2, grid=(7, 5), mode="static")
    assert isinstance(view, StaticView) and view.kind == "latent" and view.n_images == 35
    html = view._repr_html_()
    assert len(srcs(html, "dgmx-cell")) == 35
    assert len(srcs(html, "dgmx-big")) == 1
    assert html.count("<script>") == 1 and "addEventListener" in html
    assert not re.search(r"https?://", html), "the static view must not reference any URL"
    assert "require(" not in html and "define(" not in html
    assert f'id="{view.element_id}"' in html and f'var ID = "{view.element_id}"' in html
    assert len(html) < 60_000


def test_decode_gets_one_batch_of_grid_codes_in_map_order():
    dec = Recorder()
    latent_explorer(dec, 2, grid=(4, 3), extent=(-2, 2), mode="static")
    assert len(dec.calls) == 1
    z = dec.calls[0]
    assert z.shape == (12, 2) and z.dtype == torch.float32
    # Row-major from the top row: first coordinate grows along a row, second falls from row to row.
    assert torch.allclose(z[:4, 0], torch.linspace(-2, 2, 4)) and torch.allclose(z[:4, 1], torch.full((4,), 2.0))
    assert torch.allclose(z[::4, 1], torch.tensor([2.0, 0.0, -2.0]))


def test_each_cell_image_is_the_decoding_of_its_grid_code():
    dec = Recorder()
    html = latent_explorer(dec, 2, grid=(5, 5), mode="static").data
    z = dec.calls[0]
    expected = np.round(dec(z).reshape(-1, 28, 28).numpy() * 255).astype(np.uint8)
    cells = srcs(html, "dgmx-cell")
    for k in (0, 7, 24):
        np.testing.assert_array_equal(png_pixels(cells[k]), expected[k])


def test_higher_latent_dims_keep_base_z_outside_the_explored_pair():
    seen = []

    def decode(z):
        seen.append(z.clone())
        return torch.sigmoid(z @ torch.ones(5, 784) * 0.1)

    base = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    latent_explorer(decode, 5, grid=3, dims=(3, 1), base_z=base, mode="static")
    z = seen[0]
    assert z.shape == (9, 5)
    assert torch.allclose(z[:, [0, 2, 4]], base[[0, 2, 4]].expand(9, 3))
    assert torch.allclose(z[:3, 3], torch.tensor([-3.0, 0.0, 3.0]))
    assert torch.allclose(z[::3, 1], torch.tensor([3.0, 0.0, -3.0]))


def test_latent_grid_per_axis_extent():
    z, xs, ys = latent_grid(2, (3, 2), ((0, 1), (-5, 5)), (0, 1), torch.zeros(2))
    assert xs.tolist() == [0.0, 0.5, 1.0] and ys.tolist() == [5.0, -5.0]
    assert z.shape == (6, 2)


def test_points_draw_a_scatter_layer_with_a_legend():
    g = torch.Generator().manual_seed(0)
    pts, labels = torch.randn(300, 2, generator=g), torch.randint(0, 3, (300,), generator=g)
    view = latent_explorer(Recorder(), 2, grid=6, mode="static", points=pts, labels=labels,
                           label_names=["zero", "one", "two"])
    html = view.data
    assert html.count('class="dgmx-scatter"') == 1 and "dgmx-points" in html
    for name in ("zero", "one", "two"):
        assert f"</span>{name}</span>" in html
    assert "300 encoded points drawn" in html
    assert len(html) < 150_000


def test_several_views_get_different_ids_and_a_page_can_hold_them(tmp_path):
    a = latent_explorer(Recorder(), 2, grid=3, mode="static")
    b = latent_explorer(Recorder(), 2, grid=3, mode="static")
    assert a.element_id != b.element_id
    path = save_page([a, b], tmp_path / "page.html")
    text = (tmp_path / "page.html").read_text()
    assert path.endswith("page.html") and text.startswith("<!DOCTYPE html>")
    assert a.element_id in text and b.element_id in text
    assert not list(tmp_path.glob("*.tmp")), "the page is written atomically"


def test_accepts_image_shaped_output_and_distributions():
    def as_bernoulli(z):
        probs = Recorder()(z).reshape(-1, 1, 28, 28)  # (N, 1, H, W) as a conv decoder returns
        return torch.distributions.Independent(torch.distributions.Bernoulli(probs=probs), 3)

    view = latent_explorer(as_bernoulli, 2, grid=3, mode="static")
    assert view.n_images == 9


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_inline_javascript_parses(tmp_path):
    html = latent_explorer(Recorder(), 2, grid=3, mode="static").data
    html += class_conditional_explorer(ClassRecorder(), torch.zeros(2, 2), 3, mode="static").data
    for i, js in enumerate(re.findall(r"<script>(.*?)</script>", html, re.S)):
        path = tmp_path / f"view{i}.js"
        path.write_text(js)
        res = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------------------------------------------- live view

def test_live_slider_change_decodes_again_and_redraws():
    dec = Recorder()
    live = latent_explorer(dec, 2, grid=5, mode="live")
    assert isinstance(live, LiveLatentExplorer) and len(live.sliders) == 2 and not live.other_sliders
    n_calls, first_image, first_cross = len(dec.calls), live.image.value, live.crosshair.value
    first_map = live.map_image.value
    assert live.n_decodes == 1 and dec.calls[-1].shape == (1, 2)
    live.sliders[0].value = 1.5  # what a browser does when the slider moves
    assert len(dec.calls) == n_calls + 1 and live.n_decodes == 2
    assert torch.allclose(dec.calls[-1], torch.tensor([[1.5, 0.0]]))
    assert live.image.value != first_image and live.crosshair.value != first_cross
    assert live.map_image.value == first_map, "the map itself is sent once; only the cross-hair moves"
    assert "z[0] = 1.50" in live.readout.value
    live.sliders[1].value = -2.0
    assert torch.allclose(dec.calls[-1], torch.tensor([[1.5, -2.0]]))


def test_live_other_dims_have_their_own_sliders():
    seen = []

    def decode(z):
        seen.append(z.clone())
        return torch.sigmoid(z.sum(1, keepdim=True).expand(-1, 784))

    live = latent_explorer(decode, 4, grid=3, dims=(2, 0), base_z=[0.0, 0.7, 0.0, -0.2], mode="live")
    assert [s.description for s in live.sliders] == ["z[2]", "z[0]"]
    assert [s.description for s in live.other_sliders] == ["z[1]", "z[3]"]
    live.other_sliders[1].value = 1.0
    assert torch.allclose(seen[-1], torch.tensor([[0.0, 0.7, 0.0, 1.0]]))
    assert torch.allclose(live.current_z(), seen[-1])


def test_live_puts_a_batchnorm_decoder_in_eval_mode_and_restores_it():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 784), nn.Sigmoid())
    net.train()
    live = latent_explorer(net, 2, grid=3, mode="live")  # a batch of one would fail in training mode
    live.sliders[0].value = 0.5
    assert net.training, "the model's mode is restored after decoding"


def test_auto_mode_gives_both_and_the_environment_can_choose(monkeypatch):
    view = latent_explorer(Recorder(), 2, grid=3)
    assert isinstance(view, ExplorerView)
    assert isinstance(view.static, StaticView) and isinstance(view.live, LiveLatentExplorer)
    assert view._repr_html_() == view.static.data
    monkeypatch.setenv("DGMLAB_EXPLORER_MODE", "static")
    assert isinstance(latent_explorer(Recorder(), 2, grid=3), StaticView)
    monkeypatch.setenv("DGMLAB_EXPLORER_MODE", "sideways")
    with pytest.raises(ValueError, match="DGMLAB_EXPLORER_MODE"):
        latent_explorer(Recorder(), 2, grid=3)


# --------------------------------------------------------------------------------------------- class-conditional

def test_class_view_generates_every_style_for_every_class_in_one_call():
    gen = ClassRecorder()
    styles = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    view = class_conditional_explorer(gen, styles, 3, class_names=["a", "b", "c"], mode="static",
                                      style_images=Recorder()(styles))
    assert len(gen.calls) == 1
    z, y = gen.calls[0]
    assert z.shape == (12, 2) and y.dtype == torch.long and y.tolist() == [0, 1, 2] * 4
    assert torch.equal(z[3:6], styles[1].expand(3, 2))
    html = view.data
    assert html.count('class="dgmx-row" data-row=') == 4
    thumbs = srcs(html, "dgmx-thumb")
    assert len(thumbs) == 12 and len(srcs(html, "dgmx-src dgmx-gap")) == 4 and len(srcs(html, "dgmx-bigc")) == 3
    assert view.n_images == 16
    # The thumbnail of (style 1, class 2) is the decoding of that pair: its bar sits in column 2 + 2*2.
    pixels = png_pixels(thumbs[1 * 3 + 2])
    assert pixels[10, 6] == 255 and html.count("<script>") == 1 and not re.search(r"https?://", html)


def test_class_live_picks_style_and_moves_one_dimension():
    gen = ClassRecorder()
    styles = torch.tensor([[0.0, 0.0], [1.0, -1.0], [-2.0, 0.5]])
    live = class_conditional_explorer(gen, styles, 5, mode="live")
    assert isinstance(live, LiveClassExplorer) and live.n_decodes == 1
    z, y = gen.calls[-1]
    assert z.shape == (5, 2) and y.tolist() == [0, 1, 2, 3, 4]
    before = [img.value for img in live.images]
    live.style_picker.value = 2
    assert torch.equal(gen.calls[-1][0], styles[2].expand(5, 2)), "a new style starts exactly on the stored code"
    assert [img.value for img in live.images] != before
    live.slider.value = 1.0  # shift z[0] of style 2
    assert torch.allclose(gen.calls[-1][0], torch.tensor([[-1.0, 0.5]]).expand(5, 2))
    assert "z[0] = -1.00" in live.readout.value
    n = len(gen.calls)
    live.dim_picker.value = 1  # a new dimension starts unshifted, with one call
    assert len(gen.calls) == n + 1 and live.slider.value == 0.0
    assert torch.equal(gen.calls[-1][0], styles[2].expand(5, 2))
    live.slider.value = 2.0
    assert torch.allclose(gen.calls[-1][0], torch.tensor([[-2.0, 2.5]]).expand(5, 2))


# -------------------------------------------------------------------------------------------------- clear errors

def test_decoder_that_fails_on_the_latent_size_names_z_dim():
    decoder = nn.Sequential(nn.Linear(8, 784), nn.Sigmoid())  # trained with z_dim = 8
    with pytest.raises(ValueError, match=r"z_dim=2 is the model's latent size"):
        latent_explorer(decoder, 2, grid=3, mode="static")


def test_wrong_number_of_images_is_reported():
    with pytest.raises(ValueError, match=r"given 9 latent codes but returned shape \(1, 784\)"):
        latent_explorer(lambda z: torch.rand(1, 784), 2, grid=3, mode="static")


def test_wrong_image_shape_suggests_the_right_one():
    with pytest.raises(ValueError, match=r"784 values per item, but image_shape=\(20, 20\) needs 400; "
                                         r"pass image_shape=\(28, 28\)"):
        latent_explorer(Recorder(), 2, grid=3, image_shape=(20, 20), mode="static")
    with pytest.raises(ValueError, match="trimmed MNIST"):
        latent_explorer(lambda z: torch.rand(len(z), 444), 2, grid=3, mode="static")


def test_logits_instead_of_probabilities_are_refused():
    with pytest.raises(ValueError, match=r"intensities in \[0, 1\].*sigmoid"):
        latent_explorer(lambda z: torch.randn(len(z), 784) * 5, 2, grid=3, mode="static")
    with pytest.raises(ValueError, match="NaN"):
        latent_explorer(lambda z: torch.full((len(z), 784), float("nan")), 2, grid=3, mode="static")


@pytest.mark.parametrize("kwargs, message", [
    ({"z_dim": 1}, "z_dim must be an integer >= 2"),
    ({"dims": (0, 0)}, "dims must be two different"),
    ({"dims": (0, 2)}, "dims must be two different"),
    ({"extent": (3, -3)}, "lo < hi"),
    ({"grid": (1, 5)}, "grid must have between 2 and 60"),
    ({"base_z": [0.0, 0.0, 0.0]}, "base_z must hold z_dim=2 values"),
    ({"image_shape": 28}, "image_shape must be a pair"),
    ({"mode": "browser"}, "mode must be one of"),
    ({"points": torch.zeros(10, 3)}, r"points must have shape \(M, 2\)"),
    ({"points": torch.zeros(10, 2), "labels": torch.zeros(9)}, "one label per point"),
    ({"labels": torch.zeros(9)}, "labels were given without points"),
])
def test_bad_arguments_give_clear_errors(kwargs, message):
    args = {"z_dim": 2, "grid": 3, "mode": "static", **kwargs}
    with pytest.raises(ValueError, match=message):
        latent_explorer(Recorder(), **args)


def test_class_view_bad_arguments():
    gen = ClassRecorder()
    with pytest.raises(ValueError, match="class_names must hold n_classes=3"):
        class_conditional_explorer(gen, torch.zeros(2, 2), 3, class_names=["a", "b"], mode="static")
    with pytest.raises(ValueError, match=r"styles must have shape \(S, z_dim\)"):
        class_conditional_explorer(gen, torch.zeros(2), 3, mode="static")
    with pytest.raises(ValueError, match="style_images for 2 styles"):
        class_conditional_explorer(gen, torch.zeros(2, 2), 3, style_images=torch.zeros(3, 784), mode="static")
    with pytest.raises(ValueError, match=r"generate failed on inputs of shape \(6, 2\), \(6,\)"):
        class_conditional_explorer(lambda z, y: z @ torch.ones(5, 784), torch.zeros(2, 2), 3, mode="static")


def test_non_square_images_keep_their_aspect_ratio():
    view = latent_explorer(lambda z: torch.sigmoid(z.sum(1)).reshape(-1, 1, 1).expand(-1, 20, 30), 2, grid=3,
                           image_shape=(20, 30), mode="static")
    assert view.data.count('class="dgmx-cell" src=') == 9
    assert 'width="30" height="20"' in view.data and "height:60px" in view.data
    assert png_pixels(srcs(view.data, "dgmx-cell")[0]).shape == (20, 30)
    small = latent_explorer(lambda z: torch.rand(len(z), 20, 30), 2, grid=3, image_shape=(20, 30), cell_px=15,
                            mode="static")
    assert 'class="dgmx-cell" src=' in small.data and 'width="15" height="10"' in small.data


def test_live_map_draws_points_and_moves_its_cross_hair():
    pts = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    live = latent_explorer(Recorder(), 2, grid=5, mode="live", points=pts, labels=torch.zeros(50, dtype=torch.long))
    with_points = Image.open(io.BytesIO(live.map_image.value))
    assert with_points.size == (5 * 28, 5 * 28) and with_points.mode == "P"  # colour points: a palette PNG
    grey = Image.open(io.BytesIO(latent_explorer(Recorder(), 2, grid=5, mode="live").map_image.value))
    assert grey.mode == "L"
    # The map spans [-3.75, 3.75] (half a cell beyond the outer centres): z = (0, 0) sits in its middle.
    assert 'x1="70.0"' in live.crosshair.value and 'y1="70.0"' in live.crosshair.value
    live.sliders[1].value = 3.0  # the top row's centre, half a cell (14 px) below the map's upper edge
    assert 'y1="14.0"' in live.crosshair.value


def test_codes_follow_the_decoder_dtype():
    net = nn.Sequential(nn.Linear(2, 784), nn.Sigmoid()).double()
    seen = []
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    latent_explorer(net, 2, grid=3, mode="static")
    assert seen == [torch.float64]
