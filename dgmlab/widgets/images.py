"""Checked decoding and small-image encoding shared by the static and the live explorers.

A *decoder* here is any callable mapping latent codes to images: ``decode(z)`` for the latent-space explorer,
``generate(z, y)`` for the class-conditional one. It may return a tensor or array of shape ``(N, H*W)``,
``(N, H, W)`` or ``(N, 1, H, W)``, or a ``torch.distributions`` object (its mean is used: the pixel probabilities of
a Bernoulli likelihood). Values must be intensities in ``[0, 1]``.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Callable, Sequence

import numpy as np
import torch

# Decoders return floats; a little rounding above 1 or below 0 is clipped, anything more is a mistake (logits).
_RANGE_TOL = 1e-3


def pair(value, name: str, kind=float) -> tuple:
    """``value`` as a pair: a scalar ``v`` gives ``(v, v)``."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return kind(value), kind(value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a pair of numbers, got {value!r}") from None
    return kind(a), kind(b)


def check_image_shape(image_shape) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"image_shape must be a pair (height, width), e.g. (28, 28); got {image_shape!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"image_shape must hold positive sizes, got {image_shape!r}")
    return h, w


def infer_device(fn: Callable, device=None) -> torch.device:
    """The device latent codes are created on: ``device`` if given, else that of the module behind ``fn``
    (``fn`` itself or the object of a bound method such as ``model.decode``), else the CPU."""
    if device is not None:
        return torch.device(device)
    owner = _owner_module(fn)
    if owner is not None:
        for p in owner.parameters():
            return p.device
    return torch.device("cpu")


def infer_dtype(fn: Callable) -> torch.dtype:
    """The floating dtype latent codes are created with: that of the module behind ``fn``, else float32."""
    owner = _owner_module(fn)
    if owner is not None:
        for p in owner.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.float32


def _owner_module(fn: Callable) -> torch.nn.Module | None:
    owner = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def _to_numpy(out, name: str) -> np.ndarray:
    if isinstance(out, torch.distributions.Distribution):
        out = out.mean  # pixel probabilities for Bernoulli, means for Gaussian likelihoods
    if isinstance(out, torch.Tensor):
        return out.detach().to("cpu", torch.float32).numpy()
    if isinstance(out, np.ndarray):
        return out.astype(np.float32, copy=False)
    raise TypeError(f"{name} must be a torch.Tensor, a NumPy array or a torch distribution, "
                    f"got {type(out).__name__}")


def _shape_hint(per_item: int) -> str:
    side = math.isqrt(per_item)
    if side * side == per_item:
        return f"; pass image_shape=({side}, {side})"
    if per_item == 444:
        return ("; 444 values look like trimmed MNIST pixels: put them back on the 28x28 grid inside decode, "
                "e.g. lambda z: data.to_image(model_decode(z))")
    return ""


def call_decoder(fn: Callable, args: Sequence[torch.Tensor], image_shape: tuple[int, int], name: str,
                 z_dim: int) -> np.ndarray:
    """Call ``fn(*args)`` under ``torch.no_grad()`` and return checked images ``(N, H, W)`` in ``[0, 1]``.

    Raises ``ValueError`` naming the problem (and the fix) when the call fails, returns the wrong number of images,
    the wrong number of pixels, non-finite values or values outside ``[0, 1]``.
    """
    h, w = image_shape
    n = int(args[0].shape[0])
    owner = _owner_module(fn)
    was_training = owner.training if owner is not None else False
    try:
        if owner is not None:
            owner.eval()  # batch norm and dropout in eval mode: a single live code must decode deterministically
        with torch.no_grad():
            out = fn(*args)
    except Exception as err:  # a wrong z_dim usually surfaces as a matmul shape error deep inside the model
        shapes = ", ".join(str(tuple(a.shape)) for a in args)
        raise ValueError(f"{name} failed on inputs of shape {shapes} ({type(err).__name__}: {err}). "
                         f"Check that z_dim={z_dim} is the model's latent size and that {name} accepts a batch "
                         f"of latent codes.") from err
    finally:
        if owner is not None:
            owner.train(was_training)
    return check_images(out, n, image_shape, f"{name} was given {n} latent codes but", f"the output of {name}")


def check_images(out, n: int, image_shape: tuple[int, int], context: str, name: str) -> np.ndarray:
    """``out`` as checked images ``(n, H, W)`` in ``[0, 1]``; ``context`` starts the error message."""
    h, w = image_shape
    arr = _to_numpy(out, name)
    if arr.ndim == 0 or arr.shape[0] != n:
        raise ValueError(f"{context} returned shape {tuple(arr.shape)}; "
                         f"it must hold one image per item, shape ({n}, {h * w}) or ({n}, {h}, {w})")
    per_item = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
    if per_item != h * w:
        raise ValueError(f"{name} has shape {tuple(arr.shape)}: {per_item} values per item, but "
                         f"image_shape={tuple(image_shape)} needs {h * w}{_shape_hint(per_item)}")
    arr = arr.reshape(n, h, w)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite values; check the model (was it trained?)")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(f"{name} holds values in [{lo:.3g}, {hi:.3g}], but images must hold intensities in "
                         f"[0, 1]: return Bernoulli probabilities (torch.sigmoid of logits) or rescale the output")
    return np.clip(arr, 0.0, 1.0)


def colorize(images: np.ndarray, cmap: str | None) -> np.ndarray:
    """uint8 pixels: ``(..., H, W)`` grey levels for ``cmap`` None/"gray", else ``(..., H, W, 3)`` RGB."""
    if cmap in (None, "gray", "grey"):
        return np.round(images * 255).astype(np.uint8)
    if cmap in ("gray_r", "grey_r"):
        return np.round((1 - images) * 255).astype(np.uint8)
    import matplotlib

    rgba = matplotlib.colormaps[cmap](images)
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def upscale(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``(H, W[, C])`` pixels, so small digits stay crisp everywhere."""
    if factor <= 1:
        return pixels
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


def png_bytes(pixels: np.ndarray, colors: int | None = None) -> bytes:
    """Encode uint8 pixels ``(H, W)`` (grey), ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA) as an optimised PNG;
    ``colors`` reduces the picture to a palette of that many colours (a scatter plot shrinks about 5x)."""
    from PIL import Image  # Pillow ships with matplotlib

    image = Image.fromarray(np.ascontiguousarray(pixels))
    if colors is not None:
        image = image.quantize(colors=colors, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def tile(pixels: np.ndarray, n_cols: int, pad: int = 0, fill: int = 0) -> np.ndarray:
    """Arrange ``(N, H, W[, C])`` pixels row by row into one mosaic with ``pad`` pixels between images."""
    n, h, w = pixels.shape[:3]
    n_rows = -(-n // n_cols)
    out = np.full((n_rows * (h + pad) - pad, n_cols * (w + pad) - pad, *pixels.shape[3:]), fill, dtype=pixels.dtype)
    for k in range(n):
        i, j = divmod(k, n_cols)
        out[i * (h + pad): i * (h + pad) + h, j * (w + pad): j * (w + pad) + w] = pixels[k]
    return out
