"""Shared pieces of the semi-supervised bounds of thesis chapter 4 (M2, M1+M2, ADGM, SDGM).

The models differ in their networks; what they share lives here:

* the **exact sum over classes as one batched tensor operation** (thesis section 4.2, "concluding remarks"): the
  unlabelled batch is not sent through the networks ``K`` times; instead a class axis of length ``K`` is added in front
  of the batch axis (``one_hot_classes``) so that every network sees a ``(S, K, B, .)`` tensor, and the terms
  ``f(x, y, a, z)`` come out with shape ``(S, K, B)`` for all samples ``s``, classes ``y`` and points ``b`` at once;
  ``sum_over_classes`` then weights them by ``q(y|.)`` (thesis eq. 4.8, 4.20; Appendix A eq. 17);
* the entropy term ``H[q(y|.)]`` and the classification loss ``alpha * CE`` (thesis eq. 4.10, 4.23; A eq. 12);
* ``alpha = beta * N / N_l`` (A eq. 12 and reproduction notes G9: the authors' code uses N = the whole training set);
* a :class:`Bound` record: the per-point bound in nats (natural sign, to be maximised) with its named terms, and its
  tempered version for warm-up (thesis eq. 5.5; the temperature itself is :func:`dgmlab.objectives.kl.kl_temperature`,
  advanced per epoch).

The importance-weighted log-likelihood uses :func:`dgmlab.objectives.importance.chunked_log_mean_exp`.

Sign convention (reproduction notes G1): bounds are stored with their natural sign; the loss to minimise is
``-(mean_l[ELBO_l - alpha * CE] + mean_u[U])`` (reproduction notes G9, the weighting of the authors' public code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

CE_MODES = ("marginal", "per_sample")


# ----------------------------------------------------------------------------------------------------------- weights
def alpha_weight(beta: float, n_train: int, n_labelled: int) -> float:
    """``alpha = beta * N / N_l``: the weight of the labelled cross-entropy (A eq. 12; reproduction notes G9).

    The paper writes ``beta * (N_l + N_u) / N_l``; in the authors' code the unlabelled set is the whole training set,
    so ``N = N_l + N_u`` is simply the training-set size. MNIST with 100 labels and beta = 0.1 gives alpha = 60.
    """
    if n_train <= 0 or n_labelled <= 0:
        raise ValueError(f"alpha needs positive n_train and n_labelled, got n_train={n_train}, n_labelled={n_labelled}; "
                         "build the config with dgmlab.data.make_config(Config, data) or set fixed_alpha")
    if n_labelled > n_train:
        raise ValueError(f"n_labelled={n_labelled} is larger than the training set (n_train={n_train}); "
                         "there cannot be more labelled points than points")
    return beta * n_train / n_labelled


# ------------------------------------------------------------------------------------------------------------ bounds
@dataclass
class Bound:
    """A variational bound evaluated per data point.

    Attributes:
        value: ``(B,)`` the bound in nats (natural sign: a lower bound on ``log p(x)`` or ``log p(x, y)``).
        terms: named ``(B,)`` tensors that add up to ``value``:
            ``value = log_px + log_py - kl_z - kl_a + entropy_y`` where ``kl_*`` are Monte Carlo (or analytic)
            estimates of ``E[log q - log p]`` and, for the unlabelled bound, every term is weighted by ``q(y|.)``.
        class_log_probs: ``(S, B, K)`` log ``q(y|.)`` at the samples used (for the classification loss), or ``None``.
    """

    value: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    class_log_probs: torch.Tensor | None = None

    def tempered(self, temp: float) -> torch.Tensor:
        """The bound with every ``log p - log q`` term except the observation likelihood multiplied by ``temp``
        (reproduction notes rn-warmup, warm-up for auxiliary models). ``temp = 1`` gives ``value``."""
        if temp == 1.0:
            return self.value
        log_px = self.terms["log_px"]
        return log_px + temp * (self.value - log_px)

    def means(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Batch means of the value and the terms, detached, for logging."""
        out = {f"{prefix}bound": self.value.mean().detach()}
        out.update({f"{prefix}{k}": v.mean().detach() for k, v in self.terms.items()})
        return out


def make_bound(log_px: torch.Tensor, log_py: torch.Tensor, kl_z: torch.Tensor, kl_a: torch.Tensor,
               entropy_y: torch.Tensor, class_log_probs: torch.Tensor | None = None) -> Bound:
    """Assemble a :class:`Bound` from its terms (all broadcast to the batch shape)."""
    terms = {"log_px": log_px, "log_py": log_py, "kl_z": kl_z, "kl_a": kl_a, "entropy_y": entropy_y}
    shape = torch.broadcast_shapes(*(t.shape for t in terms.values()))
    terms = {k: v.expand(shape) for k, v in terms.items()}
    value = log_px + log_py - kl_z - kl_a + entropy_y
    return Bound(value, terms, class_log_probs)


# -------------------------------------------------------------------------------------------- the sum over classes
def one_hot_classes(n_classes: int, like: torch.Tensor) -> torch.Tensor:
    """All ``K`` one-hot labels as a ``(K, 1, K)`` tensor (class axis, broadcast batch axis, one-hot axis).

    Concatenated (with broadcasting, :func:`dgmlab.nn.concat`) to a ``(..., 1, B, D)`` input it tiles the batch over
    the classes: the networks then evaluate all ``(class, point)`` pairs in one pass.
    """
    return torch.eye(n_classes, dtype=like.dtype, device=like.device).unsqueeze(1)


