"""Weather of one simulated day at one-minute resolution: sun, sky, plane-of-array irradiance, air, wind and module
temperature, all offline with pvlib and the data files pvlib ships.

* Site: a roof in northern Denmark (57.05 N, 9.92 E; the thesis' plant is at Aalborg University, chapter 6), modules
  tilted 35 degrees facing south. Dates: February to mid-April (the recording has snow). These are assumptions.
* Sun: ``pvlib.solarposition.get_solarposition``. Clear sky: Ineichen with the Linke turbidity looked up in pvlib's
  shipped ``LinkeTurbidities.h5`` (``pvlib.clearsky.lookup_linke_turbidity``).
* Sky type of a day: ``clear`` (clear-sky irradiance), ``broken`` (two-state Markov clouds: sunny spells and cloud
  passages, clear-sky index about 0.2-0.5 under a cloud) or ``overcast`` (a slowly wandering clear-sky index between
  0.1 and 0.6). Cloudy-sky GHI is split into beam and diffuse with ``pvlib.irradiance.erbs``.
* Plane of array: ``pvlib.irradiance.get_total_irradiance`` (Hay-Davies sky diffuse, albedo 0.2, 0.6 with snow).
* Air temperature and wind: the hourly values for the same day of year and hour from pvlib's shipped TMY3 file of
  Sand Point, Alaska (``703165TY.csv``, 55.3 N: a cold, windy coastal site like northern Denmark), interpolated to
  minutes with small random fluctuations and gusts added.
* Module temperature: ``pvlib.temperature.faiman`` (u0 = 25, u1 = 6.84) with a 7-minute first-order thermal lag.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib

LATITUDE, LONGITUDE, ALTITUDE = 57.05, 9.92, 10.0
SURFACE_TILT, SURFACE_AZIMUTH = 35.0, 180.0
UTC_OFFSET_H = 1                       # Danish standard time
MIN_ELEVATION = 3.0                    # degrees; lower sun is not simulated
THERMAL_TAU_MIN = 7.0
FAIMAN = {"u0": 25.0, "u1": 6.84}
SKY_TYPES = ("clear", "broken", "overcast")
TMY_FILE = "703165TY.csv"


@dataclass
class DayWeather:
    """One-minute series for the daylight minutes of one day (all arrays of the same length)."""

    time: pd.DatetimeIndex
    poa_global: np.ndarray
    poa_diffuse: np.ndarray
    temp_air: np.ndarray
    wind_speed: np.ndarray
    temp_module: np.ndarray
    sky: str


@lru_cache(maxsize=1)
def _tmy() -> tuple[np.ndarray, np.ndarray]:
    """Hourly air temperature and wind speed (8760 values each) of the shipped Sand Point TMY3 file."""
    path = Path(pvlib.__file__).parent / "data" / TMY_FILE
    data = pvlib.iotools.read_tmy3(str(path), map_variables=True)[0]
    return data["temp_air"].to_numpy(float), data["wind_speed"].to_numpy(float)


@lru_cache(maxsize=64)
def _linke(date: str) -> float:
    times = pd.DatetimeIndex([pd.Timestamp(date, tz="UTC") + pd.Timedelta(hours=12)])
    return float(pvlib.clearsky.lookup_linke_turbidity(times, LATITUDE, LONGITUDE).iloc[0])


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """Stationary AR(1) series with lag-one correlation ``phi`` and marginal standard deviation ``sigma``."""
    e = rng.normal(0.0, sigma * np.sqrt(1 - phi ** 2), n)
    out = np.empty(n)
    out[0] = rng.normal(0.0, sigma)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + e[t]
    return out


def clear_sky_index(sky: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Minute series of the ratio of global horizontal irradiance to its clear-sky value."""
    if sky == "clear":
        return np.full(n, rng.uniform(0.97, 1.02)) + _ar1(rng, n, 0.9, 0.005)
    if sky == "overcast":
        level = _ar1(rng, n, 0.97, 1.0) + rng.normal(0.0, 0.5)
        return 0.1 + 0.5 / (1.0 + np.exp(-level))
    if sky == "broken":
        # two-state Markov chain: sunny spells (mean 20 min) and cloud passages (mean 8 min)
        state, states = rng.random() < 0.3, np.empty(n, bool)
        for t in range(n):
            states[t] = state
            state = (rng.random() > 1 / 8) if state else (rng.random() < 1 / 20)
        kc = np.where(states, rng.uniform(0.2, 0.5, n), 1.0 + np.abs(_ar1(rng, n, 0.8, 0.02)))
        return np.convolve(np.pad(kc, 1, mode="edge"), np.ones(3) / 3, mode="valid")   # cloud edges are soft
    raise ValueError(f"unknown sky type {sky!r}; choose from {SKY_TYPES}")


