"""Figures for the CaGeM page (book/ch04_semi_supervised/cagem; thesis section 4.3, Fig. 4.9 = Appendix C, Fig. 3).

* :func:`z2_decoder`: the images a CaGeM generates from its top latent ``z2``, with the class either read off
  ``p(y|z2)`` (its most probable value) or fixed, as in the left and right panels of Fig. 4.9.
* :func:`z2_explorer`: the 2-D ``z2`` plane of a CaGeM with ``z2_dim=2``, encoded test points coloured by class, and
  a class picker: hover over (or click) a point of the plane, pick a class, see the decoded digit. Like the explorers of
  :mod:`dgmlab.widgets` it has a kernel-free half (precomputed images, inline JS; works on the static site) and a live
  half (ipywidgets; decodes on every move).
* :func:`plot_fig49`: the three panels of Fig. 4.9 as one matplotlib figure.
"""

from __future__ import annotations

import html
import json

import numpy as np
import torch

from dgmlab.plotting import image_grid
from dgmlab.widgets import ExplorerView, latent_explorer, latent_grid
from dgmlab.widgets.explorer import resolve_mode
from dgmlab.widgets.images import call_decoder, colorize, data_uri, png_bytes
from dgmlab.widgets.static import StaticView, new_id

INFERRED = "p(y|z2)"
"""The class-picker entry that reads the class off ``p(y|z2)`` (its most probable value) instead of fixing it."""


def _check_2d(model) -> None:
    z2_dim = getattr(getattr(model, "config", None), "z2_dim", None)
    if z2_dim != 2:
        raise ValueError(f"the z2 plane needs a CaGeM with z2_dim=2 (the visualisation model of thesis Fig. 4.9), got "
                         f"z2_dim={z2_dim!r}; load it with dgmlab.pretrained.load_pretrained('cagem2d-mnist100')")


def most_probable_class(model, z2: torch.Tensor) -> torch.Tensor:
    """``argmax_y p(y|z2)`` for top latents ``z2`` ``(B, z2_dim)``: the cluster that region of ``z2`` stands for."""
    with torch.no_grad():
        return model.p_y(z2).probs.argmax(-1)


def z2_decoder(model, y: int | None = None):
    """``z2 (B, z2_dim) -> images (B, x_dim)``: the mean of ``p(x|z1, y)`` with ``z1`` the mean of ``p(z1|y, z2)``
    (``CaGeM.generate``), for a fixed class ``y`` or, with ``y=None``, the most probable class under ``p(y|z2)``.

    The thesis' left panel draws ``y ~ p(y|z2)``; taking the most probable class instead keeps the picture the same
    from run to run (``model.generate(z2)`` draws it)."""
    if y is None:
        return lambda z2: model.generate(z2, most_probable_class(model, z2))
    if not 0 <= int(y) < model.n_clusters:
        raise ValueError(f"y must be a class in 0..{model.n_clusters - 1}, got {y!r}")
    return lambda z2: model.generate(z2, int(y))


_JS_CLASS_PICKER = """
(function () {
  var ID = "__ID__";
  function init(root) {
    if (!root || root.getAttribute("data-ready")) return;
    root.setAttribute("data-ready", "1");
    var sets = JSON.parse(root.querySelector("script.dgmx-sets").textContent);
    var view = root.querySelector(".dgmx-latent"), cells = view.querySelectorAll(".dgmx-cell");
    var big = view.querySelector(".dgmx-big"), label = root.querySelector(".dgmx-class-label");
    var own = [];
    for (var k = 0; k < cells.length; k++) own.push(cells[k].src);
    sets["__INFERRED__"] = own;
    var buttons = root.querySelectorAll("button[data-class]");
    function pick(name) {
      var srcs = sets[name];
      for (var k = 0; k < cells.length; k++) cells[k].src = srcs[k];
      var shown = view.getAttribute("data-shown");
      var k0 = shown === null ? +view.getAttribute("data-selected") : +shown;
      big.src = cells[k0].src;
      root.setAttribute("data-class", name);
      label.textContent = name === "__INFERRED__" ? "class: the most probable under p(y|z2)" : "class y = " + name;
      Array.prototype.forEach.call(buttons, function (b) {
        b.setAttribute("aria-pressed", String(b.getAttribute("data-class") === name));
      });
    }
    Array.prototype.forEach.call(buttons, function (b) {
      b.addEventListener("click", function () { pick(b.getAttribute("data-class")); });
    });
    pick("__INFERRED__");
  }
  var s = document.currentScript, root = s ? s.parentNode : null;
  if (root && root.id === ID) init(root); else setTimeout(function () { init(document.getElementById(ID)); }, 0);
})();
"""


