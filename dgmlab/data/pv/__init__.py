"""Simulated photovoltaic condition-monitoring data (thesis chapter 6; Maaløe et al., "Condition monitoring in
photovoltaic systems by semi-supervised machine learning", appendix D).

THE DATA ARE SIMULATED, not the thesis' recordings: the plant's data are private. A physics model built on pvlib
(https://pvlib-python.readthedocs.io) stands in for the thesis' 0.9 kWp roof-top string of eight multicrystalline
modules and its inverter, logging one-minute samples of string current I and voltage V at the maximum power point,
plane-of-array irradiance G, ambient temperature TExt, module temperature TMod and wind speed W, under the ten
conditions of Table 6.1 with the table's class shares. Each class occupies its own days.

* :mod:`~dgmlab.data.pv.weather`: sun, sky, irradiance, air temperature, wind and module temperature;
* :mod:`~dgmlab.data.pv.electrical`: cells, bypass diodes, series resistance and the MPP tracker;
* :mod:`~dgmlab.data.pv.conditions`: the ten conditions and how each is simulated;
* :mod:`~dgmlab.data.pv.dataset`: assembling, noise, caching and train/test tensors.

Every fault magnitude, the site, dates and module parameters are our assumptions; the thesis does not give them.
"""

from dgmlab.data.pv.conditions import CLASSES, DESCRIPTIONS, SHARES, class_counts
from dgmlab.data.pv.dataset import INPUT_SETS, SENSORS, PVData, PVSplit, load_pv_arrays, simulate, split_indices

__all__ = ["CLASSES", "DESCRIPTIONS", "INPUT_SETS", "PVData", "PVSplit", "SENSORS", "SHARES", "class_counts",
           "load_pv_arrays", "simulate", "split_indices"]