def simulate_day(date: str, sky: str, rng: np.random.Generator, snow_on_ground: bool = False,
                 temp_shift: float = 0.0) -> DayWeather:
    """Weather of ``date`` (``YYYY-MM-DD``) for the minutes with the sun at least 3 degrees high."""
    start = pd.Timestamp(date, tz="UTC")
    times = pd.date_range(start, periods=24 * 60, freq="1min")
    sun = pvlib.solarposition.get_solarposition(times, LATITUDE, LONGITUDE, ALTITUDE, method="nrel_numpy")
    keep = sun["apparent_elevation"].to_numpy() >= MIN_ELEVATION
    times, sun = times[keep], sun[keep]
    zenith, azimuth = sun["apparent_zenith"].to_numpy(), sun["azimuth"].to_numpy()
    airmass = pvlib.atmosphere.get_relative_airmass(zenith)
    am_abs = pvlib.atmosphere.get_absolute_airmass(airmass, pvlib.atmosphere.alt2pres(ALTITUDE))
    dni_extra = pvlib.irradiance.get_extra_radiation(times).to_numpy()
    linke = _linke(date) * rng.uniform(0.9, 1.1)
    cs = pvlib.clearsky.ineichen(zenith, am_abs, linke, ALTITUDE, dni_extra)
    n = len(times)
    kc = clear_sky_index(sky, n, rng)
    if sky == "clear":
        ghi, dni, dhi = cs["ghi"] * kc, cs["dni"] * kc, cs["dhi"] * kc
    else:
        ghi = cs["ghi"] * kc
        split = pvlib.irradiance.erbs(ghi, zenith, times.day_of_year.to_numpy())
        dni, dhi = split["dni"], split["dhi"]
    poa = pvlib.irradiance.get_total_irradiance(
        SURFACE_TILT, SURFACE_AZIMUTH, zenith, azimuth, dni, ghi, dhi, dni_extra=dni_extra, model="haydavies",
        albedo=0.6 if snow_on_ground else 0.2)
    poa_global = np.nan_to_num(np.asarray(poa["poa_global"], float))
    poa_diffuse = np.nan_to_num(np.asarray(poa["poa_diffuse"], float))

    temp_h, wind_h = _tmy()
    local = times + pd.Timedelta(hours=UTC_OFFSET_H)
    hours = ((local.day_of_year.to_numpy() - 1) * 24 + local.hour.to_numpy() + local.minute.to_numpy() / 60.0) % 8760
    grid = np.arange(8761)
    temp_air = np.interp(hours, grid, np.append(temp_h, temp_h[0])) + temp_shift + _ar1(rng, n, 0.98, 0.3)
    wind = np.interp(hours, grid, np.append(wind_h, wind_h[0]))
    wind_speed = np.maximum(wind * (1.0 + _ar1(rng, n, 0.7, 0.25)), 0.0)
    temp_module = module_temperature(poa_global, temp_air, wind_speed)
    return DayWeather(times, poa_global, poa_diffuse, temp_air, wind_speed, temp_module, sky)


def module_temperature(poa_global, temp_air, wind_speed) -> np.ndarray:
    """Faiman steady-state module temperature followed by a first-order lag of ``THERMAL_TAU_MIN`` minutes."""
    steady = np.asarray(pvlib.temperature.faiman(poa_global, temp_air, wind_speed, **FAIMAN), float)
    alpha = 1.0 - np.exp(-1.0 / THERMAL_TAU_MIN)
    out = np.empty_like(steady)
    out[0] = steady[0]
    for t in range(1, len(steady)):
        out[t] = out[t - 1] + alpha * (steady[t] - out[t - 1])
    return out
