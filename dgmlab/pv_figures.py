"""Small helpers shared by the chapter-6 pages (SIMULATED photovoltaic data): class colours, time of day, the
pairwise overlap of two conditions, the most confused pairs of a confusion matrix and a confusion-matrix plot.

The protocol itself (training, prediction, confusion matrices, anomaly scores) lives in :mod:`dgmlab.monitoring`;
this module only reads and draws what it produces.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

CLASS_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray",
                 "tab:cyan", "gold", "tab:pink")
"""One colour per condition, in the order of Table 6.1 (``dgmlab.data.pv.CLASSES``)."""


def local_hour(time_utc_s: np.ndarray) -> np.ndarray:
    """Local standard time of day in hours (0-24) of UTC timestamps in seconds (the simulated site is in Denmark,
    UTC+1, :data:`dgmlab.data.pv.weather.UTC_OFFSET_H`)."""
    from dgmlab.data.pv.weather import UTC_OFFSET_H

    return ((np.asarray(time_utc_s, dtype=float) / 3600.0) + UTC_OFFSET_H) % 24.0


def balanced_error(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int]) -> float:
    """Mean over ``classes`` of the fraction of each class' points that are misclassified."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean([(y_pred[y_true == c] != c).mean() for c in classes]))


def pairwise_overlap(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                     n_classes: int, k: int = 5) -> np.ndarray:
    """How alike every pair of conditions looks: the balanced test error of a ``k``-nearest-neighbour classifier
    trained on the two classes alone (0 = perfectly separable, 0.5 = indistinguishable).

    Returns a symmetric ``(n_classes, n_classes)`` matrix with zeros on the diagonal. The inputs should be
    standardised, since the neighbours are Euclidean.
    """
    from sklearn.neighbors import KNeighborsClassifier

    x_train, y_train = np.asarray(x_train), np.asarray(y_train)
    x_test, y_test = np.asarray(x_test), np.asarray(y_test)
    out = np.zeros((n_classes, n_classes))
    for a, b in itertools.combinations(range(n_classes), 2):
        tr, te = np.isin(y_train, (a, b)), np.isin(y_test, (a, b))
        if not ((y_test[te] == a).any() and (y_test[te] == b).any()):
            raise ValueError(f"classes {a} and {b} both need test points")
        knn = KNeighborsClassifier(n_neighbors=k).fit(x_train[tr], y_train[tr])
        out[a, b] = out[b, a] = balanced_error(y_test[te], knn.predict(x_test[te]), (a, b))
    return out


def confused_pairs(matrix: np.ndarray, class_names: Sequence[str], top: int = 5,
                   symmetric: bool = True) -> list[tuple[str, str, float]]:
    """The ``top`` most confused pairs of a row-normalised confusion matrix (rows true, columns predicted).

    With ``symmetric`` a pair's score is ``C[a, b] + C[b, a]`` (how often either is taken for the other, in
    fractions of a class); otherwise every ordered pair ``true -> predicted`` is ranked by ``C[a, b]``.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(class_names):
        raise ValueError(f"matrix must be square with one row per class, got shape {m.shape}")
    if symmetric:
        pairs = [(class_names[a], class_names[b], m[a, b] + m[b, a])
                 for a, b in itertools.combinations(range(len(m)), 2)]
    else:
        pairs = [(class_names[a], class_names[b], m[a, b]) for a in range(len(m)) for b in range(len(m)) if a != b]
    return sorted(pairs, key=lambda p: -p[2])[:top]


def plot_confusion(ax, matrix: np.ndarray, class_names: Sequence[str], title: str = "", annotate: bool = True,
                   vmax: float = 1.0):
    """Draw a row-normalised confusion matrix (y = true class, x = predicted class, as in the thesis' figures)."""
    m = np.asarray(matrix, dtype=float)
    im = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=vmax)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90)
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted condition", ylabel="true condition", title=title)
    if annotate:
        for i, j in itertools.product(range(len(m)), repeat=2):
            if m[i, j] >= 0.005:
                ax.text(j, i, f"{100 * m[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > 0.6 * vmax else "black")
    return im
