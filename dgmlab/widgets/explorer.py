"""Latent-space explorers for any decoder: one call, a kernel-free view for the static book and a live one.

* :func:`latent_explorer` (chapter 3): walk a 2-D slice of the latent space of a VAE-like model and watch the
  decoding change; encoded test points can be drawn on the same map, coloured by class.
* :func:`class_conditional_explorer` (chapter 4): the "analogies" figure of the thesis (Maaløe, 2018, Fig. 4.2):
  each row one style ``z``, each column one class ``y``, decoded by ``p(x|y,z)``.

``mode`` picks what is shown: ``"static"`` (precomputed images + inline JS; works on the static site and in any
notebook front end, no kernel needed), ``"live"`` (ipywidgets; decodes on every change, needs a running kernel) or
``"auto"`` (both: the static view first, then the live controls). The environment variable
``DGMLAB_EXPLORER_MODE`` (``static``/``live``/``auto``) overrides ``"auto"``, e.g. to build a book without the
live half.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch

from dgmlab.widgets.images import (call_decoder, check_image_shape, check_images, colorize, infer_device,
                                   infer_dtype, pair, png_bytes, tile)
from dgmlab.widgets.static import StaticView, class_view_html, latent_view_html

MODES = ("auto", "static", "live")
_CHUNK = 1024  # latent codes decoded per call while precomputing


class ExplorerView:
    """Both halves of an explorer: ``static`` (a :class:`StaticView`) and ``live`` (an ipywidgets layout).

    Displaying it shows the static view, then the live controls. Outside IPython ``_repr_html_`` gives the
    static view alone.
    """

    def __init__(self, static: StaticView, live):
        self.static, self.live = static, live

    def _ipython_display_(self):
        from IPython.display import display

        display(self.static)
        display(self.live)

    def _repr_html_(self) -> str:
        return self.static.data


def resolve_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        env = os.environ.get("DGMLAB_EXPLORER_MODE", "").strip().lower()
        if env and env not in MODES:
            raise ValueError(f"DGMLAB_EXPLORER_MODE must be one of {MODES}, got {env!r}")
        mode = env or "auto"
    return mode


def _as_float_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float32)
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}") from None


def _check_extent(extent) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(lo, hi)`` for both explored coordinates, or ``((x0, x1), (y0, y1))``."""
    try:
        first = extent[0]
    except (TypeError, IndexError):
        raise ValueError(f"extent must be (lo, hi) or ((x0, x1), (y0, y1)), got {extent!r}") from None
    ext = (pair(extent[0], "extent[0]"), pair(extent[1], "extent[1]")) if np.ndim(first) else \
        (pair(extent, "extent"),) * 2
    for lo, hi in ext:
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"extent needs finite lo < hi, got {extent!r}")
    return ext


def _check_dims(dims, z_dim: int) -> tuple[int, int]:
    a, b = pair(dims, "dims", int)
    if a == b or not (0 <= a < z_dim and 0 <= b < z_dim):
        raise ValueError(f"dims must be two different latent coordinates in [0, {z_dim}), got {dims!r}")
    return a, b


def _check_z_dim(z_dim) -> int:
    if not isinstance(z_dim, (int, np.integer)) or isinstance(z_dim, bool) or z_dim < 2:
        raise ValueError(f"z_dim must be an integer >= 2 (the model's latent size; a 2-D map needs two "
                         f"coordinates), got {z_dim!r}")
    return int(z_dim)


def _decoder(decode: Callable, z_dim: int, image_shape, device, name: str = "decode") -> Callable:
    """``decode`` wrapped: codes ``(N, z_dim)`` on the model's device and dtype -> checked NumPy images, in chunks."""
    dtype = infer_dtype(decode)

    def run(z: torch.Tensor) -> np.ndarray:
        parts = [call_decoder(decode, [z[i:i + _CHUNK].to(device, dtype)], image_shape, name, z_dim)
                 for i in range(0, len(z), _CHUNK)]
        return np.concatenate(parts)
    return run


