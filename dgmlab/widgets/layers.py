"""A layer explorer for hierarchical VAEs (chapter 5.1): change the units of one latent layer with the others fixed
and watch the decoded digit change, layer by layer: what each layer encodes.

For a test digit ``x`` the explorer takes the posterior means of every layer, ``m_1 .. m_L`` (the zero-noise
inference pass of :meth:`~dgmlab.models.hvae.HierarchicalVAE.posterior`). For a chosen layer ``i`` and two of its
units ``a, b`` (by default its two most active units, see :func:`layer_explorer`) it moves ``z_i`` away from ``m_i``
along those units, in steps of the *prior* standard deviation of each unit,

    z_i = m_i + t_a sigma_p,ia e_a + t_b sigma_p,ib e_b,      t_a, t_b in [-extent, extent],

where ``sigma_p,i`` is the standard deviation of ``p(z_i|z_{i+1} = m_{i+1})`` (1 for the top layer, whose prior is
``N(0, I)``), keeps the layers above at their posterior means and decodes *downward through the generative model
only*: ``z_{i-1} = E[p(z_{i-1}|z_i)], ..., z_1 = E[p(z_1|z_2)]``, image ``= E[p(x|z_1)]`` (the Bernoulli pixel
probabilities). An LVAE's top-down inference shares ``p(z_i|z_{i+1})`` with generation, but the explorer never uses
the inference networks below layer ``i``: what you see is what layer ``i`` (with its ancestors fixed) tells the
generative model. At ``t = 0`` layer ``i`` sits at its posterior mean, so for ``z_1`` the centre cell is the
reconstruction ``model.reconstruct(x)``; for a higher layer it is the "top-down reconstruction from ``z_i``" (the
strip under the layer buttons shows all of them next to the input).

:func:`layer_explorer` builds, like the latent explorers of :mod:`dgmlab.widgets.explorer`, a kernel-free view
(``"static"``: one self-contained ``<div>`` with every shown layer's ``grid x grid`` decodings precomputed as small
inline PNGs, a layer selector and a vanilla-JS script; no network), a live view (``"live"``: ipywidgets, decodes
with the model on every change, any two units of any layer) or both (``"auto"``; ``DGMLAB_EXPLORER_MODE`` chooses).
"""

from __future__ import annotations

import html
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from dgmlab.widgets.explorer import ExplorerView, resolve_mode
from dgmlab.widgets.images import check_image_shape, check_images, colorize, data_uri, png_bytes, tile, upscale
from dgmlab.widgets.static import _CSS, ACCENT, StaticView, _attr, _img, _script, new_id

MAX_GRID = 30
INACTIVE_KL = 0.01  # nats: a unit below this is "inactive" (dgmlab.objectives.active_units, thesis Fig. 5.2)

_CSS_L = """
.dgmx-layers .dgmx-lbtn{margin:.1em 0 .5em}
.dgmx-layers .dgmx-ptitle{font-size:12px;margin-bottom:4px;max-width:460px}
.dgmx-layers .dgmx-strip figure{border:2px solid transparent;border-radius:3px;padding:1px}
.dgmx-layers .dgmx-strip figure[data-show]{cursor:pointer}
.dgmx-layers .dgmx-strip figure[data-show]:hover{border-color:rgba(128,128,128,.6);border-style:dashed}
.dgmx-layers .dgmx-strip figure.dgmx-on{border-color:__ACCENT__;border-style:solid}
.dgmx-layers .dgmx-strip .dgmx-src{margin-right:6px}
""".replace("__ACCENT__", ACCENT)

