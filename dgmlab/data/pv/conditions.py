"""The ten conditions of the thesis' Table 6.1 (Maaløe et al., appendix D, Table II) and how each is simulated.

Labels, in the table's order, with their share of the recorded minutes:

====== ======= ===========================================================================================
label  share   simulated as
====== ======= ===========================================================================================
PS7    10.68 % the bottom cell row of every module shaded (2 cells in each of the 24 substrings); the strip
               covers 70 % of each of those cells (about 7 % of the module area; the meaning of "7" is not
               given in the thesis, this reading is an assumption)
RS4    10.18 % a 4 ohm resistor added in series with the string
PS50   10.83 % half of one substring (10 of its 20 cells) fully shaded
RS8     5.11 % an 8 ohm resistor added in series
PSRS   10.93 % PS50 and RS4 together
PS75   10.60 % half of one substring plus a quarter of another (10 + 5 cells) fully shaded
C       4.60 % a cloudy day, no fault
S      27.64 % snow on the modules: substrings under thin or thick snow or snow-free, varying by day
N       4.67 % a clear day, no fault
IV      4.78 % 75 % of the area of every cell of 6 substrings (two whole modules) shaded
====== ======= ===========================================================================================

A shaded part of a cell (opaque object) receives no beam light and ``SHADE_DIFFUSE`` of the plane-of-array diffuse
light; snow transmits a fraction of all light. The 4 and 8 ohm values follow the class names; the thesis describes
them as +50 % and +100 % of the string's series resistance. All magnitudes are assumptions: the thesis does not give
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dgmlab.data.pv.electrical import CELLS_PER_SUBSTRING, N_SUBSTRINGS

CLASSES = ("PS7", "RS4", "PS50", "RS8", "PSRS", "PS75", "C", "S", "N", "IV")
SHARES = (0.1068, 0.1018, 0.1083, 0.0511, 0.1093, 0.1060, 0.0460, 0.2764, 0.0467, 0.0478)
DESCRIPTIONS = {
    "PS7": "bottom cell row of every module partly shaded",
    "RS4": "4 ohm added in series with the string",
    "PS50": "half of one substring shaded",
    "RS8": "8 ohm added in series with the string",
    "PSRS": "half of one substring shaded and 4 ohm added in series",
    "PS75": "half of one substring and a quarter of another shaded",
    "C": "cloudy day, no fault",
    "S": "snow on the modules",
    "N": "clear day, no fault",
    "IV": "three quarters of the cell area of 6 substrings shaded",
}
SHADE_DIFFUSE = 0.5
PS7_COVER = 0.7
IV_COVER = 0.75
# sky of a day: probabilities of clear, broken and overcast (fault emulations were mostly run in fair weather)
SKY_PROBS = {"N": (1.0, 0.0, 0.0), "C": (0.0, 0.0, 1.0), "S": (0.45, 0.25, 0.30)}
FAULT_SKY_PROBS = (0.55, 0.45, 0.0)


@dataclass
class Layout:
    """Cell types and their placement for one day.

    ``beam_factor[t]`` and ``diffuse_factor[t]``: cell type ``t`` sees ``beam_factor * G + diffuse_factor * D``
    (G plane-of-array global, D plane-of-array diffuse irradiance). ``counts[s, t]``: cells of type ``t`` in
    substring ``s`` (only substrings that differ from an unshaded one need to be listed).
    """

    beam_factor: list[float]
    diffuse_factor: list[float]
    counts: np.ndarray
    series_resistance: float = 0.0
    snow_transmittance: float = 1.0   # mean light transmission, for the module's heating
    extra: dict = field(default_factory=dict)

    def irradiance(self, poa_global: np.ndarray, poa_diffuse: np.ndarray) -> np.ndarray:
        """``(m, T)`` irradiance of each cell type."""
        return (np.asarray(self.beam_factor)[None, :] * poa_global[:, None]
                + np.asarray(self.diffuse_factor)[None, :] * poa_diffuse[:, None])


def _shade(cover: float) -> tuple[float, float]:
    return 1.0 - cover, cover * SHADE_DIFFUSE


def _counts(rows: list[list[int]]) -> np.ndarray:
    out = np.asarray(rows, dtype=int).reshape(len(rows), -1) if rows else np.zeros((0, 1), int)
    assert np.all(out.sum(axis=1) == CELLS_PER_SUBSTRING)
    return out


def layout(label: str, rng: np.random.Generator | None = None) -> Layout:
    """The cell layout of condition ``label`` (``rng`` draws the day's snow cover for ``S``)."""
    full = _shade(1.0)
    if label in ("N", "C"):
        return Layout([1.0], [0.0], _counts([]))
    if label in ("RS4", "RS8"):
        return Layout([1.0], [0.0], _counts([]), series_resistance=float(label[2:]))
    if label in ("PS50", "PSRS"):
        return Layout([1.0, full[0]], [0.0, full[1]], _counts([[10, 10]]),
                      series_resistance=4.0 if label == "PSRS" else 0.0)
    if label == "PS75":
        return Layout([1.0, full[0]], [0.0, full[1]], _counts([[10, 10], [15, 5]]))
    if label == "PS7":
        b, d = _shade(PS7_COVER)
        return Layout([1.0, b], [0.0, d], _counts([[18, 2]] * N_SUBSTRINGS))
    if label == "IV":
        b, d = _shade(IV_COVER)
        return Layout([1.0, b], [0.0, d], _counts([[0, 20]] * 6))
    if label == "S":
        if rng is None:
            raise ValueError("the snow layout is random: pass rng")
        thin, thick = rng.uniform(0.10, 0.35), rng.uniform(0.0, 0.08)
        free = rng.uniform(0.0, 0.5)
        kind = rng.choice(3, size=N_SUBSTRINGS, p=[free, (1 - free) / 2, (1 - free) / 2])
        counts = np.zeros((N_SUBSTRINGS, 3), int)
        counts[np.arange(N_SUBSTRINGS), kind] = CELLS_PER_SUBSTRING
        tau = np.array([1.0, thin, thick])
        return Layout(list(tau), [0.0, 0.0, 0.0], counts, snow_transmittance=float(tau[kind].mean()),
                      extra={"snow_free": free})
    raise ValueError(f"unknown condition {label!r}; conditions: {', '.join(CLASSES)}")


def sky_type(label: str, rng: np.random.Generator) -> str:
    probs = SKY_PROBS.get(label, FAULT_SKY_PROBS)
    return ("clear", "broken", "overcast")[int(rng.choice(3, p=probs))]


def class_counts(n_samples: int) -> np.ndarray:
    """Samples per class: the shares of Table 6.1 (normalised) rounded by largest remainder, at least 1 each."""
    if not isinstance(n_samples, (int, np.integer)) or isinstance(n_samples, bool):
        raise TypeError(f"n_samples must be an integer, got {n_samples!r}")
    if n_samples < len(CLASSES):
        raise ValueError(f"n_samples must be at least {len(CLASSES)} (one per class), got {n_samples}")
    shares = np.asarray(SHARES) / np.sum(SHARES)
    raw = shares * n_samples
    counts = np.maximum(np.floor(raw).astype(int), 1)
    order = np.argsort(-(raw - np.floor(raw)))
    i = 0
    while counts.sum() < n_samples:
        counts[order[i % len(order)]] += 1
        i += 1
    while counts.sum() > n_samples:
        counts[int(np.argmax(counts))] -= 1
    return counts
