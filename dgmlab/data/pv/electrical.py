"""Electrical model of the simulated string: cells, bypass-diode substrings, series resistance and the MPP tracker.

The module is a 60-cell multicrystalline module of about 112.5 Wp (the thesis' 0.9 kWp string of eight modules,
chapter 6; Maaløe et al., appendix D, section III-A). No such module is in pvlib's CEC library (the multi-Si entries
near 112 W have 32 or 36 cells), so the module's De Soto single-diode parameters were fitted with
``pvlib.ivtools.sdm.fit_desoto`` (``root_kwargs={"method": "lm"}``) to assumed datasheet values:
Voc 37 V, Vmp 30 V, Isc 4.1 A, Imp 3.75 A, alpha_Isc +0.05 %/K, beta_Voc -0.33 %/K (the fit reproduces them at STC; checked in the tests).

Cell level: a module's parameters are split evenly over its 60 series cells (``R_s``, ``R_sh`` and ``nNsVth``
divided by 60, photocurrent and saturation current unchanged). Each cell's reverse characteristic uses pvlib's
Bishop (1988) avalanche-breakdown term (``pvlib.singlediode.bishop88`` with ``breakdown_factor=2e-3``,
``breakdown_voltage=-15 V``, ``breakdown_exp=3``, the values of pvlib's partial-shading gallery example).
The module is portrait, 6 cell columns by 10 rows; each pair of columns (20 cells) is one substring protected by a
bypass diode, modelled as an ideal clamp at ``-BYPASS_VOLTAGE``. The string is 8 modules = 24 substrings in series,
plus the cable resistance and any added fault resistance.

The inverter's MPP tracker is modelled as a global maximum search over the string's P-I curve (a coarse scan of
``N_GRID`` currents, then golden-section refinement); it reports the current and voltage at that point.
"""

from __future__ import annotations

import numpy as np
import pvlib
from pvlib.singlediode import bishop88

# De Soto parameters of one module at reference conditions (1000 W/m^2, 25 degC), from fit_desoto (see docstring).
MODULE_DATASHEET = {"v_oc": 37.0, "v_mp": 30.0, "i_sc": 4.1, "i_mp": 3.75,
                    "alpha_sc": 0.0005 * 4.1, "beta_voc": -0.0033 * 37.0, "cells_in_series": 60}
MODULE_PARAMS = {"alpha_sc": 0.00205, "a_ref": 1.470503, "I_L_ref": 4.114819, "I_o_ref": 4.6324046e-11,
                 "R_sh_ref": 189.947493, "R_s": 0.68655}
CELLS_PER_MODULE = 60
CELLS_PER_SUBSTRING = 20
SUBSTRINGS_PER_MODULE = 3
N_MODULES = 8
N_SUBSTRINGS = N_MODULES * SUBSTRINGS_PER_MODULE  # 24
BREAKDOWN = {"breakdown_factor": 2e-3, "breakdown_voltage": -15.0, "breakdown_exp": 3.0}
BYPASS_VOLTAGE = 0.5     # forward drop of a conducting bypass diode [V]
CABLE_RESISTANCE = 0.3   # string cabling and connectors [ohm] (assumed)
MIN_IRRADIANCE = 1.0     # floor on a cell's irradiance [W/m^2], keeps the shunt resistance finite
N_GRID = 32
N_GOLDEN = 16
N_BISECT = 26


def cell_params(irradiance, temp_cell):
    """Single-diode parameters of one cell: ``(IL, I0, Rs, Rsh, nVth)``, broadcast over the inputs."""
    g = np.maximum(np.asarray(irradiance, dtype=float), MIN_IRRADIANCE)
    t = np.asarray(temp_cell, dtype=float)
    il, i0, rs, rsh, nnsvth = pvlib.pvsystem.calcparams_desoto(g, t, **MODULE_PARAMS)
    g, t = np.broadcast_arrays(g, t)
    shape = g.shape
    n = CELLS_PER_MODULE
    return (np.broadcast_to(il, shape), np.broadcast_to(i0, shape), np.broadcast_to(rs / n, shape),
            np.broadcast_to(rsh / n, shape), np.broadcast_to(nnsvth / n, shape))


