"""Finding, verifying and (where a network exists) downloading data files.

Lookup order for a file: ``$DGMLAB_DATA/<dataset>/``, then the cache ``$DGMLAB_CACHE`` (default
``~/.cache/dgmlab``)``/<dataset>/``, then a download into the cache from the usual mirrors. Every file is checked
against its sha256 before use; the data folder is only ever read (it may be read-only). Downloads are written to a
temporary file and renamed into place, so a half-written file never appears under the final name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class DataError(RuntimeError):
    """A data file is missing, corrupt or cannot be fetched; the message says where we looked and how to fix it."""


@dataclass(frozen=True)
class RemoteFile:
    dataset: str
    name: str
    sha256: str
    size: int
    mirrors: tuple[str, ...]


def data_dirs(dataset: str) -> list[Path]:
    """The folders searched for ``dataset``, in order: ``$DGMLAB_DATA/<dataset>``, then the cache."""
    dirs = []
    if os.environ.get("DGMLAB_DATA"):
        dirs.append(Path(os.environ["DGMLAB_DATA"]).expanduser() / dataset)
    dirs.append(cache_dir() / dataset)
    return dirs


def cache_dir() -> Path:
    """A writable cache folder (``$DGMLAB_CACHE``, default ``~/.cache/dgmlab``)."""
    return Path(os.environ.get("DGMLAB_CACHE", Path.home() / ".cache" / "dgmlab")).expanduser()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, spec: RemoteFile) -> None:
    """Raise :class:`DataError` unless ``path`` has the expected size and sha256."""
    size = path.stat().st_size
    if size != spec.size:
        raise DataError(f"{path} is corrupt or truncated: {size} bytes, expected {spec.size}. "
                        f"Delete it and fetch a fresh copy (or point DGMLAB_DATA at a verified copy).")
    digest = sha256(path)
    if digest != spec.sha256:
        raise DataError(f"{path} is corrupt: sha256 {digest[:16]}..., expected {spec.sha256[:16]}.... "
                        f"Delete it and fetch a fresh copy (or point DGMLAB_DATA at a verified copy).")


def fetch(spec: RemoteFile, download: bool = True) -> Path:
    """Return the path of a verified copy of ``spec``, downloading it into the cache if no copy is found.

    A copy that exists but fails verification is reported and never used.
    """
    looked = []
    for folder in data_dirs(spec.dataset):
        path = folder / spec.name
        looked.append(str(folder))
        if path.exists():
            verify(path, spec)
            return path
    if download and os.environ.get("DGMLAB_OFFLINE", "") not in {"1", "true"}:
        target = cache_dir() / spec.dataset / spec.name
        errors = []
        for url in spec.mirrors:
            try:
                _download(url + spec.name, target, spec)
                return target
            except (OSError, DataError) as err:  # network down, mirror gone, or bad bytes
                errors.append(f"{url}: {err}")
        detail = "; ".join(errors)
    else:
        detail = "downloads disabled"
    raise DataError(
        f"{spec.dataset} file {spec.name} was not found in {', '.join(looked)} and could not be downloaded "
        f"({detail}). Fix: set DGMLAB_DATA to a folder holding {spec.dataset}/{spec.name} "
        f"(e.g. DGMLAB_DATA=$HOME/data with $HOME/data/mnist/*.gz), or run once on a machine with internet access.")


def _download(url: str, target: Path, spec: RemoteFile) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        verify(Path(tmp), spec)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
