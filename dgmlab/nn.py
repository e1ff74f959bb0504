"""Network building blocks shared by every model: MLPs and the stochastic heads (reproduction notes rn-building-blocks).

A head maps a hidden vector to a ``torch.distributions`` object, so that a model file reads like the math:
``q_z = self.q_z_given_x(x)`` is a distribution with ``.rsample()`` and ``.log_prob()``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Categorical, Independent, Normal

Activation = Literal["relu", "tanh", "softplus", "leaky_relu", "elu"]
VarianceParam = Literal["logvar", "softplus_var", "softplus_std", "logstd"]

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": nn.ELU,
}

LOGVAR_MIN, LOGVAR_MAX = -10.0, 10.0
VAR_FLOOR = 1e-6


def activation(name: str) -> nn.Module:
    """Return a fresh activation module by name (relu, tanh, softplus, leaky_relu with slope 0.1, elu)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}") from None


class BatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` whose running averages can be held still while it keeps normalising with batch statistics.

    The semi-supervised models of chapter 4 send a labelled and an unlabelled batch through the same networks in
    one training step. Each is normalised with its own statistics, but only the (large, representative) unlabelled
    batch may move the running averages that test time uses: six labelled half-moons points would otherwise drag
    them towards three points per moon. :func:`frozen_running_stats` switches the update off.
    """

    update_running_stats: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.update_running_stats:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


@contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Within the block, every :class:`BatchNorm` in ``module`` normalises with its batch's own statistics (in
    training mode) but leaves its running averages and batch counter untouched."""
    layers = [m for m in module.modules() if isinstance(m, BatchNorm)]
    before = [m.update_running_stats for m in layers]
    for m in layers:
        m.update_running_stats = False
    try:
        yield
    finally:
        for m, b in zip(layers, before):
            m.update_running_stats = b


@contextmanager
def running_stats_mode(module: nn.Module) -> Iterator[None]:
    """Within the block, every :class:`BatchNorm` in ``module`` normalises with its running averages, as at test
    time, while the rest of the module stays in training mode (an ablation of the labelled pass)."""
    layers = [m for m in module.modules() if isinstance(m, BatchNorm)]
    before = [m.training for m in layers]
    for m in layers:
        m.eval()
    try:
        yield
    finally:
        for m, b in zip(layers, before):
            m.train(b)


class MLP(nn.Sequential):
    """``in_dim -> hidden[0] -> ... -> hidden[-1]`` with an activation after every layer (thesis eq. 2.1-2.3).

    ``batch_norm`` puts a :class:`BatchNorm` between every linear layer and its activation (the authors' code for
    the auxiliary models). With ``hidden=()`` the MLP is the identity map and ``out_dim == in_dim``.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], act: str = "relu", batch_norm: bool = False):
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(BatchNorm(h))
            layers.append(activation(act))
            d = h
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, d


def concat(*inputs: torch.Tensor) -> torch.Tensor:
    """Concatenate inputs along the last axis, broadcasting leading (sample) axes; a multi-input network's first
    layer is then a linear map of the concatenation (equal to the sum of per-input projections, reproduction notes rn-multi-input)."""
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in inputs))
    return torch.cat([t.expand(*shape, t.shape[-1]) for t in inputs], dim=-1)


class GaussianHead(nn.Module):
    """Hidden vector -> diagonal Gaussian ``N(mu, diag sigma^2)`` (an ``Independent(Normal)`` over the last axis).

    ``variance`` picks one of the parameterisations of reproduction notes rn-gaussian-heads: ``logvar`` (ADGM, A eq. 16), ``softplus_var``
    (LVAE, B eq. 12), ``softplus_std`` (thesis VAE encoder, eq. 3.29) or ``logstd`` (CaGeM). Each has a floor so that
    the variance never reaches zero.
    """

    def __init__(self, in_dim: int, out_dim: int, variance: VarianceParam = "logvar"):
        super().__init__()
        if variance not in ("logvar", "softplus_var", "softplus_std", "logstd"):
            raise ValueError(f"unknown variance parameterisation {variance!r}")
        self.mu = nn.Linear(in_dim, out_dim)
        self.scale = nn.Linear(in_dim, out_dim)
        self.variance = variance

    def std(self, s: torch.Tensor) -> torch.Tensor:
        if self.variance == "logvar":
            return torch.exp(0.5 * s.clamp(LOGVAR_MIN, LOGVAR_MAX))
        if self.variance == "logstd":
            return torch.exp(s.clamp(LOGVAR_MIN / 2, LOGVAR_MAX / 2))
        if self.variance == "softplus_var":
            return torch.sqrt(F.softplus(s) + VAR_FLOOR)
        return F.softplus(s) + VAR_FLOOR**0.5  # softplus_std

    def forward(self, h: torch.Tensor) -> Independent:
        return Independent(Normal(self.mu(h), self.std(self.scale(h))), 1)


class BernoulliHead(nn.Module):
    """Hidden vector -> factorised Bernoulli over the last axis (logits parameterisation)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.logits = nn.Linear(in_dim, out_dim)

    def forward(self, h: torch.Tensor) -> Independent:
        return Independent(Bernoulli(logits=self.logits(h)), 1)


class CategoricalHead(nn.Module):
    """Hidden vector -> ``Cat(y | softmax(W h + b))`` (thesis eq. 2.7)."""

    def __init__(self, in_dim: int, n_classes: int):
        super().__init__()
        self.logits = nn.Linear(in_dim, n_classes)

    def forward(self, h: torch.Tensor) -> Categorical:
        return Categorical(logits=self.logits(h))


class Conditional(nn.Module):
    """``p(out | inputs)``: an MLP over the concatenated inputs followed by a stochastic head.

    ``Conditional(in_dim, hidden, head)`` is called with one or more tensors and returns a distribution.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], head: nn.Module, act: str = "relu", batch_norm: bool = False):
        super().__init__()
        self.body = MLP(in_dim, hidden, act=act, batch_norm=batch_norm)
        self.head = head
        self.batch_norm = batch_norm

    def forward(self, *inputs: torch.Tensor):
        h = concat(*inputs) if len(inputs) > 1 else inputs[0]
        if self.batch_norm:  # BatchNorm1d wants (N, C): fold the sample and class axes into the batch
            lead = h.shape[:-1]
            out = self.body(h.reshape(-1, h.shape[-1]))
            return self.head(out.reshape(*lead, out.shape[-1]))
        return self.head(self.body(h))


def gaussian(in_dim: int, hidden: Sequence[int], out_dim: int, variance: VarianceParam = "logvar", act: str = "relu",
             batch_norm: bool = False) -> Conditional:
    """A Gaussian conditional ``N(mu(in), sigma^2(in))`` with an MLP body."""
    body_out = hidden[-1] if hidden else in_dim
    return Conditional(in_dim, hidden, GaussianHead(body_out, out_dim, variance), act, batch_norm)


def bernoulli(in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "relu", batch_norm: bool = False) -> Conditional:
    """A Bernoulli conditional ``B(x | sigmoid(f(in)))`` with an MLP body."""
    body_out = hidden[-1] if hidden else in_dim
    return Conditional(in_dim, hidden, BernoulliHead(body_out, out_dim), act, batch_norm)


def categorical(in_dim: int, hidden: Sequence[int], n_classes: int, act: str = "relu", batch_norm: bool = False) -> Conditional:
    """A categorical conditional ``Cat(y | softmax(f(in)))`` with an MLP body (a classifier)."""
    body_out = hidden[-1] if hidden else in_dim
    return Conditional(in_dim, hidden, CategoricalHead(body_out, n_classes), act, batch_norm)


def likelihood(kind: str, in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "relu",
               batch_norm: bool = False) -> Conditional:
    """The observation model ``p(x|.)``: ``bernoulli`` for binary images, ``gaussian`` for continuous data."""
    if kind == "bernoulli":
        return bernoulli(in_dim, hidden, out_dim, act, batch_norm)
    if kind == "gaussian":
        return gaussian(in_dim, hidden, out_dim, "logvar", act, batch_norm)
    raise ValueError(f"unknown likelihood {kind!r}; choose 'bernoulli' or 'gaussian'")


def standard_normal(dim: int, like: torch.Tensor, batch_shape: Sequence[int] = ()) -> Independent:
    """The prior ``N(0, I)`` over ``dim`` units, on the device and dtype of ``like``."""
    zeros = torch.zeros(*batch_shape, dim, dtype=like.dtype, device=like.device)
    return Independent(Normal(zeros, torch.ones_like(zeros)), 1)