def one_hot(y: torch.Tensor, n_classes: int, like: torch.Tensor) -> torch.Tensor:
    """Integer labels ``(B,)`` -> one-hot ``(B, K)`` with the dtype and device of ``like``."""
    return F.one_hot(y.long(), n_classes).to(dtype=like.dtype, device=like.device)


def add_class_axis(t: torch.Tensor) -> torch.Tensor:
    """``(..., B, D) -> (..., 1, B, D)``: a view that broadcasts against the class axis of :func:`one_hot_classes`."""
    return t.unsqueeze(-3)


def sum_over_classes(class_probs: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``sum_y q(y|.) f(y)`` for all points at once.

    Args:
        class_probs: ``(..., B, K)`` probabilities ``q(y|.)``.
        f: ``(..., K, B)`` values per class (the output of the class-tiled networks).
    Returns:
        ``(..., B)``.
    """
    return (class_probs.transpose(-1, -2) * f).sum(-2)


def categorical_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """``H[q(y)] = -sum_y q(y) log q(y)`` over the last axis (thesis eq. 4.8, the entropy term)."""
    return -(log_probs.exp() * log_probs).sum(-1)


def classification_loss(class_log_probs: torch.Tensor, y: torch.Tensor, mode: str = "marginal") -> torch.Tensor:
    """Cross-entropy of the labelled points ``H(y, q(y|.))`` (thesis eq. 4.10, 4.23; A eq. 12), per point ``(B,)``.

    Args:
        class_log_probs: ``(S, B, K)`` log ``q(y|a_s, x)`` for ``S`` Monte Carlo samples of the auxiliary variable.
        y: ``(B,)`` integer labels.
        mode: ``"marginal"`` = ``-log mean_s q(y|a_s, x)`` (the softmax averaged inside the log, as in the authors'
            code and as used for prediction); ``"per_sample"`` = ``mean_s -log q(y|a_s, x)`` (A eq. 12 read
            literally). The two agree for ``S = 1``.
    """
    if mode not in CE_MODES:
        raise ValueError(f"unknown cross-entropy mode {mode!r}; choose one of {CE_MODES}")
    picked = class_log_probs.gather(-1, y.long().view(1, -1, 1).expand(class_log_probs.shape[0], -1, 1)).squeeze(-1)
    if mode == "per_sample":
        return -picked.mean(0)
    return -(torch.logsumexp(picked, 0) - math.log(picked.shape[0]))


def uniform_log_prior(n_classes: int, like: torch.Tensor) -> torch.Tensor:
    """``log p(y) = -log K`` for the uniform class prior (reproduction notes G14: kept so that bounds are true nats)."""
    return torch.full((), -math.log(n_classes), dtype=like.dtype, device=like.device)


# -------------------------------------------------------------------------------------------------------- sampling
def reparameterize(dist: Independent, eps: torch.Tensor | None = None,
                   sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
    """``z = mu + sigma * eps`` (thesis eq. 3.19-3.21). With ``eps=None`` fresh noise is drawn; passing ``eps`` makes
    two computations use the same random numbers (used by the tests to compare against brute force)."""
    if eps is None:
        return dist.rsample(sample_shape)
    base = dist.base_dist
    return base.loc + base.scale * eps


def with_fixed_variance(dist: Independent, logvar: float | None) -> Independent:
    """A Gaussian ``p(x|.)`` with its variance replaced by the constant ``exp(logvar)`` (``None``: unchanged).

    A fixed observation noise stops a 2-d toy model from explaining the data by its variance alone (which lets the
    latent ``z`` collapse onto the prior); the learned variance head is then unused."""
    if logvar is None:
        return dist
    loc = dist.base_dist.loc
    return Independent(Normal(loc, torch.full_like(loc, math.exp(0.5 * logvar))), 1)


def unit_log_prob(dist: Distribution, value: torch.Tensor) -> torch.Tensor:
    """Per-unit log density of a factorised distribution (the log-prob before summing over the event axis)."""
    base = dist.base_dist if isinstance(dist, Independent) else dist
    return base.log_prob(value)


# ------------------------------------------------------------------------------------------------ initialisation
def glorot_init(module: nn.Module, head_std: float = 1e-3) -> None:
    """The initialisation of the authors' code (A section 3, reproduction notes rn-init): Glorot-normal weights (ReLU gain in
    hidden layers with ReLU, gain 1 for classifier and Bernoulli outputs), and ``N(0, head_std^2)`` weights for the
    mean and variance layers of every Gaussian, so that each Gaussian starts close to ``N(0, I)``. All biases are
    ``N(0, head_std^2)``."""
    from dgmlab.nn import MLP, GaussianHead

    for m in module.modules():  # every linear layer: Glorot
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.normal_(m.bias, std=head_std)
    for m in module.modules():  # hidden layers followed by ReLU: Glorot with the ReLU gain
        if isinstance(m, MLP) and any(isinstance(a, nn.ReLU) for a in m):
            for layer in m:
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_normal_(layer.weight, gain=nn.init.calculate_gain("relu"))
    for m in module.modules():  # Gaussian heads: start near N(0, I)
        if isinstance(m, GaussianHead):
            nn.init.normal_(m.mu.weight, std=head_std)
            nn.init.normal_(m.scale.weight, std=head_std)


__all__ = ["Bound", "CE_MODES", "add_class_axis", "alpha_weight", "categorical_entropy", "classification_loss",
           "glorot_init", "make_bound", "one_hot", "one_hot_classes", "reparameterize", "sum_over_classes",
           "uniform_log_prior", "unit_log_prob", "with_fixed_variance"]
