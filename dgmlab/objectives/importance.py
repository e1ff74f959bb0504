"""Importance-weighted bounds from log-weights (thesis eq. 3.31; reproduction notes rn-iw-evaluation).

With ``K`` samples ``h_k ~ q(h|x)`` and log-weights ``log w_k = log p(x, h_k) - log q(h_k|x)``,

    L_K(x) = E[ log (1/K) sum_k w_k ] = E[ logsumexp_k(log w_k) - log K ]    (3.31, with the 1/K; reproduction notes G2)

``L_1`` is the ELBO (3.11), ``L_K`` grows with ``K`` and tends to ``log p(x)``. Test log-likelihoods are ``L_5000``;
:func:`chunked_log_mean_exp` computes them with a running logsumexp so that only ``chunk`` samples ever live in memory.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) sum_k exp(log_w_k)`` over ``dim``, computed stably (the max is factored out by logsumexp)."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def iw_bound(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The importance-weighted bound (3.31) of one draw of ``K = log_w.shape[dim]`` samples, per data point.

    ``log_w`` holds ``log p(x, h_k) - log q(h_k|x)`` with the importance samples along ``dim``; with ``K = 1`` this is
    the one-sample ELBO estimate.
    """
    if log_w.shape[dim] < 1:
        raise ValueError("iw_bound needs at least one importance sample along dim")
    return log_mean_exp(log_w, dim)


def chunked_log_mean_exp(log_weights: Callable[[int], torch.Tensor], k: int, chunk: int) -> torch.Tensor:
    """``log (1/k) sum_{j<k} w_j`` where the ``k`` log-weights are produced ``chunk`` at a time.

    ``log_weights(n)`` must return a tensor whose first axis holds ``n`` fresh log-weights (shape ``(n, *batch)``).
    Chunks are combined with a running ``logaddexp`` of their logsumexps, which equals the logsumexp of all ``k``
    weights exactly (up to rounding), so memory grows with ``chunk`` and never with ``k``.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of importance samples k must be a positive integer, got {k!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    total: torch.Tensor | None = None
    done = 0
    while done < k:
        n = min(chunk, k - done)
        log_w = log_weights(n)
        if log_w.shape[0] != n:
            raise ValueError(f"log_weights({n}) returned {log_w.shape[0]} samples along its first axis, expected {n}")
        part = torch.logsumexp(log_w, dim=0)
        total = part if total is None else torch.logaddexp(total, part)
        done += n
    return total - math.log(k)


def normalized_weights(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Self-normalised importance weights ``w_k / sum_j w_j`` (they sum to one along ``dim``)."""
    return torch.softmax(log_w, dim=dim)


def effective_sample_size(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``, between 1 (one weight dominates) and ``K`` (all equal).

    A small value means ``q`` covers the posterior poorly, so ``L_K`` is still far from ``log p(x)``.
    """
    return torch.exp(2 * torch.logsumexp(log_w, dim=dim) - torch.logsumexp(2 * log_w, dim=dim))
