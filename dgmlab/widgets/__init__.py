"""Interactive figures for the book: latent-space explorers and an anomaly-threshold explorer that work live in
JupyterLab and kernel-free on the static site (precomputed content + inline JS, no network).

Example (chapter 3)::

    from dgmlab.widgets import latent_explorer
    latent_explorer(lambda z: model.decode(z), z_dim=2, points=z_test, labels=y_test)
"""

from dgmlab.widgets.explorer import ExplorerView, class_conditional_explorer, latent_explorer, latent_grid
from dgmlab.widgets.layers import layer_explorer
from dgmlab.widgets.static import StaticView, save_page
from dgmlab.widgets.threshold import threshold_explorer

__all__ = ["ExplorerView", "StaticView", "class_conditional_explorer", "latent_explorer", "latent_grid",
           "layer_explorer", "save_page", "threshold_explorer"]