def _static_view(model, inner: StaticView, grid: tuple[int, int], extent: tuple[float, float], device,
                 class_names: list[str], title: str) -> StaticView:
    """``inner`` (the latent view decoded with the most probable class) wrapped with one button per class; a button
    swaps the decodings of the map for the same grid decoded with that class fixed."""
    gx, gy = grid
    z, _, _ = latent_grid(2, (gx, gy), (extent, extent), (0, 1), torch.zeros(2))
    k = model.n_clusters
    zz = z.repeat(k, 1)
    yy = torch.arange(k).repeat_interleave(len(z))
    pixels = colorize(call_decoder(lambda a, b: model.generate(a, b), [zz.to(device), yy.to(device)], (28, 28),
                                   "generate", 2), None)
    sets = {name: [data_uri(png_bytes(p)) for p in pixels[c * len(z):(c + 1) * len(z)]]
            for c, name in enumerate(class_names)}
    uid = new_id("dgmx-cagem")
    buttons = "".join(f'<button type="button" data-class="{html.escape(n, quote=True)}" aria-pressed="false">'
                      f"{html.escape(n)}</button>" for n in [INFERRED, *class_names])
    script = _JS_CLASS_PICKER.replace("__ID__", uid).replace("__INFERRED__", INFERRED)
    markup = (f'<div class="dgmx-cagem" id="{uid}" data-class="{INFERRED}">'
              f'<div class="dgmx-title" style="font:600 13px system-ui,sans-serif">{html.escape(title)}</div>'
              f'<div class="dgmx-buttons" style="font:12px system-ui,sans-serif;margin:4px 0">class: {buttons} '
              f'<span class="dgmx-class-label"></span></div>'
              f"{inner.data}"
              f'<script type="application/json" class="dgmx-sets">{json.dumps(sets)}</script>'
              f"<script>{script}</script></div>")
    return StaticView(markup, uid, n_images=inner.n_images * (k + 1), kind="latent")