def latent_grid(z_dim: int, grid: tuple[int, int], extent, dims: tuple[int, int], base_z: torch.Tensor):
    """Latent codes of a ``gy x gx`` grid over ``dims`` (other coordinates from ``base_z``), row-major from the top
    row (largest second coordinate) down, so cell ``k = i*gx + j`` sits at row ``i``, column ``j`` of the map.

    Returns ``(z (gy*gx, z_dim), xs (gx,), ys_rows (gy,))``.
    """
    gx, gy = grid
    (x0, x1), (y0, y1) = extent
    xs = torch.linspace(x0, x1, gx)
    ys_rows = torch.linspace(y1, y0, gy)
    z = base_z.repeat(gx * gy, 1)
    z[:, dims[0]] = xs.repeat(gy)
    z[:, dims[1]] = ys_rows.repeat_interleave(gx)
    return z, xs.numpy(), ys_rows.numpy()


def _label_colors(n: int) -> list[str]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "hsv"]
    return [matplotlib.colors.to_hex(cmap(i if n <= 20 else i / n)) for i in range(n)]


def _scatter_rgba(xy: np.ndarray, colors: list[str], size_px: tuple[int, int], span, scale: int) -> np.ndarray:
    """Encoded points drawn on a transparent picture that covers exactly ``span = (xa, xb, ya, yb)``."""
    # A bare Figure with its own Agg canvas: no pyplot state, no backend switch in the reader's session.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w, h = size_px[0] * scale, size_px[1] * scale
    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    fig.patch.set_alpha(0)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.patch.set_alpha(0)
    ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=3.0 * scale ** 2, linewidths=0, alpha=0.8)
    ax.set_xlim(span[0], span[1])
    ax.set_ylim(span[2], span[3])
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())[:h, :w].copy()
    return rgba


def _points(points, labels, label_names, z_dim: int, dims, max_points: int):
    """Encoded points as ``(M, 2)`` coordinates on the map, one colour each, and the legend entries."""
    p = _as_float_tensor(points, "points").numpy()
    if p.ndim != 2 or p.shape[1] not in (2, z_dim):
        raise ValueError(f"points must have shape (M, {z_dim}) (encoded codes) or (M, 2) (already projected), "
                         f"got {tuple(p.shape)}")
    xy = p[:, list(dims)] if p.shape[1] == z_dim else p
    lab = None
    if labels is not None:
        lab = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
        if len(lab) != len(xy):
            raise ValueError(f"labels must hold one label per point: {len(lab)} labels for {len(xy)} points")
    if len(xy) > max_points:  # a fixed subsample keeps the page small and the picture the same from run to run
        keep = np.sort(np.random.default_rng(0).choice(len(xy), max_points, replace=False))
        xy = xy[keep]
        lab = lab[keep] if lab is not None else None
    if lab is None:
        return xy, ["#1f77b4"] * len(xy), None
    classes = np.unique(lab)
    palette = _label_colors(len(classes))
    index = {c: i for i, c in enumerate(classes.tolist())}
    colors = [palette[index[c]] for c in lab.tolist()]

    def name(c):
        if label_names is None:
            return str(c)
        return str(label_names[c])
    legend = [(name(c), palette[i]) for i, c in enumerate(classes.tolist())]
    return xy, colors, legend


def _gray_to_rgb(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)


