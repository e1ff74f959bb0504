"""Live explorers: ipywidgets controls that decode with the model on every change (need a running kernel).

The classes keep their update logic in plain methods (``update``, ``current_z``) so it can be tested without a
front end: setting a slider's ``value`` runs the same callback a browser would trigger.
"""

from __future__ import annotations

from typing import Callable

import ipywidgets as widgets
import numpy as np
import torch

from dgmlab.widgets.images import colorize, png_bytes, upscale

ACCENT = "#e4572e"


def _note(text: str) -> widgets.HTML:
    return widgets.HTML(f'<span style="font-size:12px;opacity:.8">{text}</span>')


class LiveLatentExplorer(widgets.VBox):
    """Sliders over two latent dimensions (plus, for ``z_dim > 2``, the others in a folded panel), the decoded
    image and a map of the latent plane with a cross-hair at the current code.

    The map picture is sent to the browser once; a slider move only sends the new decoding (a few hundred bytes)
    and a small SVG cross-hair laid over the map in the same grid cell, so updates stay quick.

    Args:
        decode: checked decoder, latent codes ``(N, z_dim)`` -> NumPy images ``(N, H, W)`` in [0, 1].
        base_z: starting code ``(z_dim,)``; ``dims`` are the two explored coordinates.
        extent: ``((x0, x1), (y0, y1))`` slider ranges of the explored coordinates.
        map_rgb: uint8 ``(Hm, Wm, 3)`` picture of the latent plane spanning ``map_span = (xa, xb, ya, yb)``.
    """

    def __init__(self, decode: Callable[[torch.Tensor], np.ndarray], base_z: torch.Tensor, dims: tuple[int, int],
                 extent, map_rgb: np.ndarray, map_span, *, title: str, cmap=None, big_px: int = 168,
                 note: str = ""):
        self._decode, self.dims, self._cmap = decode, dims, cmap
        self._base = base_z.clone()
        self._map_span, self._map_size = map_span, map_rgb.shape[:2]
        self.n_decodes = 0
        z_dim = base_z.numel()
        self.sliders = [self._slider(d, *extent[k]) for k, d in enumerate(dims)]
        others = [d for d in range(z_dim) if d not in dims]
        lo = min(e[0] for e in extent)
        hi = max(e[1] for e in extent)
        self.other_sliders = [self._slider(d, lo, hi) for d in others]
        self._big_px = big_px
        self.image = widgets.Image(format="png")
        h, w = self._map_size
        gray = bool((map_rgb == map_rgb[..., :1]).all())
        # Grey maps go out as one-channel PNGs; colour ones (points) as a 128-colour palette: ~5x smaller.
        self.map_image = widgets.Image(value=png_bytes(map_rgb[..., 0] if gray else map_rgb,
                                                       colors=None if gray else 128),
                                       format="png", width=w, height=h,
                                       layout=widgets.Layout(grid_area="map", margin="0"))
        self.crosshair = widgets.HTML(layout=widgets.Layout(grid_area="map", margin="0", width=f"{w}px",
                                                            height=f"{h}px"))
        map_box = widgets.GridBox([self.map_image, self.crosshair], layout=widgets.Layout(
            grid_template_areas='"map"', grid_template_columns=f"{w}px", grid_template_rows=f"{h}px"))
        self.readout = widgets.HTML()
        for s in self.sliders + self.other_sliders:
            s.observe(self._on_change, names="value")
        controls = [*self.sliders]
        if self.other_sliders:
            panel = widgets.Accordion(children=[widgets.VBox(self.other_sliders)])
            panel.set_title(0, f"other latent dimensions ({len(others)})")
            panel.selected_index = None
            controls.append(panel)
        head = [widgets.HTML(f"<b>{title}</b>")] + ([_note(note)] if note else [])
        super().__init__(children=[*head, widgets.HBox([
            widgets.VBox([map_box, *controls]),
            widgets.VBox([self.image, self.readout]),
        ])])
        self.update()

    def _slider(self, d: int, lo: float, hi: float) -> widgets.FloatSlider:
        value = float(self._base[d])
        lo, hi = min(lo, value), max(hi, value)
        return widgets.FloatSlider(value=value, min=lo, max=hi, step=(hi - lo) / 200, description=f"z[{d}]",
                                   continuous_update=True, readout_format=".2f")

    def current_z(self) -> torch.Tensor:
        """The latent code the sliders describe, shape ``(1, z_dim)``."""
        z = self._base.clone()
        for s, d in zip(self.sliders, self.dims):
            z[d] = s.value
        for s, d in zip(self.other_sliders, [d for d in range(z.numel()) if d not in self.dims]):
            z[d] = s.value
        return z.unsqueeze(0)

    def _on_change(self, change) -> None:
        self.update()

    def update(self) -> None:
        """Decode the current code and redraw the image, the map cross-hair and the read-out."""
        z = self.current_z()
        image = self._decode(z)[0]
        self.n_decodes += 1
        pixels = colorize(image, self._cmap)
        # Enlarged in NumPy (nearest neighbour) so the browser does not blur the few pixels of a digit.
        self.image.value = png_bytes(upscale(pixels, max(1, round(self._big_px / pixels.shape[1]))))
        self.crosshair.value = self._crosshair(float(z[0, self.dims[0]]), float(z[0, self.dims[1]]))
        a, b = self.dims
        self.readout.value = (f"z[{a}] = {float(z[0, a]):.2f}, z[{b}] = {float(z[0, b]):.2f}"
                              f"<br><small>{self.n_decodes} decodings so far</small>")

    def _crosshair(self, x: float, y: float) -> str:
        """SVG lines through the map position of ``(x, y)`` and a square on it (clipped to the map)."""
        xa, xb, ya, yb = self._map_span
        h, w = self._map_size
        col = float(np.clip((x - xa) / (xb - xa) * w, 0, w))
        row = float(np.clip((yb - y) / (yb - ya) * h, 0, h))
        return (f'<svg width="{w}" height="{h}" style="display:block;pointer-events:none">'
                f'<g stroke="{ACCENT}" stroke-opacity="0.7">'
                f'<line x1="{col:.1f}" y1="0" x2="{col:.1f}" y2="{h}"/><line x1="0" y1="{row:.1f}" x2="{w}" '
                f'y2="{row:.1f}"/></g><rect x="{col - 4:.1f}" y="{row - 4:.1f}" width="9" height="9" '
                f'fill="{ACCENT}"/></svg>')


