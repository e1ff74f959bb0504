"""Datasets (half-moons, MNIST, the simulated PV plant), the labelled subsets and the batch schemes of the thesis."""

from dgmlab.data.bundle import ALL_LABELS, DATASETS, DataBundle, balanced_subset, iterate_batches, load_data, make_config
from dgmlab.data.halfmoons import semi_supervised_moons, supervised_moons, tendency_lines
from dgmlab.data.mnist import binarize, trim_mask
from dgmlab.data.paths import DataError

__all__ = ["ALL_LABELS", "DATASETS", "DataBundle", "DataError", "balanced_subset", "binarize", "iterate_batches", "load_data",
           "make_config", "semi_supervised_moons", "supervised_moons", "tendency_lines", "trim_mask"]
