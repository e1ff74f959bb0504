"""Bounds and their pieces, shared by every latent-variable model (reproduction notes rn-building-blocks).

* :mod:`dgmlab.objectives.importance`: the importance-weighted bound (3.31) from log-weights, and the memory-bounded
  chunked estimate of ``log p(x)`` (``L_5000``) with a running logsumexp.
* :mod:`dgmlab.objectives.kl`: per-unit KL, active units and the warm-up temperature (5.5).
"""

from dgmlab.objectives.importance import (chunked_log_mean_exp, effective_sample_size, iw_bound, log_mean_exp,
                                          normalized_weights)
from dgmlab.objectives.kl import ACTIVE_UNIT_THRESHOLD, active_units, kl_per_unit, kl_temperature

__all__ = ["ACTIVE_UNIT_THRESHOLD", "active_units", "chunked_log_mean_exp", "effective_sample_size", "iw_bound",
           "kl_per_unit", "kl_temperature", "log_mean_exp", "normalized_weights"]
