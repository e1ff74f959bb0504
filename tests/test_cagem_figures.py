"""The CaGeM page's figures (dgmlab.cagem_figures): decoders of the z2 plane, the explorer with its class picker
(kernel-free and live) and the three panels of thesis Fig. 4.9."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

matplotlib.use("Agg")

from dgmlab.cagem_figures import INFERRED, most_probable_class, plot_fig49, z2_decoder, z2_explorer  # noqa: E402
from dgmlab.models.cagem import CaGeM, CaGeMConfig  # noqa: E402
from dgmlab.widgets import ExplorerView, StaticView  # noqa: E402

GRID = (4, 3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = CaGeM(CaGeMConfig(x_dim=784, n_classes=10, hidden=(16,), hidden_z=(8,), z_dim=4, z2_dim=2, fixed_alpha=1.0))
    with torch.no_grad():  # spread the weights so that classes and positions decode differently
        for layer in m.modules():
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.normal_(layer.weight, std=2.0 / layer.in_features ** 0.5)
    return m.eval()


def _pixels(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def _grid_codes():
    lo, hi = -2.0, 2.0
    xs, ys = torch.linspace(lo, hi, GRID[0]), torch.linspace(hi, lo, GRID[1])  # rows from the top (largest z2[1])
    return torch.stack([xs.repeat(GRID[1]), ys.repeat_interleave(GRID[0])], -1)


def test_decoders_fix_or_read_off_the_class(model):
    z = torch.randn(7, 2)
    with torch.no_grad():
        assert torch.equal(z2_decoder(model, 3)(z), model.generate(z, 3))
        y = model.p_y(z).probs.argmax(-1)
        assert torch.equal(most_probable_class(model, z), y)
        assert torch.equal(z2_decoder(model)(z), model.generate(z, y))
    with pytest.raises(ValueError, match="a class in 0..9"):
        z2_decoder(model, 10)


def test_static_view_holds_the_grid_decoded_for_every_class(model):
    points, labels = torch.randn(30, 2), torch.arange(30) % 10
    view = z2_explorer(model, points=points, labels=labels, grid=GRID, extent=(-2.0, 2.0), mode="static")
    assert isinstance(view, StaticView)
    html = view.data
    assert "http://" not in html and "https://" not in html
    n = GRID[0] * GRID[1]
    assert view.n_images == n * 11
    sets = json.loads(re.search(r'<script type="application/json" class="dgmx-sets">(.*?)</script>', html, re.S)[1])
    assert sorted(sets, key=int) == [str(c) for c in range(10)] and all(len(v) == n for v in sets.values())
    z = _grid_codes()
    for c in (0, 7):
        want = np.round(model.generate(z, c).reshape(-1, 28, 28).numpy() * 255).astype(np.uint8)
        got = np.stack([_pixels(u) for u in sets[str(c)]])
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, c
    cells = re.findall(r'<img class="dgmx-cell" src="(data:image/png;base64,[^"]+)"', html)
    assert len(cells) == n
    inferred = np.round(z2_decoder(model)(z).reshape(-1, 28, 28).numpy() * 255).astype(np.uint8)
    assert np.abs(np.stack([_pixels(u) for u in cells]).astype(int) - inferred.astype(int)).max() <= 1
    buttons = re.findall(r'<button type="button" data-class="([^"]+)"', html)
    assert buttons == [INFERRED] + [str(c) for c in range(10)]


def test_live_view_regenerates_with_the_picked_class(model):
    live = z2_explorer(model, grid=GRID, mode="live")
    explorer = live.explorer
    first, n = explorer.image.value, explorer.n_decodes
    picked = None
    for c in range(10):  # some class decodes the origin differently from the read-off class
        live.picker.value = c
        if explorer.image.value != first:
            picked = c
            break
    assert picked is not None and explorer.n_decodes > n
    live.picker.value = -1
    assert explorer.image.value == first


def test_auto_mode_gives_both_halves_and_wrong_models_are_refused(model):
    view = z2_explorer(model, grid=GRID, mode="auto")
    assert isinstance(view, ExplorerView) and isinstance(view.static, StaticView)
    wide = CaGeM(CaGeMConfig(x_dim=784, n_classes=10, hidden=(8,), hidden_z=(8,), z_dim=4, z2_dim=3))
    with pytest.raises(ValueError, match="z2_dim=2"):
        z2_explorer(wide, mode="static")


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_inline_javascript_parses(model, tmp_path):
    html = z2_explorer(model, grid=GRID, mode="static").data
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 2  # the latent view's and the class picker's
    for i, js in enumerate(scripts):
        path = tmp_path / f"view{i}.js"
        path.write_text(js)
        res = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def test_fig49_has_three_panels(model):
    import matplotlib.pyplot as plt

    fig = plot_fig49(model, torch.randn(50, 2), torch.arange(50) % 10, grid=(3, 3), fixed_class=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("p(y|z2)" in t for t in titles) and any("y = 2" in t for t in titles)
    assert len(fig.axes) == 4  # three panels and the colour bar
    plt.close(fig)