_JS_LAYERS = """
  boot(function (root) {
    var panels = root.querySelectorAll(".dgmx-lpanel"), pick = root.querySelectorAll("[data-show]");
    var big = root.querySelector(".dgmx-big"), out = root.querySelector(".dgmx-readout");
    var S = Array.prototype.map.call(panels, function (p, L) {
      return {p: p, L: L, gx: +p.getAttribute("data-gx"), gy: +p.getAttribute("data-gy"),
              xs: JSON.parse(p.getAttribute("data-xs")), ys: JSON.parse(p.getAttribute("data-ys")),
              names: JSON.parse(p.getAttribute("data-names")), map: p.querySelector(".dgmx-map"),
              cells: p.querySelectorAll(".dgmx-cell"), pinBox: p.querySelector(".dgmx-pin"),
              hovBox: p.querySelector(".dgmx-hov"), pinned: +p.getAttribute("data-selected"), shown: -1};
    });
    var cur = +root.getAttribute("data-layer");
    function sd(v) { return "= " + (v < 0 ? "\\u2212" : "+") + Math.abs(v).toFixed(2) + " sd"; }
    function put(s, box, k) {
      var i = Math.floor(k / s.gx), j = k % s.gx;
      box.style.left = (100 * j / s.gx) + "%"; box.style.top = (100 * i / s.gy) + "%";
      box.style.width = (100 / s.gx) + "%"; box.style.height = (100 / s.gy) + "%"; box.style.display = "block";
    }
    function show(s, k, how) {
      var i = Math.floor(k / s.gx), j = k % s.gx, text = s.names[0] + " " + sd(s.xs[j]);
      if (s.names.length > 1) text += ",  " + s.names[1] + " " + sd(s.ys[i]);
      s.shown = k; big.src = s.cells[k].src;
      out.textContent = text + "  (" + how + ")";
      root.setAttribute("data-shown", s.L + ":" + k);
    }
    function pin(s, k) {
      s.pinned = k; s.p.setAttribute("data-selected", String(k)); root.setAttribute("data-selected", String(k));
      put(s, s.pinBox, k); s.hovBox.style.display = "none"; show(s, k, "selected");
    }
    function select(L) {
      cur = L; root.setAttribute("data-layer", String(L));
      S.forEach(function (s) { s.p.style.display = s.L === L ? "" : "none"; });
      Array.prototype.forEach.call(pick, function (b) {
        var on = +b.getAttribute("data-show") === L;
        if (b.tagName === "BUTTON") b.setAttribute("aria-pressed", String(on));
        else if (on) b.classList.add("dgmx-on"); else b.classList.remove("dgmx-on");
      });
      pin(S[L], S[L].pinned);
    }
    function cellAt(s, ev) {
      var r = s.map.getBoundingClientRect();
      var j = Math.floor((ev.clientX - r.left) / r.width * s.gx);
      var i = Math.floor((ev.clientY - r.top) / r.height * s.gy);
      return (i < 0 || j < 0 || i >= s.gy || j >= s.gx) ? -1 : i * s.gx + j;
    }
    S.forEach(function (s) {
      s.map.addEventListener("mousemove", function (ev) {
        var k = cellAt(s, ev);
        if (k < 0) return;
        if (k === s.pinned) s.hovBox.style.display = "none"; else put(s, s.hovBox, k);
        if (k !== s.shown) show(s, k, k === s.pinned ? "selected" : "hover");
      });
      s.map.addEventListener("mouseleave", function () {
        s.hovBox.style.display = "none"; show(s, s.pinned, "selected");
      });
      s.map.addEventListener("click", function (ev) {
        var k = cellAt(s, ev);
        if (k >= 0) pin(s, k);
        if (root.focus) root.focus({preventScroll: true});
      });
    });
    Array.prototype.forEach.call(pick, function (b) {
      b.addEventListener("click", function () { select(+b.getAttribute("data-show")); });
    });
    root.addEventListener("keydown", function (ev) {
      var s = S[cur], i = Math.floor(s.pinned / s.gx), j = s.pinned % s.gx;
      if (ev.key === "PageUp" || ev.key === "]") { select(Math.min(S.length - 1, cur + 1)); }
      else if (ev.key === "PageDown" || ev.key === "[") { select(Math.max(0, cur - 1)); }
      else {
        if (ev.key === "ArrowLeft") j = Math.max(0, j - 1);
        else if (ev.key === "ArrowRight") j = Math.min(s.gx - 1, j + 1);
        else if (ev.key === "ArrowUp") i = Math.max(0, i - 1);
        else if (ev.key === "ArrowDown") i = Math.min(s.gy - 1, i + 1);
        else return;
        pin(s, i * s.gx + j);
      }
      ev.preventDefault(); ev.stopPropagation();
    });
    select(cur);
  });
"""


# ------------------------------------------------------------------------------------------------ the computation
def _offsets(grid: int, extent: float) -> np.ndarray:
    """``grid`` shifts from ``-extent`` to ``extent``, symmetric, with an exact 0 in the middle for an odd grid."""
    return (np.arange(grid) - (grid - 1) / 2) * (2 * extent / (grid - 1))