def latent_explorer(decode: Callable, z_dim: int = 2, *, grid=(15, 15), extent=(-3, 3), image_shape=(28, 28),
                    base_z=None, dims=(0, 1), mode: str = "auto", points=None, labels=None,
                    label_names: Sequence[str] | None = None, title: str = "Latent space explorer",
                    cmap: str | None = None, device=None, cell_px: int | None = None, big_px: int = 168,
                    max_points: int = 2000):
    """Explore a 2-D slice of a latent space through a decoder.

    Args:
        decode: maps a float tensor ``(N, z_dim)`` to images ``(N, H*W)``, ``(N, H, W)`` or ``(N, 1, H, W)`` in
            ``[0, 1]`` (or to a torch distribution, whose mean is used), e.g. ``lambda z: model.decode(z).mean``.
            It runs under ``torch.no_grad()``; a module (or a bound method of one) is put in eval mode meanwhile.
        z_dim: the latent size. Codes start at ``base_z`` (default zeros: the prior mean) and the two coordinates
            ``dims`` vary over ``extent`` (``(lo, hi)`` or ``((x0, x1), (y0, y1))``) on a ``grid`` of cells.
        image_shape: ``(H, W)`` of one decoding.
        mode: ``"static"``, ``"live"`` or ``"auto"`` (both; see the module docstring).
        points, labels: optional encoded test points ``(M, z_dim)`` (or ``(M, 2)``) drawn on the map, coloured by
            ``labels`` (named by ``label_names[label]``); at most ``max_points`` are drawn.
        cmap: matplotlib colour map for the images (default grey: 0 black, 1 white).
        device: where latent codes are created (default: the device of the module behind ``decode``, else CPU).
        cell_px, big_px: on-page size of one map cell (default: the image width, shrunk for big grids) and of the
            enlarged decoding.

    Returns:
        a :class:`~dgmlab.widgets.static.StaticView` (``"static"``), a
        :class:`~dgmlab.widgets.live.LiveLatentExplorer` (``"live"``) or an :class:`ExplorerView` holding both.
    """
    mode = resolve_mode(mode)
    z_dim = _check_z_dim(z_dim)
    image_shape = check_image_shape(image_shape)
    dims = _check_dims(dims, z_dim)
    gx, gy = pair(grid, "grid", int)
    if not (2 <= gx <= 60 and 2 <= gy <= 60):
        raise ValueError(f"grid must have between 2 and 60 cells per side, got {grid!r}")
    ext = _check_extent(extent)
    base = torch.zeros(z_dim) if base_z is None else _as_float_tensor(base_z, "base_z").reshape(-1)
    if base.numel() != z_dim:
        raise ValueError(f"base_z must hold z_dim={z_dim} values, got {base.numel()}")
    run = _decoder(decode, z_dim, image_shape, infer_device(decode, device))

    z, xs, ys_rows = latent_grid(z_dim, (gx, gy), ext, dims, base)
    pixels = colorize(run(z), cmap)
    h, w = image_shape
    cell = cell_px or max(8, min(w, 420 // max(gx, gy)))
    map_size = (gx * cell, gy * max(1, round(cell * h / w)))  # pixels of the map on the page
    dx, dy = (xs[-1] - xs[0]) / (gx - 1), (ys_rows[0] - ys_rows[-1]) / (gy - 1)
    span = (xs[0] - dx / 2, xs[-1] + dx / 2, ys_rows[-1] - dy / 2, ys_rows[0] + dy / 2)
    names = (f"z[{dims[0]}]", f"z[{dims[1]}]")

    scatter, legend, note = None, None, ""
    if points is not None:
        xy, colors, legend = _points(points, labels, label_names, z_dim, dims, max_points)
        scatter = _scatter_rgba(xy, colors, map_size, span, scale=2)
        outside = int(np.sum((xy[:, 0] < span[0]) | (xy[:, 0] > span[1]) | (xy[:, 1] < span[2]) | (xy[:, 1] > span[3])))
        note = f"{len(xy)} encoded points drawn" + (f", {outside} of them outside the map." if outside else ".")
    elif labels is not None:
        raise ValueError("labels were given without points; pass the encoded points as points=...")

    static = live = None
    if mode in ("static", "auto"):
        static = latent_view_html(pixels, xs, ys_rows, names, title=title, cell_px=cell,
                                  big_px=big_px, scatter_png=None if scatter is None else png_bytes(scatter, colors=64),
                                  legend=legend, note=note)
    if mode in ("live", "auto"):
        from dgmlab.widgets.live import LiveLatentExplorer

        map_rgb = _live_map(pixels, gx, map_size, scatter)
        live_note = ("Live: decodes with the model on every slider move; needs a running Python kernel "
                     "(on the static book page use the precomputed view above)." if mode == "auto" else "")
        live = LiveLatentExplorer(run, base, dims, ext, map_rgb, span, title=f"{title} (live)", cmap=cmap,
                                  big_px=big_px, note=live_note)
    if mode == "static":
        return static
    if mode == "live":
        return live
    return ExplorerView(static, live)


def _live_map(pixels: np.ndarray, gx: int, size: tuple[int, int], scatter: np.ndarray | None) -> np.ndarray:
    """uint8 RGB picture of the latent plane for the live view: the mosaic of decodings, under the points."""
    from PIL import Image

    mosaic = _gray_to_rgb(tile(pixels, gx))
    mosaic = np.asarray(Image.fromarray(mosaic).resize(size, Image.NEAREST)).astype(np.float32)
    if scatter is None:
        return mosaic.astype(np.uint8)
    pts = np.asarray(Image.fromarray(scatter).resize(size, Image.BILINEAR)).astype(np.float32) / 255
    faded = 0.3 * mosaic + 0.7 * 255  # as in the static view: points over pale decodings
    alpha = pts[..., 3:]
    return (alpha * pts[..., :3] * 255 + (1 - alpha) * faded).astype(np.uint8)


def class_conditional_explorer(generate: Callable, styles, n_classes: int, image_shape=(28, 28),
                               class_names: Sequence[str] | None = None, *, style_images=None,
                               style_names: Sequence[str] | None = None, mode: str = "auto",
                               title: str = "Class-conditional generation", extent=(-3, 3),
                               cmap: str | None = None, device=None, thumb_px: int | None = None,
                               big_px: int = 56):
    """Decode a set of styles once per class: the thesis' "analogies" (Maaløe, 2018, Fig. 4.2;
    Appendix A, Fig. 3; reproduction notes rn-analogies).

    Args:
        generate: ``generate(z, y) -> images``: ``z`` float ``(N, z_dim)``, ``y`` long ``(N,)`` class indices;
            images as for :func:`latent_explorer` (``(N, H*W)``, ``(N, H, W)``, ... in ``[0, 1]``).
        styles: ``(S, z_dim)`` style codes: test digits encoded by ``q(z|x, y)``, or draws from ``p(z)``.
        n_classes: number of classes (columns); ``class_names`` label them.
        style_images: optional ``(S, H*W)`` or ``(S, H, W)`` images the styles were encoded from (a "source"
            column); ``style_names`` label the styles.
        mode: ``"static"``, ``"live"`` or ``"auto"`` (both).
        extent: range of the live view's slider, which shifts one latent coordinate of the chosen style.

    The static view holds all ``S x C`` decodings (one batched ``generate`` call); a click on a row shows that
    style for every class, large. The live view picks a style and moves one latent coordinate of it.
    """
    mode = resolve_mode(mode)
    image_shape = check_image_shape(image_shape)
    if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, bool) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    z = _as_float_tensor(styles, "styles")
    if z.dim() != 2 or len(z) < 1:
        raise ValueError(f"styles must have shape (S, z_dim) with S >= 1, got {tuple(z.shape)}")
    n_styles, z_dim = z.shape
    if n_styles > 100:
        raise ValueError(f"{n_styles} styles would make a very large page; pass at most 100 (e.g. styles[:10])")
    class_names = [str(c) for c in range(n_classes)] if class_names is None else [str(c) for c in class_names]
    if len(class_names) != n_classes:
        raise ValueError(f"class_names must hold n_classes={n_classes} names, got {len(class_names)}")
    style_names = [f"style {i}" for i in range(n_styles)] if style_names is None else [str(s) for s in style_names]
    if len(style_names) != n_styles:
        raise ValueError(f"style_names must hold one name per style ({n_styles}), got {len(style_names)}")
    sources = None
    if style_images is not None:
        sources = check_images(style_images, n_styles, image_shape, f"style_images for {n_styles} styles",
                               "style_images")
    dev, dtype = infer_device(generate, device), infer_dtype(generate)

    def run(zz: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        return call_decoder(generate, [zz.to(dev, dtype), y.to(dev)], image_shape, "generate", z_dim)

    static = live = None
    if mode in ("static", "auto"):
        # Every style paired with every class in one batched call: row-major (style, class).
        zz = z.repeat_interleave(n_classes, dim=0)
        y = torch.arange(n_classes).repeat(n_styles)
        images = run(zz, y).reshape(n_styles, n_classes, *image_shape)
        h, w = image_shape
        static = class_view_html(colorize(images, cmap), class_names, style_names, title=title,
                                 thumb_px=thumb_px or w, big_px=big_px,
                                 sources=None if sources is None else colorize(sources, cmap))
    if mode in ("live", "auto"):
        from dgmlab.widgets.live import LiveClassExplorer

        live_note = ("Live: generates with the model on every change; needs a running Python kernel "
                     "(on the static book page use the precomputed view above)." if mode == "auto" else "")
        live = LiveClassExplorer(run, z, n_classes, class_names, style_names, title=f"{title} (live)",
                                 extent=pair(extent, "extent"), cmap=cmap, big_px=big_px, note=live_note)
    if mode == "static":
        return static
    if mode == "live":
        return live
    return ExplorerView(static, live)