class LiveClassExplorer(widgets.VBox):
    """A style picker, a latent-dimension picker and a slider that shifts the chosen style along that dimension;
    shows the result decoded once per class, recomputed on every change.

    The slider holds a *shift* (0 = the style itself), so the view starts exactly on the stored style whatever the
    slider's step.

    Args:
        generate: checked generator ``(z (N, z_dim), y (N,) long) -> (N, H, W)`` NumPy images in [0, 1].
        styles: ``(S, z_dim)`` style codes; ``style_names`` label them in the picker.
        extent: range of the shift.
    """

    def __init__(self, generate: Callable[[torch.Tensor, torch.Tensor], np.ndarray], styles: torch.Tensor,
                 n_classes: int, class_names: list[str], style_names: list[str], *, title: str,
                 extent=(-3.0, 3.0), cmap=None, big_px: int = 56, note: str = ""):
        self._generate, self._styles, self._cmap = generate, styles, cmap
        self.n_classes = n_classes
        self.n_decodes = 0
        z_dim = styles.shape[1]
        self.style_picker = widgets.Dropdown(options=[(n, i) for i, n in enumerate(style_names)], value=0,
                                             description="style")
        self.dim_picker = widgets.Dropdown(options=[(f"z[{d}]", d) for d in range(z_dim)], value=0,
                                           description="latent dim")
        lo, hi = float(extent[0]), float(extent[1])
        self.slider = widgets.FloatSlider(value=0.0, min=min(lo, 0.0), max=max(hi, 0.0), step=(hi - lo) / 200,
                                          description="shift", continuous_update=True, readout_format="+.2f")
        self._big_px = big_px
        self.images = [widgets.Image(format="png") for _ in range(n_classes)]
        cells = [widgets.VBox([img, widgets.HTML(f'<div style="text-align:center;font-size:11px">{name}</div>')],
                              layout=widgets.Layout(align_items="center"))
                 for img, name in zip(self.images, class_names)]
        self.readout = widgets.HTML()
        self._syncing = False
        self.style_picker.observe(self._on_pick, names="value")
        self.dim_picker.observe(self._on_pick, names="value")
        self.slider.observe(self._on_value, names="value")
        head = [widgets.HTML(f"<b>{title}</b>")] + ([_note(note)] if note else [])
        super().__init__(children=[*head, widgets.HBox([self.style_picker, self.dim_picker]), self.slider,
                                   widgets.HBox(cells, layout=widgets.Layout(flex_flow="row wrap")), self.readout])
        self.update()

    def current_z(self) -> torch.Tensor:
        """The chosen style shifted by the slider value along the chosen dimension, shape ``(1, z_dim)``."""
        z = self._styles[self.style_picker.value].clone()
        z[self.dim_picker.value] += self.slider.value
        return z.unsqueeze(0)

    def _on_pick(self, change) -> None:
        # A new style or dimension starts unshifted (one redraw, not two).
        self._syncing = True
        try:
            self.slider.value = 0.0
        finally:
            self._syncing = False
        self.update()

    def _on_value(self, change) -> None:
        if not self._syncing:
            self.update()

    def update(self) -> None:
        """Decode the current style once per class (one batched call) and redraw the row."""
        z = self.current_z().expand(self.n_classes, -1)
        y = torch.arange(self.n_classes, device=z.device)
        images = self._generate(z, y)
        self.n_decodes += 1
        for img, pixels in zip(self.images, colorize(images, self._cmap)):
            img.value = png_bytes(upscale(pixels, max(1, round(self._big_px / pixels.shape[1]))))
        d = self.dim_picker.value
        stored = float(self._styles[self.style_picker.value, d])
        self.readout.value = (f"{self.style_picker.label}: z[{d}] = {stored + self.slider.value:.2f} "
                              f"(stored value {stored:.2f}, shift {self.slider.value:+.2f})")
