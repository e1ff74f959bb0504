"""MNIST from the canonical IDX .gz files, verified by sha256 (thesis section 4.1; reproduction notes rn-mnist-data).

* intensities scaled to ``[0, 1]``; dynamic binarisation draws ``x ~ Bernoulli(intensity)`` each time a point is used;
* the thesis' trimming: drop pixels whose standard deviation over the training set is below 0.1 (784 -> 444 inputs).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from dgmlab.data.paths import DataError, RemoteFile, fetch

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

FILES = {
    "train_images": RemoteFile("mnist", "train-images-idx3-ubyte.gz",
                               "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422, MIRRORS),
    "train_labels": RemoteFile("mnist", "train-labels-idx1-ubyte.gz",
                               "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881, MIRRORS),
    "test_images": RemoteFile("mnist", "t10k-images-idx3-ubyte.gz",
                              "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877, MIRRORS),
    "test_labels": RemoteFile("mnist", "t10k-labels-idx1-ubyte.gz",
                              "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542, MIRRORS),
}

TRIM_THRESHOLD = 0.1


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (magic 2051 for images, 2049 for labels) into a uint8 array."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path} is not a readable gzip file ({err}); delete it and fetch a fresh copy") from err
    magic, = struct.unpack(">I", data[:4])
    ndim = {2051: 3, 2049: 1}.get(magic)
    if ndim is None:
        raise DataError(f"{path} is not an MNIST IDX file (magic number {magic})")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: {arr.size} values for shape {shape}")
    return arr.reshape(shape)


_CACHE: dict[str, tuple] = {}


def load_mnist_arrays() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train (60000, 784) float32 in [0,1], y_train int64, x_test (10000, 784), y_test)``, cached in memory."""
    if "mnist" not in _CACHE:
        arrays = {k: read_idx(fetch(spec)) for k, spec in FILES.items()}
        x_tr = torch.from_numpy(arrays["train_images"].reshape(-1, 784).astype(np.float32) / 255.0)
        x_te = torch.from_numpy(arrays["test_images"].reshape(-1, 784).astype(np.float32) / 255.0)
        y_tr = torch.from_numpy(arrays["train_labels"].astype(np.int64))
        y_te = torch.from_numpy(arrays["test_labels"].astype(np.int64))
        _CACHE["mnist"] = (x_tr, y_tr, x_te, y_te)
    return _CACHE["mnist"]


def trim_mask(x_train: torch.Tensor, threshold: float = TRIM_THRESHOLD) -> torch.Tensor:
    """Boolean mask of the pixels kept by the thesis' trimming: std over the training set above ``threshold``."""
    return x_train.std(dim=0) > threshold


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarisation: one draw ``Bernoulli(x)`` per pixel (x holds intensities in [0, 1]).

    The uniforms come from ``generator`` on its own device (the CPU when ``None``), so a generator on the GPU keeps
    the whole step there. The range check runs on CPU tensors only: on an accelerator it would make every batch wait
    for the device (``DataBundle.resident`` checks the data once when it moves it)."""
    if x.device.type == "cpu" and (x.min() < 0 or x.max() > 1):
        raise ValueError("binarize expects intensities in [0, 1]")
    where = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=where).to(x.device)
    return (u < x).to(x.dtype)


def untrim(x: torch.Tensor, mask: torch.Tensor | None, fill: float = 0.0) -> torch.Tensor:
    """Put trimmed vectors back on the 28x28 pixel grid (dropped pixels get ``fill``) for plotting."""
    if mask is None:
        return x
    out = torch.full((*x.shape[:-1], mask.numel()), fill, dtype=x.dtype, device=x.device)
    out[..., mask.to(x.device)] = x
    return out
