"""dgmlab: deep generative models for semi-supervised learning, after L. Maaløe's PhD thesis (DTU 2018).

The package the book imports: data, models, objectives, training, evaluation, widgets and a CLI
(``python -m dgmlab --help``).
"""

from dgmlab.runtime import FAST, budget, get_device, seed_everything

__version__ = "0.1.0"
__all__ = ["FAST", "budget", "get_device", "seed_everything", "__version__"]