def cell_voltage(current, params):
    """Voltage of one cell carrying ``current`` (forward or reverse bias), by bisection on the diode voltage of
    pvlib's Bishop model. ``params`` are arrays broadcastable against ``current``."""
    il, i0, rs, rsh, nvth = params
    current = np.asarray(current, dtype=float)
    hi = np.broadcast_to(nvth * np.log1p(il / i0), np.broadcast_shapes(current.shape, il.shape)).copy()
    lo = np.full_like(hi, BREAKDOWN["breakdown_voltage"] * (1 - 1e-6))
    for _ in range(N_BISECT):  # cell current falls monotonically with diode voltage
        mid = 0.5 * (lo + hi)
        i_mid = bishop88(mid, il, i0, rs, rsh, nvth, **BREAKDOWN)[0]
        above = i_mid > current
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    vd = 0.5 * (lo + hi)
    return vd - current * rs


def string_voltage(current, irradiance, temp_cell, counts, series_resistance=0.0):
    """String voltage at string ``current``.

    Args:
        current: ``(m, k)`` string currents for ``m`` operating conditions.
        irradiance: ``(m, T)`` irradiance seen by each of ``T`` cell types.
        temp_cell: ``(m,)`` cell temperature.
        counts: ``(S, T)`` integer cells of each type in each of ``S`` substrings (rows sum to 20); substrings not
            listed are unshaded copies of type 0, so ``S`` may be fewer than 24.
        series_resistance: resistance added to the string (fault resistors) [ohm].
    """
    counts = np.asarray(counts)
    if counts.shape[0] > N_SUBSTRINGS or np.any(counts.sum(axis=1) != CELLS_PER_SUBSTRING):
        raise ValueError("counts must have at most 24 rows, each holding 20 cells")
    params = cell_params(np.asarray(irradiance)[:, :, None], np.asarray(temp_cell)[:, None, None])
    v_cell = cell_voltage(np.asarray(current)[:, None, :], params)           # (m, T, k)
    rows, mult = np.unique(counts, axis=0, return_counts=True)
    n_plain = N_SUBSTRINGS - counts.shape[0]
    if n_plain:
        plain = np.zeros((1, counts.shape[1]), dtype=rows.dtype)
        plain[0, 0] = CELLS_PER_SUBSTRING
        rows, mult = np.vstack([rows, plain]), np.append(mult, n_plain)
    v = np.zeros(np.shape(current))
    for row, m in zip(rows, mult):
        v_sub = np.einsum("t,mtk->mk", row.astype(float), v_cell)
        v += m * np.maximum(v_sub, -BYPASS_VOLTAGE)
    return v - np.asarray(current) * (CABLE_RESISTANCE + series_resistance)


def max_power_point(irradiance, temp_cell, counts, series_resistance=0.0):
    """The global maximum power point: ``(I_mp, V_mp)`` arrays of shape ``(m,)``."""
    irradiance = np.atleast_2d(np.asarray(irradiance, dtype=float))
    temp_cell = np.atleast_1d(np.asarray(temp_cell, dtype=float))
    m = irradiance.shape[0]
    i_max = cell_params(irradiance.max(axis=1), temp_cell)[0] * 1.02
    grid = i_max[:, None] * np.linspace(0.0, 1.0, N_GRID)[None, :]

    def power(i):
        return i * string_voltage(i, irradiance, temp_cell, counts, series_resistance)

    p = power(grid)
    best = np.argmax(p, axis=1)
    step = i_max / (N_GRID - 1)
    a = np.maximum(grid[np.arange(m), best] - step, 0.0)
    b = grid[np.arange(m), best] + step
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    pc, pd = power(c[:, None])[:, 0], power(d[:, None])[:, 0]
    for _ in range(N_GOLDEN):
        left = pc > pd   # maximum lies in [a, d]
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        pc, pd = power(c[:, None])[:, 0], power(d[:, None])[:, 0]
    i_mp = 0.5 * (a + b)
    v_mp = string_voltage(i_mp[:, None], irradiance, temp_cell, counts, series_resistance)[:, 0]
    return i_mp, v_mp