def z2_explorer(model, *, points=None, labels=None, grid=(13, 13), extent=(-2.5, 2.5), mode: str = "auto",
                device=None, title: str = "CaGeM: the z2 plane", max_points: int = 2000):
    """Explore the 2-D ``z2`` plane of a CaGeM (thesis Fig. 4.9): pick a point of the plane and a class, see the digit
    ``p(x|z1, y)`` generates there (``z1`` the mean of ``p(z1|y, z2)``).

    Args:
        model: a CaGeM with ``z2_dim=2``.
        points, labels: encoded test points ``(M, 2)`` (``model.encode(x)[1]``) and their classes, drawn on the map.
        grid, extent: the precomputed grid of ``z2`` values (``gx x gy`` cells over ``extent`` in both coordinates).
        mode: ``"static"`` (kernel-free, precomputed for every class), ``"live"`` (ipywidgets, needs a kernel) or
            ``"auto"`` (both; ``DGMLAB_EXPLORER_MODE`` can override it).

    Returns:
        a :class:`~dgmlab.widgets.static.StaticView`, an ipywidgets box or an
        :class:`~dgmlab.widgets.ExplorerView` holding both.
    """
    _check_2d(model)
    mode = resolve_mode(mode)
    lo, hi = (float(v) for v in extent)
    grid = (int(grid[0]), int(grid[1])) if np.ndim(grid) else (int(grid), int(grid))
    device = device if device is not None else next(model.parameters()).device
    model.eval()
    class_names = [str(c) for c in range(model.n_clusters)]
    common = dict(z_dim=2, grid=grid, extent=(lo, hi), points=points, labels=labels, device=device,
                  max_points=max_points)
    static = live = None
    if mode in ("static", "auto"):
        inner = latent_explorer(z2_decoder(model), mode="static", title="", **common)
        static = _static_view(model, inner, grid, (lo, hi), device, class_names, title)
    if mode in ("live", "auto"):
        import ipywidgets as widgets

        chosen = {"y": None}

        def decode(z2):
            return z2_decoder(model, chosen["y"])(z2)

        note = ("Live: generates with the model on every move; needs a running Python kernel (on the static book "
                "page use the precomputed view above)." if mode == "auto" else "")
        explorer = latent_explorer(decode, mode="live", title=f"{title} (live)", **common)
        picker = widgets.Dropdown(options=[(f"most probable under {INFERRED}", -1)] + [(n, c) for c, n in
                                                                                      enumerate(class_names)],
                                  value=-1, description="class y")

        def on_pick(change):
            chosen["y"] = None if change["new"] < 0 else int(change["new"])
            explorer.update()

        picker.observe(on_pick, names="value")
        live = widgets.VBox([picker, explorer] + ([widgets.HTML(f'<span style="font-size:12px;opacity:.8">{note}'
                                                               "</span>")] if note else []))
        live.picker, live.explorer = picker, explorer  # for tests and for readers who want to drive it from code
    if mode == "static":
        return static
    if mode == "live":
        return live
    return ExplorerView(static, live)


def plot_fig49(model, z2_points, labels, *, window=((-1.0, 1.0), (-1.0, 1.0)), grid=(10, 10), fixed_class: int = 0,
               extent=(-3.0, 3.0), device=None):
    """Thesis Fig. 4.9 (Appendix C, Fig. 3) as one figure: left, digits generated on a grid over ``window`` with the
    class read off ``p(y|z2)``; middle, the encoded test points in the ``z2`` plane coloured by class, with the window
    drawn as a black box; right, the same grid with the class fixed to ``fixed_class``.

    Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    _check_2d(model)
    device = device if device is not None else next(model.parameters()).device
    (x0, x1), (y0, y1) = window
    gx, gy = grid
    z, _, _ = latent_grid(2, (gx, gy), ((x0, x1), (y0, y1)), (0, 1), torch.zeros(2))
    z = z.to(device)
    with torch.no_grad():
        inferred = z2_decoder(model)(z).cpu()
        fixed = z2_decoder(model, fixed_class)(z).cpu()
    pts = torch.as_tensor(z2_points).detach().cpu().numpy()
    lab = torch.as_tensor(labels).detach().cpu().numpy()
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1, 1.15, 1]})
    axes[0].imshow(image_grid(inferred, nrow=gy, pad=1), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("class from p(y|z2) (its most probable value)")
    scatter = axes[1].scatter(pts[:, 0], pts[:, 1], c=lab, cmap="tab10", s=3, alpha=0.6, vmin=-0.5, vmax=9.5)
    axes[1].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, color="k"))
    axes[1].set(xlim=extent, ylim=extent, xlabel="z2[0]", ylabel="z2[1]", aspect="equal",
                title=f"encoded test digits ({len(pts)}), coloured by true class")
    fig.colorbar(scatter, ax=axes[1], ticks=range(10), shrink=0.8, label="true class")
    axes[2].imshow(image_grid(fixed, nrow=gy, pad=1), cmap="gray", vmin=0, vmax=1)
    axes[2].set_title(f"class fixed: y = {fixed_class}")
    for ax in (axes[0], axes[2]):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"z2[0] from {x0:g} to {x1:g} (left to right)")
        ax.set_ylabel(f"z2[1] from {y1:g} to {y0:g} (top to bottom)")
    fig.tight_layout()
    return fig


__all__ = ["INFERRED", "most_probable_class", "plot_fig49", "z2_decoder", "z2_explorer"]
