"""The two half-moons: the chapter-2 supervised recipe and the chapter-4 semi-supervised recipe (reproduction notes
T1, T4).

Upper moon ``(cos t, sin t)``, lower moon ``(1 - cos t, 1 - sin t - 0.5)`` for ``t`` in ``[0, pi]`` (thesis section 4.2),
plus isotropic Gaussian noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Six fixed labelled points of the semi-supervised experiment, in the shifted coordinates of the authors' code
# (reproduction notes T4):
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
    """Chapter-2 recipe (reproduction notes T1): upper moon = class 1, lower = class 0, noise 0.1, 1000 training points.

    Returns ``(x_train, y_train, x_test, y_test)`` as torch tensors (float32, int64).
    """
    xtr, ytr = moons(n_train, noise, seed, upper_label=1)
    xte, yte = moons(n_test, noise, seed + 1, upper_label=1)
    return tuple(torch.from_numpy(a) for a in (xtr, ytr, xte, yte))


def semi_supervised_shift(n_train: int = 10_000, noise: float = 0.2, seed: int = 1234) -> float:
    """The offset ``|min|`` that :func:`semi_supervised_moons` adds to every coordinate (about 1.6)."""
    return abs(float(moons(n_train, noise, seed, upper_label=0)[0].min()))


def semi_supervised_moons(n_train: int = 10_000, n_test: int = 10_000, noise: float = 0.2, seed: int = 1234):
    """Chapter-4 recipe (reproduction notes T4): 1e4 training and 1e4 test points with noise 0.2, the upper moon =
    class 0; every coordinate shifted by ``|min|`` of the training set so all values are >= 0 (about 1.6), and the six
    fixed labelled points. The test set uses ``seed + 1`` so that its points differ from the training points.

    Returns ``(x_train, y_train, x_test, y_test, x_labelled, y_labelled)`` as torch tensors.
    """
    xtr, ytr = moons(n_train, noise, seed, upper_label=0)
    xte, yte = moons(n_test, noise, seed + 1, upper_label=0)
    shift = semi_supervised_shift(n_train, noise, seed)
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in
                 (xtr + shift, ytr, xte + shift, yte, SIX_LABELLED_X, SIX_LABELLED_Y))


def class_log_densities(x: torch.Tensor, noise: float = 0.2, shift: float = 0.0, n_curve: int = 1000) -> torch.Tensor:
    """``log p(x | y)`` of the generating process for both moons, shape ``(N, 2)`` (column ``y`` = class ``y`` of
    :func:`semi_supervised_moons`: 0 the upper moon, 1 the lower one).

    A point of a moon is its centre curve at a uniform ``t`` plus isotropic Gaussian noise, so ``p(x | y)`` is a
    Gaussian bump averaged over the curve, approximated by ``n_curve`` evenly spaced ``t``. ``shift`` is the offset
    added to every coordinate (``semi_supervised_moons`` shifts by ``|min|`` of its training set).
    """
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (N, 2), got {tuple(x.shape)}")
    if noise <= 0:
        raise ValueError(f"noise must be positive, got {noise}")
    curves = [torch.from_numpy(c).double() + shift for c in tendency_lines(n_curve)]
    log_norm = math.log(n_curve) + math.log(2 * math.pi * noise**2)
    columns = []
    for centre in curves:
        d2 = torch.cat([torch.cdist(xb.double().cpu(), centre).pow(2) for xb in x.split(2000)])
        columns.append(torch.logsumexp(-d2 / (2 * noise**2), dim=1) - log_norm)
    return torch.stack(columns, 1)


def bayes_error(x: torch.Tensor, y: torch.Tensor, noise: float = 0.2, shift: float = 0.0) -> float:
    """Error (%) on ``(x, y)`` of the Bayes classifier of the generating process (equal class sizes): the lowest
    error any classifier can expect on the half-moons."""
    pred = class_log_densities(x, noise, shift).argmax(1)
    return 100.0 * (pred != y.cpu()).double().mean().item()


def bayes_error_of_test_set(noise: float = 0.2) -> float:
    """Bayes error (%) of the semi-supervised experiment's 10 000 test points (thesis Fig. 4.7): the floor that the
    results page and the benchmark compare every half-moons run with."""
    _, _, x_test, y_test, _, _ = semi_supervised_moons(noise=noise)
    return bayes_error(x_test, y_test, noise, semi_supervised_shift(noise=noise))