class LayerData:
    """What both views show, computed from one hierarchical VAE and one digit (see the module docstring).

    Attributes:
        names: every layer's name (``"z1"`` bottom ... ``"zL"`` top); ``shown``: the indices of the explored layers
            (bottom first) and ``initial`` the one shown first.
        means: per layer the posterior mean ``m_i``, shape ``(1, d_i)`` (equal to ``model.posterior(x)``).
        prior_sd: per layer the standard deviation of ``p(z_i|z_{i+1} = m_{i+1})`` (ones at the top), ``(d_i,)``.
        digit_kl: per layer and unit ``KL(q(z_ij|.) || p(z_ij|.))`` of this digit at the posterior means, ``(d_i,)``.
        ranking: per layer the per-unit KL the default units are picked by (``digit_kl`` unless ``kl`` was given).
        units: per layer the explored units: two (the first along the x axis), or one for a one-unit layer.
        offsets: the grid's shifts in prior standard deviations, ascending.
    """

    def __init__(self, model, x, *, layer_names=None, layer=None, units=None, kl=None, grid: int = 7,
                 extent: float = 2.5, image_shape=None, to_image: Callable | None = None, device=None):
        from dgmlab.models.hvae import HierarchicalVAE

        if not isinstance(model, HierarchicalVAE):
            raise TypeError(f"model must be a trained hierarchical VAE (dgmlab.models.hvae.HVAE or "
                            f"dgmlab.models.lvae.LVAE), got {type(model).__name__}; for a one-layer VAE use "
                            f"dgmlab.widgets.latent_explorer(lambda z: model.decode(z).mean, z_dim)")
        self.model = model
        self.names = model.layer_names()
        self.sizes = tuple(model.config.sizes)
        self.grid = _check_grid(grid)
        self.extent = _check_extent(extent)
        self.offsets = _offsets(self.grid, self.extent)
        self.to_image = to_image
        p0 = next(model.parameters())
        self.device = torch.device(device) if device is not None else p0.device
        self.dtype = p0.dtype
        self.x = self._check_x(x)
        self.image_shape = self._image_shape(image_shape)
        self.shown = self._layer_indices(layer_names)
        self.initial = self._initial(layer)

        from dgmlab import objectives
        from dgmlab.models.vae import evaluation

        with evaluation(model):
            noise = [self.x.new_zeros(1, d) for d in self.sizes]
            q, p, z = model.infer(self.x, (), noise)  # the zero-noise pass of model.posterior(x)
            self.means = [zi.detach() for zi in z]
            self.prior_sd = [pi.base_dist.scale.expand(1, d)[0].detach() for pi, d in zip(p, self.sizes)]
            self.digit_kl = [objectives.kl_per_unit(qi, pi).expand(1, d)[0].detach().cpu().numpy()
                             for qi, pi, d in zip(q, p, self.sizes)]
        self.ranking = self._ranking(kl)
        self.units = self._units(units)
        # The reconstruction from each layer: that layer at its posterior mean, decoded downward (batch of one).
        self.centre = {i: self.decode(i, self.units[i], torch.zeros(1, len(self.units[i])))[1][0] for i in self.shown}
        self.input_image = self._images(self.x)[0]

    # -------------------------------------------------------------------------------------------- checks
    def _check_x(self, x) -> torch.Tensor:
        x_dim = self.model.config.x_dim
        if isinstance(x, torch.Tensor):
            t = x.detach()
        else:
            try:
                t = torch.as_tensor(np.asarray(x, dtype=np.float32))
            except (TypeError, ValueError):
                raise TypeError(f"x must be a tensor or array holding one digit, got {type(x).__name__}") from None
        if t.dim() == 1 and t.numel() == x_dim:
            t = t.reshape(1, x_dim)
        if t.dim() != 2 or tuple(t.shape) != (1, x_dim):
            raise ValueError(f"x must be one digit of shape (1, {x_dim}) (the model's x_dim), got "
                             f"{tuple(t.shape)}; pass a single row, e.g. data.test_inputs()[:1]")
        t = t.to(self.device, self.dtype)
        if not bool(torch.isfinite(t).all()):
            raise ValueError("x holds NaN or infinite values")
        if self.model.config.likelihood == "bernoulli" and not bool(((t == 0) | (t == 1)).all()):
            raise ValueError("x must be binary (0 and 1 only) for the model's Bernoulli likelihood; use a binarised "
                             "test digit, e.g. data.test_inputs()[:1] (binarised with a fixed seed), or "
                             "dgmlab.data.binarize(x)")
        return t

    def _image_shape(self, image_shape) -> tuple[int, int]:
        if image_shape is not None:
            return check_image_shape(image_shape)
        if self.to_image is not None:
            with torch.no_grad():
                out = self.to_image(self.x)
            shape = tuple(out.shape[1:])
            if len(shape) == 2:
                return check_image_shape(shape)
            if len(shape) == 3 and shape[0] == 1:
                return check_image_shape(shape[1:])
            raise ValueError(f"to_image must map (N, x_dim) inputs to images (N, H, W), got shape {tuple(out.shape)}")
        x_dim = self.model.config.x_dim
        side = int(round(x_dim ** 0.5))
        if side * side != x_dim:
            raise ValueError(f"x_dim={x_dim} is not a square image; pass image_shape=(H, W), or for trimmed MNIST "
                             f"to_image=data.to_image (puts the pixels back on the 28x28 grid)")
        return side, side

    def _layer_indices(self, layer_names) -> list[int]:
        if layer_names is None:
            return list(range(len(self.names)))
        if isinstance(layer_names, str):
            layer_names = [layer_names]
        try:
            wanted = list(layer_names)
        except TypeError:
            raise TypeError(f"layer_names must be a list of layer names such as {self.names}, "
                            f"got {layer_names!r}") from None
        bad = [n for n in wanted if n not in self.names]
        if bad or not wanted:
            raise ValueError(f"layer_names must name layers of this model ({', '.join(self.names)}), got "
                             f"{layer_names!r}")
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"layer_names holds a layer twice: {layer_names!r}")
        return sorted(self.names.index(n) for n in wanted)

    def _initial(self, layer) -> int:
        if layer is None:
            return self.shown[-1]  # the top shown layer: the most global change first
        if layer not in self.names or self.names.index(layer) not in self.shown:
            raise ValueError(f"layer must be one of the shown layers {[self.names[i] for i in self.shown]}, "
                             f"got {layer!r}")
        return self.names.index(layer)

    def _layer_of(self, name, option: str) -> int:
        if name not in self.names:
            raise ValueError(f"{option} names an unknown layer {name!r}; the layers are {', '.join(self.names)}")
        return self.names.index(name)

    def _ranking(self, kl) -> list[np.ndarray]:
        ranking = list(self.digit_kl)
        if kl is None:
            return ranking
        if not isinstance(kl, Mapping):
            raise TypeError("kl must be a dict {layer name: per-unit KL}, e.g. model.kl_per_unit(x_test)")
        for name, values in kl.items():
            i = self._layer_of(name, "kl")
            v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=float)
            if v.shape != (self.sizes[i],) or not np.isfinite(v).all():
                raise ValueError(f"kl[{name!r}] must hold {self.sizes[i]} finite values (one per unit), got shape "
                                 f"{v.shape}")
            ranking[i] = v
        return ranking

    def _units(self, units) -> list[tuple[int, ...]]:
        out = [tuple(int(u) for u in np.argsort(-r, kind="stable")[:min(2, d)])
               for r, d in zip(self.ranking, self.sizes)]
        if units is None:
            return out
        if not isinstance(units, Mapping):
            raise TypeError("units must be a dict {layer name: (unit, unit)}, e.g. {'z5': (0, 2)}")
        for name, pair_ in units.items():
            i = self._layer_of(name, "units")
            d = self.sizes[i]
            chosen = (pair_,) if isinstance(pair_, (int, np.integer)) else tuple(pair_)
            need = min(2, d)
            if (len(chosen) != need or len(set(chosen)) != need
                    or any(isinstance(u, bool) or not isinstance(u, (int, np.integer)) or not 0 <= u < d
                           for u in chosen)):
                raise ValueError(f"units[{name!r}] must be {need} different unit indices in [0, {d}), got {pair_!r}")
            out[i] = tuple(int(u) for u in chosen)
        return out

    # -------------------------------------------------------------------------------------------- decoding
    def codes(self, i: int, units: Sequence[int], t: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's code for shifts ``t`` ``(N, len(units))`` (in prior standard deviations) of ``units`` of
        layer ``i``: the layers above at their posterior means, layer ``i`` shifted, the layers below the means of
        ``p(z_j|z_{j+1})`` (generative path only). A list bottom first, shapes ``(N, d_j)``."""
        t = torch.as_tensor(t, dtype=self.dtype).to(self.device)
        n = len(t)
        z = [m.expand(n, -1).clone() for m in self.means]
        for c, u in enumerate(units):
            z[i][:, u] = z[i][:, u] + t[:, c] * self.prior_sd[i][u]
        from dgmlab.models.vae import evaluation

        with evaluation(self.model):
            for j in reversed(range(i)):
                z[j] = self.model.p_z[j](z[j + 1]).mean
        return z

    def decode(self, i: int, units: Sequence[int], t: torch.Tensor) -> tuple[list[torch.Tensor], np.ndarray]:
        """``(codes, images)``: :meth:`codes` and the mean of ``p(x|z_1)`` as checked images ``(N, H, W)``."""
        from dgmlab.models.vae import evaluation

        z = self.codes(i, units, t)
        with evaluation(self.model):
            out = self.model.p_x(z[0]).mean
        return z, self._images(out)

    def _images(self, out: torch.Tensor) -> np.ndarray:
        n = len(out)
        if self.to_image is not None:
            with torch.no_grad():
                out = self.to_image(out)
        return check_images(out, n, self.image_shape, f"decoding {n} codes", "the decoded images")

    def grid_shifts(self, i: int, units: Sequence[int] | None = None) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """The grid of layer ``i``: shifts ``(gx*gy, k)`` in map order (row-major from the top row, i.e. the largest
        second shift, as :func:`~dgmlab.widgets.explorer.latent_grid`), ``xs`` ascending and ``ys_rows``
        descending (a single 0 for a one-unit layer)."""
        units = self.units[i] if units is None else units
        xs = self.offsets
        if len(units) == 1:
            return torch.as_tensor(xs, dtype=torch.float64)[:, None], xs, np.zeros(1)
        ys_rows = xs[::-1].copy()
        t = np.stack([np.tile(xs, len(ys_rows)), np.repeat(ys_rows, len(xs))], axis=1)
        return torch.as_tensor(t), xs, ys_rows

    def layer_grid(self, i: int, units: Sequence[int] | None = None):
        """``(codes, images, xs, ys_rows)`` of layer ``i``'s grid (see :meth:`grid_shifts`)."""
        units = self.units[i] if units is None else units
        t, xs, ys_rows = self.grid_shifts(i, units)
        z, images = self.decode(i, units, t)
        return z, images, xs, ys_rows

    def describe(self, i: int, units: Sequence[int] | None = None) -> str:
        """One line about the explored units of layer ``i``: their KL and prior standard deviation."""
        units = self.units[i] if units is None else units
        r, sd = self.ranking[i], self.prior_sd[i].cpu().numpy()
        parts = [f"unit {u} (KL {r[u]:.2f} nats, prior sd {sd[u]:.2f})" for u in units]
        text = (f"{self.names[i]} ({self.sizes[i]} unit{'s' if self.sizes[i] > 1 else ''}): varying "
                + " and ".join(parts))
        if all(r[u] < INACTIVE_KL for u in units):
            text += "; inactive units (KL < 0.01 nats): the model ignores them, the decoding barely changes"
        return text


def _check_grid(grid) -> int:
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or not 2 <= grid <= MAX_GRID:
        raise ValueError(f"grid must be an integer from 2 to {MAX_GRID} (cells per side; odd values such as 7 put "
                         f"the posterior mean in the centre cell), got {grid!r}")
    return int(grid)


def _check_extent(extent) -> float:
    if (isinstance(extent, bool) or not isinstance(extent, (int, float, np.integer, np.floating))
            or not np.isfinite(extent) or extent <= 0):
        raise ValueError(f"extent must be a positive number of prior standard deviations (the grid spans "
                         f"[-extent, extent] around the posterior mean), e.g. 2.5; got {extent!r}")
    return float(extent)


# ------------------------------------------------------------------------------------------------ static view
def _fmt(v: float) -> str:
    return ("\u2212" if v < 0 else "+" if v > 0 else "") + f"{abs(v):g}"


def layer_view_html(ld: LayerData, *, title: str, cmap=None, cell_px: int | None = None, big_px: int = 168,
                    thumb_px: int = 42, note: str = "") -> StaticView:
    """The kernel-free view of :func:`layer_explorer`: one panel per shown layer (its grid of decodings), layer
    buttons, a strip with the input and the reconstruction from every shown layer, and a large copy of the hovered
    or selected cell."""
    uid = new_id()
    h, w = ld.image_shape
    cell = cell_px or max(8, min(2 * w, 392 // ld.grid))
    cell_h = max(1, round(cell * h / w))
    panels, buttons, n_images = [], [], 0
    order = {i: k for k, i in enumerate(ld.shown)}
    first_uri = None
    for i in ld.shown:
        _, images, xs, ys_rows = ld.layer_grid(i)
        uris = [data_uri(png_bytes(c)) for c in colorize(images, cmap)]
        n_images += len(uris)
        gx, gy = len(xs), len(ys_rows)
        selected = (gy // 2) * gx + gx // 2
        if i == ld.initial:
            first_uri = uris[selected]
        names = [f"\u0394{ld.names[i]}[{u}]" for u in ld.units[i]]
        cells = "".join(_img(u, "dgmx-cell", (cell, cell_h)) for u in uris)
        if gy > 1:
            ylab = (f'<div class="dgmx-ylab"><span>{_fmt(ys_rows[0])}</span><span class="dgmx-an">'
                    f'{html.escape(names[1])}</span><span>{_fmt(ys_rows[-1])}</span></div>')
        else:
            ylab = "<div></div>"
        hidden = "" if i == ld.initial else ' style="display:none"'
        panels.append(
            f'<div class="dgmx-lpanel" data-name="{ld.names[i]}" data-gx="{gx}" data-gy="{gy}" '
            f'data-xs="{_attr([round(float(v), 4) for v in xs])}" '
            f'data-ys="{_attr([round(float(v), 4) for v in ys_rows])}" data-names="{_attr(names)}" '
            f'data-selected="{selected}"{hidden}>'
            f'<div class="dgmx-ptitle">{html.escape(ld.describe(i))}</div>'
            f'<div class="dgmx-plot">{ylab}'
            f'<div class="dgmx-map" style="width:{gx * cell}px;height:{gy * cell_h}px">'
            f'<div class="dgmx-grid" style="grid-template-columns:repeat({gx},{cell}px);grid-auto-rows:{cell_h}px">'
            f'{cells}</div><div class="dgmx-box dgmx-hov"></div><div class="dgmx-box dgmx-pin"></div></div>'
            f'<div></div><div class="dgmx-xlab"><span>{_fmt(xs[0])}</span><span class="dgmx-an">'
            f'{html.escape(names[0])}</span><span>{_fmt(xs[-1])}</span></div></div></div>')
        pressed = "true" if i == ld.initial else "false"
        buttons.append(f'<button type="button" data-show="{order[i]}" aria-pressed="{pressed}">{ld.names[i]} '
                       f'({ld.sizes[i]})</button>')
    thumb = (thumb_px, round(thumb_px * h / w))
    source = _img(data_uri(png_bytes(colorize(ld.input_image, cmap))), "dgmx-in", thumb, "input digit")
    strip = [f'<figure class="dgmx-src">{source}<figcaption>input</figcaption></figure>']
    for i in ld.shown:
        on = ' class="dgmx-on"' if i == ld.initial else ""
        uri = data_uri(png_bytes(colorize(ld.centre[i], cmap)))
        strip.append(f'<figure data-show="{order[i]}"{on} title="decoded from the posterior mean of {ld.names[i]}">'
                     f'{_img(uri, "dgmx-rec", thumb, "from " + ld.names[i])}<figcaption>from {ld.names[i]}'
                     f"</figcaption></figure>")
    n_images += len(strip)
    help_text = ("Pick a layer (buttons, the strip, or PageUp/PageDown). Its map varies two of its units (the two "
                 "most active by KL unless chosen) in prior standard deviations (sd) around the digit's posterior "
                 "mean, keeps the layers above at their posterior means and decodes downward through the generative "
                 "model; the centre cell is the digit decoded from that layer alone (the strip). Hover to preview, "
                 "click to keep, arrow keys move the kept cell. Precomputed decodings: works without a running "
                 "kernel.")
    big_h = round(big_px * h / w)
    markup = f"""<div class="dgmx dgmx-layers" id="{uid}" tabindex="0" data-layer="{order[ld.initial]}" \
data-selected="0" data-layers="{_attr([ld.names[i] for i in ld.shown])}">
<style>{_CSS}{_CSS_L}</style>
<div class="dgmx-title">{html.escape(title)}</div>
<div class="dgmx-buttons dgmx-lbtn">{''.join(buttons)}</div>
<div class="dgmx-body">
<div class="dgmx-panels">{''.join(panels)}</div>
<div class="dgmx-side">
{_img(first_uri, "dgmx-big", (big_px, big_h), "decoded image")}
<div class="dgmx-readout"></div>
<div class="dgmx-strip">{''.join(strip)}</div>
<div class="dgmx-help">{help_text}{(' ' + html.escape(note)) if note else ''}</div>
</div>
</div>
{_script(uid, _JS_LAYERS)}
</div>"""
    return StaticView(markup, uid, n_images=n_images, kind="layers")


# ------------------------------------------------------------------------------------------------ entry point
def layer_explorer(model, x, *, layer_names: Sequence[str] | None = None, grid: int = 7, extent: float = 2.5,
                   mode: str = "auto", layer: str | None = None, units: Mapping[str, Sequence[int]] | None = None,
                   kl: Mapping[str, Sequence[float]] | None = None, title: str = "Layer explorer",
                   image_shape=None, to_image: Callable | None = None, cmap: str | None = None,
                   cell_px: int | None = None, big_px: int = 168, device=None):
    """What each latent layer of a hierarchical VAE encodes: vary two units of one layer, decode, compare layers.

    The digit ``x`` is encoded to the posterior means ``m_1..m_L`` of all layers (:meth:`posterior`). For each
    shown layer ``z_i`` two of its units move over a ``grid x grid`` map of shifts ``t`` in ``[-extent, extent]``
    *prior standard deviations* (of ``p(z_i|z_{i+1} = m_{i+1})``; 1 at the top, whose prior is ``N(0, I)``) around
    ``m_i``; the layers above stay at their posterior means and the layers below are the means of the generative
    ``p(z_{j}|z_{j+1})``, down to the image ``E[p(x|z_1)]``. Only the generative path decodes (an LVAE's inference
    networks are not used below layer ``i``). A layer with a single unit gets a ``1 x grid`` strip. With an odd
    ``grid`` the centre cell is layer ``i`` at its posterior mean: for ``z_1`` exactly ``model.reconstruct(x)``.

    Which units: by default the layer's two most active units for this digit, ranked by the analytic per-unit
    ``KL(q(z_ij|.) || p(z_ij|.))`` at the posterior means (ties: lower index first), the first along the x axis.
    ``kl={"z3": per_unit_kl, ...}`` ranks by other values instead, e.g. ``model.kl_per_unit(x_test)`` (the average
    over a test set, the thesis' active-unit measure); ``units={"z3": (5, 2), "z5": (0, 1)}`` picks them directly.
    (Units, not principal directions: a unit's KL says how much the model uses it, thesis Fig. 5.2.)

    Args:
        model: a trained :class:`~dgmlab.models.hvae.HVAE` or :class:`~dgmlab.models.lvae.LVAE` (any depth); it is
            put in eval mode while decoding and its mode restored.
        x: one binarised digit, shape ``(1, x_dim)`` (or ``(x_dim,)``), e.g. ``data.test_inputs()[:1]``.
        layer_names: the layers to show (default all, e.g. ``["z1", "z3"]``); ``layer`` the one shown first
            (default the top shown layer).
        grid: cells per side (2 to 30; odd puts the posterior mean in the centre). ``extent``: half-width of the
            map in prior standard deviations (> 0).
        mode: ``"static"`` (kernel-free HTML), ``"live"`` (ipywidgets: any two units of any layer, decoded on every
            change) or ``"auto"`` (both; see :mod:`dgmlab.widgets.explorer`, ``DGMLAB_EXPLORER_MODE``).
        image_shape, to_image: the image shape (default: the square root of ``x_dim``) or a function mapping model
            inputs ``(N, x_dim)`` to images, e.g. ``data.to_image`` for trimmed MNIST.
        cmap, cell_px, big_px: colour map (default grey), on-page size of a map cell and of the enlarged decoding.

    Returns:
        a :class:`~dgmlab.widgets.static.StaticView` (``kind == "layers"``; one ``dgmx-lpanel`` per shown layer,
        ``grid**2`` images each, ``grid`` for a one-unit layer), a :class:`LiveLayerExplorer` or an
        :class:`~dgmlab.widgets.explorer.ExplorerView` holding both.

    Raises:
        TypeError: ``model`` is not a hierarchical VAE. ValueError: a bad ``x`` (shape, not binary), ``grid``,
        ``extent``, ``mode``, ``layer_names``, ``units`` or ``kl``.
    """
    mode = resolve_mode(mode)
    ld = LayerData(model, x, layer_names=layer_names, layer=layer, units=units, kl=kl, grid=grid, extent=extent,
                   image_shape=image_shape, to_image=to_image, device=device)
    static = live = None
    if mode in ("static", "auto"):
        static = layer_view_html(ld, title=title, cmap=cmap, cell_px=cell_px, big_px=big_px)
    if mode in ("live", "auto"):
        note = ("Live: decodes with the model on every change and can vary any two units; needs a running Python "
                "kernel (on the static book page use the precomputed view above)." if mode == "auto" else "")
        live = LiveLayerExplorer(ld, title=f"{title} (live)", cmap=cmap, big_px=big_px, cell_px=cell_px, note=note)
    if mode == "static":
        return static
    if mode == "live":
        return live
    return ExplorerView(static, live)


# ------------------------------------------------------------------------------------------------ live view
class LiveLayerExplorer:
    """The live half: a layer picker, two unit pickers (ordered by KL), two shift sliders (in prior standard
    deviations), the decoded digit, the map of the current layer and units with a cross-hair, and the strip of
    reconstructions from each layer. ``update`` (decode the current code) and ``refresh_map`` (decode the map) are
    plain methods, so tests can drive them without a browser; ``current_codes`` gives every layer's code.
    (A wrapper rather than an ipywidgets subclass, so that importing :mod:`dgmlab.widgets` does not import
    ipywidgets.)"""

    def __init__(self, ld: LayerData, *, title: str, cmap=None, big_px: int = 168, cell_px: int | None = None,
                 note: str = ""):
        import ipywidgets as widgets

        self.ld, self._cmap, self._big_px = ld, cmap, big_px
        h, w = ld.image_shape
        self._cell = cell_px or max(8, min(2 * w, 392 // ld.grid))
        self.n_decodes = self.n_maps = 0
        self._syncing = False
        e = ld.extent
        self.layer = widgets.ToggleButtons(options=[(f"{ld.names[i]} ({ld.sizes[i]})", i) for i in ld.shown],
                                           value=ld.initial, description="layer")
        self.unit_a = widgets.Dropdown(description="unit (x)")
        self.unit_b = widgets.Dropdown(description="unit (y)")
        self.shift_a = widgets.FloatSlider(value=0.0, min=-e, max=e, step=e / 50, description="shift x (sd)",
                                           continuous_update=True, readout_format="+.2f")
        self.shift_b = widgets.FloatSlider(value=0.0, min=-e, max=e, step=e / 50, description="shift y (sd)",
                                           continuous_update=True, readout_format="+.2f")
        self.reset = widgets.Button(description="posterior mean", tooltip="both shifts back to 0")
        self.image = widgets.Image(format="png")
        self.readout = widgets.HTML()
        self.about = widgets.HTML()
        self.map_image = widgets.Image(format="png", layout=widgets.Layout(grid_area="map", margin="0"))
        self.crosshair = widgets.HTML(layout=widgets.Layout(grid_area="map", margin="0"))
        self.map_box = widgets.GridBox([self.map_image, self.crosshair],
                                       layout=widgets.Layout(grid_template_areas='"map"'))
        thumbs = [self._thumb(ld.input_image, "input")] + [self._thumb(ld.centre[i], f"from {ld.names[i]}")
                                                           for i in ld.shown]
        head = [widgets.HTML(f"<b>{html.escape(title)}</b>")]
        if note:
            head.append(widgets.HTML(f'<span style="font-size:12px;opacity:.8">{html.escape(note)}</span>'))
        self.widget = widgets.VBox(children=[
            *head, self.layer, widgets.HBox([self.unit_a, self.unit_b]),
            widgets.HBox([widgets.VBox([self.shift_a, self.shift_b, self.reset]), self.image]),
            self.readout, self.about,
            widgets.HBox([self.map_box, widgets.HBox(thumbs, layout=widgets.Layout(flex_flow="row wrap"))],
                         layout=widgets.Layout(flex_flow="row wrap")),
        ])
        self._set_layer(ld.initial)
        self.layer.observe(self._on_layer, names="value")
        self.unit_a.observe(self._on_unit, names="value")
        self.unit_b.observe(self._on_unit, names="value")
        self.shift_a.observe(self._on_shift, names="value")
        self.shift_b.observe(self._on_shift, names="value")
        self.reset.on_click(lambda _: self.set_shifts(0.0, 0.0))

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _thumb(self, image: np.ndarray, caption: str):
        import ipywidgets as widgets

        pixels = colorize(image, self._cmap)
        img = widgets.Image(value=png_bytes(upscale(pixels, max(1, round(42 / pixels.shape[1])))), format="png")
        return widgets.VBox([img, widgets.HTML(f'<div style="text-align:center;font-size:11px">{caption}</div>')],
                            layout=widgets.Layout(align_items="center"))

    # ------------------------------------------------------------------------------------- state
    @property
    def units(self) -> tuple[int, ...]:
        """The explored units of the current layer (one for a one-unit layer)."""
        if self.ld.sizes[self.layer.value] == 1:
            return (self.unit_a.value,)
        return self.unit_a.value, self.unit_b.value

    def shifts(self) -> torch.Tensor:
        """The current shifts ``(1, len(units))`` in prior standard deviations."""
        return torch.tensor([[self.shift_a.value, self.shift_b.value][:len(self.units)]], dtype=torch.float64)

    def current_codes(self) -> list[torch.Tensor]:
        """Every layer's code for the current layer, units and shifts, bottom first, shapes ``(1, d_j)``."""
        return self.ld.codes(self.layer.value, self.units, self.shifts())

    def set_shifts(self, a: float, b: float = 0.0) -> None:
        """Move both sliders at once (one redraw)."""
        self._syncing = True
        try:
            self.shift_a.value, self.shift_b.value = float(a), float(b)
        finally:
            self._syncing = False
        self.update()

    # ------------------------------------------------------------------------------------- callbacks
    def _set_layer(self, i: int) -> None:
        ld = self.ld
        order = [int(u) for u in np.argsort(-ld.ranking[i], kind="stable")]
        options = [(f"{u} (KL {ld.ranking[i][u]:.2f})", u) for u in order]
        a, b = (ld.units[i] + (None,))[:2]
        self._syncing = True
        try:
            self.unit_a.options = options
            self.unit_a.value = a
            one = ld.sizes[i] == 1
            self.unit_b.options = options
            self.unit_b.value = a if one else b
            for wdg in (self.unit_b, self.shift_b):
                wdg.layout.display = "none" if one else None
            self.shift_a.value = self.shift_b.value = 0.0
        finally:
            self._syncing = False
        self.refresh_map()
        self.update()

    def _on_layer(self, change) -> None:
        self._set_layer(change["new"])

    def _on_unit(self, change) -> None:
        if self._syncing:
            return
        if len(self.units) == 2 and self.unit_a.value == self.unit_b.value:  # one unit on both axes: swap instead
            other = self.unit_b if change["owner"] is self.unit_a else self.unit_a
            self._syncing = True
            try:
                other.value = change["old"]
            finally:
                self._syncing = False
        self.refresh_map()
        self.update()

    def _on_shift(self, change) -> None:
        if not self._syncing:
            self.update()

    def refresh_map(self) -> None:
        """Decode the map of the current layer and units (one batched call) and send its picture."""
        i, units = self.layer.value, self.units
        _, images, xs, ys_rows = self.ld.layer_grid(i, units)
        self.n_maps += 1
        h, w = self.ld.image_shape
        pixels = tile(colorize(images, self._cmap), len(xs))
        factor = max(1, round(self._cell / w))
        picture = upscale(pixels, factor)
        self.map_image.value = png_bytes(picture)
        ph, pw = picture.shape[:2]
        self._map = (xs, ys_rows, pw, ph)
        self.map_image.width, self.map_image.height = pw, ph
        self.crosshair.layout.width, self.crosshair.layout.height = f"{pw}px", f"{ph}px"
        self.map_box.layout.grid_template_columns = f"{pw}px"
        self.map_box.layout.grid_template_rows = f"{ph}px"
        self.about.value = f'<span style="font-size:12px">{html.escape(self.ld.describe(i, units))}</span>'

    def update(self) -> None:
        """Decode the current code and redraw the digit, the read-out and the map's cross-hair."""
        i, units = self.layer.value, self.units
        t = self.shifts()
        z, images = self.ld.decode(i, units, t)
        self.n_decodes += 1
        pixels = colorize(images[0], self._cmap)
        self.image.value = png_bytes(upscale(pixels, max(1, round(self._big_px / pixels.shape[1]))))
        name = self.ld.names[i]
        parts = [f"{name}[{u}] = {float(z[i][0, u]):+.2f} (shift {float(t[0, c]):+.2f} sd)"
                 for c, u in enumerate(units)]
        self.readout.value = ", ".join(parts) + f"<br><small>{self.n_decodes} decodings so far</small>"
        self.crosshair.value = self._crosshair([float(v) for v in t[0]])

    def _crosshair(self, t: list[float]) -> str:
        xs, ys_rows, w, h = self._map
        gx, gy = len(xs), len(ys_rows)
        step = xs[1] - xs[0]
        col = float(np.clip((t[0] - xs[0] + step / 2) / (step * gx) * w, 0, w))
        if len(t) > 1:
            row = float(np.clip((ys_rows[0] + step / 2 - t[1]) / (step * gy) * h, 0, h))
        else:
            row = h / 2
        return (f'<svg width="{w}" height="{h}" style="display:block;pointer-events:none">'
                f'<g stroke="{ACCENT}" stroke-opacity="0.7">'
                f'<line x1="{col:.1f}" y1="0" x2="{col:.1f}" y2="{h}"/><line x1="0" y1="{row:.1f}" x2="{w}" '
                f'y2="{row:.1f}"/></g><rect x="{col - 4:.1f}" y="{row - 4:.1f}" width="9" height="9" '
                f'fill="{ACCENT}"/></svg>')


__all__ = ["LayerData", "LiveLayerExplorer", "layer_explorer", "layer_view_html"]
