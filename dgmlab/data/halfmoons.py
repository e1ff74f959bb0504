"""The two half-moons: the chapter-2 supervised recipe and the chapter-4 semi-supervised recipe (SPEC 4.1, 4.2).

Upper moon ``(cos t, sin t)``, lower moon ``(1 - cos t, 1 - sin t - 0.5)`` for ``t`` in ``[0, pi]`` (thesis section 4.2),
plus isotropic Gaussian noise.
"""

from __future__ import annotations

import numpy as np
import torch

# Six fixed labelled points of the semi-supervised experiment, in the shifted coordinates of SPEC 4.2 ([R]):
# three on the upper moon (class 0) and three on the lower moon (class 1).
SIX_LABELLED_X = np.array([[0.7, 1.7], [1.6, 2.6], [2.7, 1.7], [1.6, 2.0], [2.7, 1.1], [3.5, 2.0]], dtype=np.float32)
SIX_LABELLED_Y = np.array([0, 0, 0, 1, 1, 1], dtype=np.int64)


def moons(n: int, noise: float, seed: int, upper_label: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points (``n // 2`` per moon, the upper moon first gets the odd one) with Gaussian noise of std ``noise``.

    ``t`` is evenly spaced on ``[0, pi]`` per moon, as in scikit-learn's ``make_moons``; rows are shuffled.
    Returns ``(X float32 (n, 2), y int64 (n,))`` with the upper moon labelled ``upper_label``.
    """
    if n < 2:
        raise ValueError(f"need at least 2 points, got n={n}")
    rng = np.random.default_rng(seed)
    n_up = n - n // 2
    t_up, t_low = np.linspace(0, np.pi, n_up), np.linspace(0, np.pi, n // 2)
    up = np.stack([np.cos(t_up), np.sin(t_up)], 1)
    low = np.stack([1 - np.cos(t_low), 1 - np.sin(t_low) - 0.5], 1)
    X = np.concatenate([up, low]) + rng.normal(scale=noise, size=(n, 2))
    y = np.concatenate([np.full(n_up, upper_label), np.full(n // 2, 1 - upper_label)])
    perm = rng.permutation(n)
    return X[perm].astype(np.float32), y[perm].astype(np.int64)


def tendency_lines(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """The noise-free centre curves of the upper and lower moon (the 'tendency lines' of thesis Fig 2.4)."""
    t = np.linspace(0, np.pi, n)
    upper = np.stack([np.cos(t), np.sin(t)], 1)
    lower = np.stack([1 - np.cos(t), 1 - np.sin(t) - 0.5], 1)
    return upper.astype(np.float32), lower.astype(np.float32)


def supervised_moons(n_train: int = 1000, n_test: int = 1000, noise: float = 0.1, seed: int = 0):
    """Chapter-2 recipe (SPEC 4.1): upper moon = class 1, lower = class 0, noise 0.1, 1000 training points.

    Returns ``(x_train, y_train, x_test, y_test)`` as torch tensors (float32, int64).
    """
    xtr, ytr = moons(n_train, noise, seed, upper_label=1)
    xte, yte = moons(n_test, noise, seed + 1, upper_label=1)
    return tuple(torch.from_numpy(a) for a in (xtr, ytr, xte, yte))


def semi_supervised_moons(n_train: int = 10_000, n_test: int = 10_000, noise: float = 0.2, seed: int = 1234):
    """Chapter-4 recipe (SPEC 4.2, [R]): 1e4 training and 1e4 test points with noise 0.2, the upper moon = class 0;
    every coordinate shifted by ``|min|`` of the training set so all values are >= 0 (about 1.6), and the six fixed
    labelled points. The test set uses ``seed + 1`` so that its points differ from the training points.

    Returns ``(x_train, y_train, x_test, y_test, x_labelled, y_labelled)`` as torch tensors.
    """
    xtr, ytr = moons(n_train, noise, seed, upper_label=0)
    xte, yte = moons(n_test, noise, seed + 1, upper_label=0)
    shift = abs(float(xtr.min()))
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in
                 (xtr + shift, ytr, xte + shift, yte, SIX_LABELLED_X, SIX_LABELLED_Y))
