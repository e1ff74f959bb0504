"""Assembling the simulated recording: days per class, sensor noise, the on-disk cache and train/test tensors."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pvlib
import torch

from dgmlab.data.paths import DataError, cache_dir, data_dirs, sha256
from dgmlab.data.pv import conditions, electrical, weather

SIM_VERSION = 1
SENSORS = ("I", "V", "G", "TExt", "TMod", "W")
INPUT_SETS = {"simple": ("I", "V"), "complex": SENSORS}
G_ON = 20.0          # plane-of-array irradiance [W/m^2] below which the inverter is assumed off
P_MIN = 5.0          # string power [W] below which the inverter does not log
DAY_WINDOW = ("02-01", "04-15")
NOISE = {"I_rel": 0.01, "I_abs": 0.005, "V_rel": 0.01, "G_rel": 0.03, "G_abs": 2.0, "T": 0.3, "W": 0.2}


@dataclass
class PVData:
    """A simulated recording: ``x`` (n, 6) in the order of ``sensors``, integer labels ``y`` indexing
    ``classes``, ``day`` (an id per simulated day; every day holds one class) and ``time`` (UTC, seconds)."""

    x: np.ndarray
    y: np.ndarray
    day: np.ndarray
    time: np.ndarray
    classes: tuple = conditions.CLASSES
    sensors: tuple = SENSORS
    seed: int = 0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)


class PVSplit(NamedTuple):
    """Standardised train/test tensors (the first four fields unpack like the other datasets' arrays)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    sensors: tuple
    classes: tuple
    day_train: torch.Tensor
    day_test: torch.Tensor


def _dates(rng: np.random.Generator):
    """Endless supply of distinct dates: the February-April window of successive years, each year shuffled."""
    year = 2017
    while True:
        days = pd.date_range(f"{year}-{DAY_WINDOW[0]}", f"{year}-{DAY_WINDOW[1]}", freq="D")
        for i in rng.permutation(len(days)):
            yield days[i].strftime("%Y-%m-%d")
        year += 1


def _simulate_day_weather(label: str, date: str, rng: np.random.Generator):
    lay = conditions.layout(label, rng)
    sky = conditions.sky_type(label, rng)
    w = weather.simulate_day(date, sky, rng, snow_on_ground=label == "S")
    if label == "S":  # a snow day is cold; snow on the modules holds them near 0 degC while it melts
        w.temp_air = w.temp_air + min(0.0, 0.5 - w.temp_air.max()) - rng.uniform(0.0, 3.0)
        heat = weather.module_temperature(w.poa_global * lay.snow_transmittance, w.temp_air, w.wind_speed)
        w.temp_module = np.minimum(heat, 0.2)
    return lay, w


def _generate(seed: int, n_samples: int) -> PVData:
    counts = conditions.class_counts(n_samples)
    rng = np.random.default_rng(seed)
    dates = _dates(rng)
    rows, day_id = [], 0
    for k, label in enumerate(conditions.CLASSES):
        need, days, pool = int(counts[k]), [], 0
        while pool < 1.2 * need + 10 or len(days) < 2:
            date = next(dates)
            lay, w = _simulate_day_weather(label, date, rng)
            on = np.flatnonzero(w.poa_global >= G_ON)
            days.append((day_id, lay, w, on))
            pool += len(on)
            day_id += 1
        cand = np.concatenate([np.stack([np.full(len(on), j), on], 1) for j, (_, _, _, on) in enumerate(days)])
        cand = cand[rng.permutation(len(cand))]
        kept, start = [], 0
        while sum(len(r) for r in kept) < need and start < len(cand):
            chunk = cand[start:start + int(1.1 * (need - sum(len(r) for r in kept))) + 5]
            start += len(chunk)
            for j in np.unique(chunk[:, 0]):
                did, lay, w, _ = days[j]
                idx = np.sort(chunk[chunk[:, 0] == j, 1])
                i_mp, v_mp = electrical.max_power_point(lay.irradiance(w.poa_global[idx], w.poa_diffuse[idx]),
                                                        w.temp_module[idx], lay.counts, lay.series_resistance)
                ok = (i_mp * v_mp >= P_MIN) & (v_mp > 0)
                t = (w.time[idx] - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta("1s")
                kept.append(np.column_stack([i_mp, v_mp, w.poa_global[idx], w.temp_air[idx], w.temp_module[idx],
                                             w.wind_speed[idx], np.full(len(idx), k), np.full(len(idx), did),
                                             np.asarray(t, float)])[ok])
        block = np.concatenate(kept)
        if len(block) < need:
            raise RuntimeError(f"could not simulate {need} minutes of class {label}")
        rows.append(block[rng.permutation(len(block))[:need]])
    data = np.concatenate(rows)
    data = data[np.argsort(data[:, 8], kind="stable")]
    x = data[:, :6].copy()
    n = len(x)
    x[:, 0] = x[:, 0] * (1 + NOISE["I_rel"] * rng.standard_normal(n)) + NOISE["I_abs"] * rng.standard_normal(n)
    x[:, 1] = x[:, 1] * (1 + NOISE["V_rel"] * rng.standard_normal(n))
    x[:, 2] = np.maximum(x[:, 2] * (1 + NOISE["G_rel"] * rng.standard_normal(n))
                         + NOISE["G_abs"] * rng.standard_normal(n), 0.0)
    x[:, 3:5] += NOISE["T"] * rng.standard_normal((n, 2))
    x[:, 5] = np.maximum(x[:, 5] + NOISE["W"] * rng.standard_normal(n), 0.0)
    meta = {"sim_version": SIM_VERSION, "pvlib": pvlib.__version__, "n_samples": n_samples, "seed": seed}
    return PVData(x.astype(np.float32), data[:, 6].astype(np.int64), data[:, 7].astype(np.int64),
                  data[:, 8].astype(np.int64), seed=seed, meta=meta)


def cache_name(seed: int, n_samples: int) -> str:
    key = json.dumps({"v": SIM_VERSION, "pvlib": pvlib.__version__, "seed": seed, "n": n_samples}, sort_keys=True)
    return f"pv_seed{seed}_n{n_samples}_{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"


def _check_args(seed, n_samples) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(n_samples, (int, np.integer)) or isinstance(n_samples, bool):
        raise TypeError(f"n_samples must be an integer, got {n_samples!r}")
    if not 10 <= n_samples <= 200_000:
        raise ValueError(f"n_samples must be between 10 (one per class) and 200000, got {n_samples}")


def _read(path: Path) -> PVData:
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    digest = sha256(path)
    if digest != meta.get("sha256"):
        raise DataError(f"{path} is corrupt: sha256 {digest[:16]}..., its record {side.name} says "
                        f"{str(meta.get('sha256'))[:16]}.... Delete both files; the data will be simulated again.")
    with np.load(path) as f:
        return PVData(f["x"], f["y"], f["day"], f["time"], seed=meta["seed"], meta=meta["meta"])


def _write(path: Path, data: PVData) -> None:
    from dgmlab.checkpoints import atomic_write_bytes, atomic_write_json

    buf = io.BytesIO()
    np.savez(buf, x=data.x, y=data.y, day=data.day, time=data.time)
    payload = buf.getvalue()
    atomic_write_bytes(path, lambda f: f.write(payload))
    atomic_write_json(path.with_suffix(".json"), {"sha256": hashlib.sha256(payload).hexdigest(), "seed": data.seed,
                                                  "meta": data.meta, "classes": list(data.classes),
                                                  "sensors": list(data.sensors)})


def simulate(seed: int = 0, n_samples: int = 15000, cache: bool = True) -> PVData:
    """The simulated PV recording for ``seed`` (deterministic), read from the cache when a verified copy exists.

    Looks in ``$DGMLAB_DATA/pv/`` then ``$DGMLAB_CACHE/pv/``; a new simulation is written to the cache with a
    sha256 record beside it. A copy whose checksum does not match raises :class:`DataError`.
    """
    _check_args(seed, n_samples)
    seed, n_samples = int(seed), int(n_samples)
    if not cache:
        return _generate(seed, n_samples)
    name = cache_name(seed, n_samples)
    for folder in data_dirs("pv"):
        path = folder / name
        if path.exists() and path.with_suffix(".json").exists():
            return _read(path)
    data = _generate(seed, n_samples)
    try:
        _write(cache_dir() / "pv" / name, data)
    except OSError as err:
        warnings.warn(f"could not cache the PV simulation in {cache_dir() / 'pv'}: {err}")
    return data


def split_indices(data: PVData, test_fraction: float = 0.2, split: str = "random", seed: int = 0):
    """Train and test indices: ``random`` minutes (the thesis' protocol), or whole ``day``s held out per class."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    n = len(data)
    if split == "random":
        perm = rng.permutation(n)
        n_test = int(round(test_fraction * n))
        test = np.zeros(n, bool)
        test[perm[:n_test]] = True
    elif split == "day":
        test = np.zeros(n, bool)
        for c in range(len(data.classes)):
            days = np.unique(data.day[data.y == c])
            if len(days) < 2:
                raise ValueError(f"class {data.classes[c]} has a single day; a split by day needs at least two")
            k = min(max(1, int(round(test_fraction * len(days)))), len(days) - 1)
            test |= np.isin(data.day, rng.choice(days, size=k, replace=False))
    else:
        raise ValueError(f"split must be 'random' or 'day', got {split!r}")
    return np.flatnonzero(~test), np.flatnonzero(test)


def load_pv_arrays(seed: int = 0, inputs: str = "simple", n_samples: int = 15000, test_fraction: float = 0.2,
                   split: str = "random", split_seed: int | None = None, cache: bool = True) -> PVSplit:
    """Train/test tensors of the simulated recording, standardised per sensor with training statistics.

    ``inputs``: ``"simple"`` = (I, V) or ``"complex"`` = (I, V, G, TExt, TMod, W) (thesis chapter 6).
    ``split_seed`` (default ``seed``) draws the split.
    """
    if inputs not in INPUT_SETS:
        raise ValueError(f"inputs must be one of {sorted(INPUT_SETS)}, got {inputs!r}")
    data = simulate(seed, n_samples, cache=cache)
    tr, te = split_indices(data, test_fraction, split, seed if split_seed is None else split_seed)
    cols = [SENSORS.index(s) for s in INPUT_SETS[inputs]]
    x = torch.from_numpy(data.x[:, cols].astype(np.float32))
    mean, std = x[tr].mean(0), x[tr].std(0).clamp_min(1e-6)
    x = (x - mean) / std
    y, day = torch.from_numpy(data.y), torch.from_numpy(data.day)
    return PVSplit(x[tr], y[tr], x[te], y[te], mean, std, INPUT_SETS[inputs], data.classes, day[tr], day[te])
