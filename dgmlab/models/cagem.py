"""CaGeM, the cluster-aware generative model (thesis section 4.3, eqs. 4.24-4.33; Maaløe, Fraccaro and Winther 2017,
"Semi-supervised generation with cluster-aware generative models", Appendix C sections 3-5).

Generative model (4.24)-(4.25): a discrete cluster variable ``y`` sits between the two continuous latent layers and
depends on the top one (``p(y, z2) != p(y) p(z2)``)::

    p(x, y, z1, z2) = p(x | y, z1) p(z1 | y, z2) p(y | z2) p(z2)
    p(z2) = N(0, I),   p(y | z2) = Cat(pi(z2)),   p(z1 | y, z2) = N(mu(y, z2), sigma^2(y, z2)),
    p(x | z1, y) = Bernoulli(mu(z1, y))  or  N(mu(z1, y), sigma^2(z1, y))

and ``p(x, z1, z2) = sum_y p(x, y, z1, z2)``. ``K`` is the number of clusters: the number of classes when labels are
used (thesis section 4.3: "the amount of classes ... directly translatable to the amount of clusters"), or a free
``n_clusters`` for the unsupervised CaGeM-0 (Table 4.2: 5, 10 and 20 clusters).

Inference model (4.26), bottom-up (Appendix C section 3.1: every arrow of ``p`` reversed, plus a skip connection from
``x`` to ``z2`` that the paper calls "not fundamental"; ``skip_x=False`` removes it)::

    q(y, z1, z2 | x) = q(z1 | x) q(y | z1, x) q(z2 | z1, y, x)
    q(z1 | x) = N(mu(x), sigma^2(x)),   q(y | z1, x) = Cat(pi(z1, x)),   q(z2 | x, y, z1) = N(mu(y, z1, x), sigma^2(.))

Unlabelled bound (4.27), ``y`` summed exactly and ``z1``, ``z2`` sampled by reparameterisation (Appendix C section
3.1): ``S`` draws ``z1_s ~ q(z1|x)``, then for every cluster ``y`` one ``z2_{s,y} ~ q(z2|x,y,z1_s)``::

    f(x, y, z1, z2) = log p(x|y,z1) + log p(z1|y,z2) + log p(y|z2) + log p(z2) - log q(z1|x) - log q(z2|x,y,z1)
    U(x) = E_q(z1|x) [ sum_y q(y|z1,x) E_q(z2|x,y,z1)[f(x, y, z1, z2)] + H[q(y|z1,x)] ]

All ``K`` clusters go through the networks in one batched pass over the cluster-tiled batch (``one_hot_classes`` /
``add_class_axis`` / ``sum_over_classes``, as for the ADGM). The terms are reported as ``log_px`` (reconstruction),
``log_py`` (``sum_y q(y|.) log p(y|z2)``: learned, not a constant), ``kl_z1`` (``log q(z1|x) - sum_y q(y|.)
log p(z1|y,z2)``), ``kl_z2`` (``sum_y q(y|.) [log q(z2|.) - log p(z2)]``, the "KL[q(z2|x,y)||p(z2)]" of Appendix C
section 6) and ``entropy_y``; all are Monte Carlo estimates.

Two classifiers (4.28)-(4.32), both averaged over ``S`` draws of ``z1``:

    inference classifier (4.28)-(4.29):  q(y|x) = E_q(z1|x)[q(y|z1,x)]
    generative classifier (4.30)-(4.32): p(y|x) ~ E_q(z1|x)[ sum_c q(c|z1,x) p(y|z2^c) ],  z2^c ~ q(z2|x,c,z1)

the second is the "cascade of classifiers" (section 4.3): one ``z2^c`` per cluster ``c``, weighted by
``q(c|z1,x)``. ``classify`` uses ``p(y|x)`` by default (``classifier="p"``: the classifier of Appendix C Table 2),
``classifier="q"`` switches to ``q(y|x)``; ``evaluate`` reports both.

Semi-supervised objective (4.33), maximised, in the mini-batch weighting of the other semi-supervised models
(reproduction notes G9)::

    I = mean_u U(x_u) - alpha * mean_l [ H(y_l, p(y|x_l)) + H(y_l, q(y|x_l)) ],   alpha = beta * N / N_l

There is no labelled bound in (4.33): labels enter only through the two cross-entropies, and these are functions of
``theta_y`` (the network of ``p(y|z2)``) and ``phi_y`` (the network of ``q(y|z1,x)``) only. The samples of ``z1`` and
``z2`` in the cross-entropy pass are drawn without gradient, so "the gradient will be 0 for the remainder of the
model parameters" (section 4.3). The cascade ``H_p`` reaches ``phi_y`` through its weights ``q(c|z1,x)``: Appendix C
writes ``H_p(theta_y, phi_y)``, while (4.33) writes ``H_{theta_y}``; we follow Appendix C (reproduction notes:
CaGeM cross-entropy gradients). The unlabelled stream is the whole training set, labelled images included (the
batch scheme of the other semi-supervised models; (4.33) sums over ``x_u`` only; reproduction notes: CaGeM
unlabelled stream).

Without labels (CaGeM-0) a batch holds no labelled points (``{"x": ...}``, or an empty ``x_l``) and ``step`` uses the
unlabelled bound alone. ``n_clusters=K`` makes the model an unsupervised one with ``K`` clusters: labelled points in
a batch are then not used, ``evaluate`` reports ``test_cluster_accuracy`` (every cluster mapped to its majority
class) instead of a test error.

Networks (Appendix C section 5): every collection of incoming edges of a node is ``d = NN(inputs)``, ``mu =
Linear(d)``, ``log sigma = Linear(d)`` (the ``logstd`` head); Bernoulli outputs are an NN with a sigmoid output;
ReLU and batch normalisation between dense layers, with statistics collected only during the unlabelled pass.
"2-layered neural feed-forward networks with respectively 1024 and 512 units" does not say which network gets
which; we read it as 1024-1024 for the networks that see ``x`` (``q(z1|x)``, ``q(y|z1,x)``, ``p(x|y,z1)``; option
``hidden``) and 512-512 for the networks between ``z1``/``y`` and ``z2`` (``q(z2|x,y,z1)``, ``p(z1|y,z2)``,
``p(y|z2)``; option ``hidden_z``) (reproduction notes: CaGeM network widths). The other reading, every network
1024-512, is ``hidden=(1024, 512), hidden_z=(1024, 512)``. ``q(z2|x,y,z1)`` is one network over the concatenation
``(z1, y, x)``: the skip connection from ``x`` is an extra input of its first layer, and the network counts as a
``z2``-side one (reproduction notes: CaGeM skip connection).

Importance-weighted log-likelihood (thesis eq. 3.31 with ``y`` summed out; reproduction notes rn-iw-discrete-y):
``z1`` (before ``y`` in the inference model) is drawn once per importance sample, ``z2`` once per (sample, cluster)::

    w_i = sum_y p(x, y, z1_i, z2_{i,y}) / (q(z1_i|x) q(z2_{i,y}|x,y,z1_i))
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch

from dgmlab import nn as dnn
from dgmlab.models import register
from dgmlab.models.base import Output, check_labels
from dgmlab.models.m2 import SemiSupervisedConfig, SemiSupervisedModel
from dgmlab.nn import frozen_running_stats, running_stats_mode
from dgmlab.objectives.kl import kl_temperature
from dgmlab.objectives.semisupervised import (Bound, add_class_axis, categorical_entropy, classification_loss,
                                              glorot_init, one_hot, one_hot_classes, reparameterize,
                                              sum_over_classes, with_fixed_variance)

CLASSIFIERS = ("p", "q")


def _positive_sizes(name: str, sizes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        sizes = tuple(int(h) for h in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a tuple of layer widths, e.g. (512, 512), got {sizes!r}") from None
    if any(h < 1 for h in sizes):
        raise ValueError(f"{name} must hold positive layer widths, got {sizes}")
    return sizes


@dataclass
class CaGeMConfig(SemiSupervisedConfig):
    """CaGeM options (see :class:`dgmlab.models.m2.SemiSupervisedConfig` for the shared ones); the defaults are the
    thesis' MNIST sizes (section 4.3; Appendix C section 5).

    Args:
        hidden: the networks that see ``x``: ``q(z1|x)``, ``q(y|z1,x)``, ``p(x|y,z1)`` (1024-1024; reproduction
            notes: CaGeM network widths).
        hidden_z: the networks between ``z1``/``y`` and ``z2``: ``q(z2|x,y,z1)``, ``p(z1|y,z2)``, ``p(y|z2)``
            (512-512).
        z_dim: size of the bottom latent ``z1`` (64).
        z2_dim: size of the top latent ``z2`` (32; 2 for the visualisation model of thesis Fig. 4.9).
        n_clusters: ``0`` (default): one cluster per class, semi-supervised (CaGeM-N); ``K >= 2``: the unsupervised
            CaGeM-0 with ``K`` clusters (thesis Table 4.2: 5, 10, 20): labels are not used for training and
            ``evaluate`` reports the cluster accuracy.
        classifier: what ``classify`` / ``test_error`` use: ``"p"`` = the cascade ``p(y|x)`` (4.30)-(4.32), the
            classifier of Appendix C Table 2; ``"q"`` = ``q(y|x)`` (4.28)-(4.29).
        skip_x: the skip connection ``x -> z2`` in ``q(z2|x,y,z1)`` (Appendix C section 3.1).
        warmup_epochs: KL temperature 0 -> 1 over the first 100 epochs (Appendix C section 5; the start value 0 and
            the linear shape are ours: reproduction notes rn-warmup).
        beta: ``alpha = beta * N / N_l`` (Appendix C section 4; the value of beta is not given: 0.1 as for the
            ADGM, reproduction notes: CaGeM hyper-parameters).
    """

    hidden: tuple[int, ...] = (1024, 1024)
    hidden_z: tuple[int, ...] = (512, 512)
    z_dim: int = 64
    z2_dim: int = 32
    n_clusters: int = 0
    classifier: str = "p"
    skip_x: bool = True
    warmup_epochs: int = 100

    def __post_init__(self):
        for name in ("n_train", "n_labelled"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        super().__post_init__()
        self.hidden = _positive_sizes("hidden", self.hidden)
        self.hidden_z = _positive_sizes("hidden_z", self.hidden_z)
        if not isinstance(self.z2_dim, int) or isinstance(self.z2_dim, bool) or self.z2_dim < 1:
            raise ValueError(f"z2_dim must be a positive integer, got {self.z2_dim!r}")
        if (not isinstance(self.n_clusters, int) or isinstance(self.n_clusters, bool) or self.n_clusters < 0
                or self.n_clusters == 1):
            raise ValueError(f"n_clusters must be 0 (one cluster per class, semi-supervised) or an integer >= 2 "
                             f"(unsupervised CaGeM-0 with that many clusters), got {self.n_clusters!r}")
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {self.classifier!r}; choose 'p' (the cascade p(y|x), eqs. "
                             "4.30-4.32) or 'q' (the inference classifier q(y|x), eqs. 4.28-4.29)")

    @property
    def clusters(self) -> int:
        """``K``, the number of values of ``y``: ``n_clusters`` if set, else the number of classes."""
        return self.n_clusters or self.n_classes

    @property
    def unsupervised(self) -> bool:
        """True for CaGeM-0 with a free number of clusters (``n_clusters`` set): labels are not used."""
        return self.n_clusters > 0


def cluster_accuracy(clusters: torch.Tensor, y: torch.Tensor, n_clusters: int, n_classes: int) -> float:
    """Accuracy in % of the best many-to-one map from clusters to classes: every cluster is mapped to the majority
    true class of its points (empty clusters map to nothing), so with one cluster per point it is 100 %.

    Args:
        clusters: ``(N,)`` cluster indices in ``0..n_clusters-1``.
        y: ``(N,)`` true classes in ``0..n_classes-1``.
    """
    check_labels(clusters, n_clusters, "clusters")
    check_labels(y, n_classes, "y")
    if clusters.shape != y.shape or clusters.dim() != 1:
        raise ValueError(f"clusters and y must be two (N,) tensors of the same length, got {tuple(clusters.shape)} "
                         f"and {tuple(y.shape)}")
    if len(y) == 0:
        raise ValueError("cluster accuracy of an empty set is undefined")
    counts = torch.bincount(clusters.long() * n_classes + y.long().to(clusters.device),
                            minlength=n_clusters * n_classes).view(n_clusters, n_classes)
    return 100.0 * counts.max(1).values.sum().item() / len(y)


@register
class CaGeM(SemiSupervisedModel):
    """CaGeM: cluster-aware generative model, p(x|y,z1) p(z1|y,z2) p(y|z2) p(z2) (thesis 4.24-4.33)."""

    name = "cagem"
    Config = CaGeMConfig
    _unreported_terms: ClassVar[tuple[str, ...]] = ()  # log p(y|z2) is learned: every term is informative
    trim_mnist: ClassVar[bool] = False  # permutation-invariant 784-pixel MNIST (Appendix C section 5)
    train_defaults: ClassVar[dict] = {"lr": 1e-3, "batch_size": 100, "labelled_batch_size": 100,
                                      "lr_decay": 0.75, "lr_decay_every": 50, "lr_floor": 0.0,
                                      "clip_grad_norm": None}  # Appendix C section 5
    recipes: ClassVar[dict[str, dict]] = {
        "mnist": {"model": {}, "train": {"epochs": 1000},
                  "source": "thesis 4.3 and Appendix C section 5: 784 pixels, dim z1 = 64, dim z2 = 32, 1024-1024 "
                            "networks on the x side and 512-512 between z1/y and z2 (reproduction notes: CaGeM "
                            "network widths), ReLU + BN with statistics from the unlabelled pass, 10 clusters, "
                            "batches of 100 + 100 labelled, Adam 1e-3 x 0.75 every 50 epochs, KL temperature over "
                            "the first 100 epochs, 1000 epochs (reproduction notes: CaGeM hyper-parameters); "
                            "--labels 20 / 50 / 100 for CaGeM-20/50/100"},
    }

    def __init__(self, config: CaGeMConfig):
        super().__init__(config)
        c, k = config, config.clusters
        act, bn = c.activation, c.batch_norm
        if c.unsupervised:
            self.setting = "unsupervised"  # instance attribute: batches {"x": ...}; the class stays semi-supervised
        self.q_z1 = dnn.gaussian(c.x_dim, c.hidden, c.z_dim, "logstd", act, bn)  # q(z1|x)           (4.26)
        self.q_y = dnn.categorical(c.z_dim + c.x_dim, c.hidden, k, act, bn)  # q(y|z1,x)            (4.26)
        q_z2_in = c.z_dim + k + (c.x_dim if c.skip_x else 0)
        self.q_z2 = dnn.gaussian(q_z2_in, c.hidden_z, c.z2_dim, "logstd", act, bn)  # q(z2|x,y,z1)  (4.26)
        self.p_y = dnn.categorical(c.z2_dim, c.hidden_z, k, act, bn)  # p(y|z2)                     (4.25)
        self.p_z1 = dnn.gaussian(c.z2_dim + k, c.hidden_z, c.z_dim, "logstd", act, bn)  # p(z1|y,z2) (4.25)
        if c.likelihood == "bernoulli":  # p(x|z1,y)                                                 (4.25)
            self.p_x = dnn.bernoulli(c.z_dim + k, c.hidden, c.x_dim, act, bn)
        else:
            self.p_x = dnn.gaussian(c.z_dim + k, c.hidden, c.x_dim, "logstd", act, bn)
        glorot_init(self)

    # ----------------------------------------------------------------------------------------- distributions
    @property
    def n_clusters(self) -> int:
        """``K``: the number of values of ``y``."""
        return self.config.clusters

    def prior_z2(self, like: torch.Tensor):
        """``p(z2) = N(0, I)`` (4.25)."""
        return dnn.standard_normal(self.config.z2_dim, like)

    def inference_z2(self, x: torch.Tensor, y_onehot: torch.Tensor, z1: torch.Tensor):
        """``q(z2 | x, y, z1)`` (4.26), with the skip connection from ``x`` unless ``skip_x=False``."""
        return self.q_z2(z1, y_onehot, x) if self.config.skip_x else self.q_z2(z1, y_onehot)

    def generative_x(self, y_onehot: torch.Tensor, z1: torch.Tensor):
        """``p(x | z1, y)`` (4.25)."""
        return with_fixed_variance(self.p_x(z1, y_onehot), self.config.x_logvar)

    def _samples(self, samples: int | None, noise: dict | None, default: int) -> int:
        if noise is not None and "z1" in noise:
            return noise["z1"].shape[0]
        return super()._samples(samples, None, default)

    def _joint_terms(self, x: torch.Tensor, y_onehot: torch.Tensor, samples: int,
                     noise: dict | None) -> dict[str, torch.Tensor]:
        """The log-densities of ``f`` (4.27) at ``z1 ~ q(z1|x)`` and ``z2 ~ q(z2|x,y,z1)`` for every ``y`` in
        ``y_onehot``: ``(B, K)`` one-hot labels give ``(S, B)`` terms; the cluster grid ``(K, 1, K)`` gives ``(S, K, B)``
        terms (one ``z2`` per sample and cluster) and ``(S, B)`` for the ``z1``-only terms.

        ``noise``: ``{"z1": (S, B, z_dim), "z2": (S, B, z2_dim) or (S, K, B, z2_dim)}`` (optional).
        """
        noise = noise or {}
        q_z1 = self.q_z1(x)
        z1 = reparameterize(q_z1, noise.get("z1"), (samples,))  # (S, B, z_dim)
        grid = y_onehot.dim() == 3
        z1_k = add_class_axis(z1) if grid else z1
        q_z2 = self.inference_z2(x, y_onehot, z1_k)
        z2 = reparameterize(q_z2, noise.get("z2"))  # (S, [K,] B, z2_dim)
        log_p_y = self.p_y(z2).logits  # (S, [K,] B, K) normalised log p(.|z2)
        return {"z1": z1,
                "log_qz1": q_z1.log_prob(z1),
                "log_class_q": self.q_y(z1, x).logits,  # (S, B, K) normalised log q(y|z1,x)
                "log_px": self.generative_x(y_onehot, z1_k).log_prob(x),
                "log_pz1": self.p_z1(z2, y_onehot).log_prob(z1_k),
                "log_py": (log_p_y * y_onehot).sum(-1),  # log p(y|z2) at the y that z2 was drawn for
                "log_pz2": self.prior_z2(x).log_prob(z2),
                "log_qz2": q_z2.log_prob(z2)}

    @staticmethod
    def _bound(log_px, log_py, kl_z1, kl_z2, entropy_y, class_log_probs=None) -> Bound:
        terms = {"log_px": log_px, "log_py": log_py, "kl_z1": kl_z1, "kl_z2": kl_z2, "entropy_y": entropy_y}
        shape = torch.broadcast_shapes(*(t.shape for t in terms.values()))
        terms = {k: v.expand(shape) for k, v in terms.items()}
        return Bound(log_px + log_py - kl_z1 - kl_z2 + entropy_y, terms, class_log_probs)

    # ---------------------------------------------------------------------------------------------- bounds
    def _labelled(self, x, y, samples, noise) -> Bound:
        """A bound on ``log p(x, y)`` with ``y`` observed: ``E_q(z1|x) q(z2|x,y,z1)[f(x, y, z1, z2)]``.

        Not part of the training objective (4.33), where labels enter through the cross-entropies only; it is the
        building block of (4.27) (``U(x) = sum_y q(y|z1,x) [ELBO_l(x, y) - log q(y|z1,x)]`` for one shared ``z1``).
        ``class_log_probs`` holds ``log q(y|z1,x)`` at the same ``z1``."""
        t = self._joint_terms(x, one_hot(y, self.n_clusters, x), samples, noise)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return self._bound(t["log_px"].mean(0), t["log_py"].mean(0), (t["log_qz1"] - t["log_pz1"]).mean(0),
                           (t["log_qz2"] - t["log_pz2"]).mean(0), zero, class_log_probs=t["log_class_q"])

    def _unlabelled(self, x, samples, noise) -> Bound:
        """``U(x)`` (4.27): all ``K`` clusters in one pass over the cluster-tiled batch, weighted by ``q(y|z1,x)``."""
        t = self._joint_terms(x, one_hot_classes(self.n_clusters, x), samples, noise)
        log_q_y = t["log_class_q"]  # (S, B, K)
        q_y = log_q_y.exp()
        return self._bound(
            log_px=sum_over_classes(q_y, t["log_px"]).mean(0),
            log_py=sum_over_classes(q_y, t["log_py"]).mean(0),
            kl_z1=(t["log_qz1"] - sum_over_classes(q_y, t["log_pz1"])).mean(0),
            kl_z2=sum_over_classes(q_y, t["log_qz2"] - t["log_pz2"]).mean(0),
            entropy_y=categorical_entropy(log_q_y).mean(0),
            class_log_probs=log_q_y)

    def _log_weights(self, x: torch.Tensor, k: int, noise: dict | None = None) -> torch.Tensor:
        """``log sum_y p(x, y, z1, z2_y) / (q(z1|x) q(z2_y|x,y,z1))``: ``z1`` once per importance sample, ``z2``
        once per (sample, cluster) (reproduction notes rn-iw-discrete-y). Shape ``(k, B)``.

        ``noise`` (optional, as for the unlabelled bound) fixes the draws: with one sample and the same noise
        this is at least ``U(x)`` point by point (Jensen's inequality over ``y``)."""
        t = self._joint_terms(x, one_hot_classes(self.n_clusters, x), k, noise)
        log_w = t["log_px"] + t["log_pz1"] + t["log_py"] + t["log_pz2"] - t["log_qz2"]  # (k, K, B)
        return torch.logsumexp(log_w, dim=1) - t["log_qz1"]

    # ------------------------------------------------------------------------------------------ classifiers
    def classifier_log_probs(self, x: torch.Tensor, samples: int, noise: dict | None = None,
                             detach_latents: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log q(y|z1_s,x), log p(y|x; z1_s))``, each ``(S, B, K)``: the inference classifier (4.28)-(4.29) and
        the cascade (4.30)-(4.32) ``log sum_c q(c|z1_s,x) p(y|z2^c_s)`` with ``z2^c_s ~ q(z2|x,c,z1_s)``.

        ``detach_latents``: draw ``z1`` and ``z2`` without gradient, so that a loss of these log-probabilities
        reaches only the networks of ``q(y|z1,x)`` and ``p(y|z2)`` (``phi_y`` and ``theta_y`` of eq. 4.33).
        ``noise``: ``{"z1": (S, B, z_dim), "z2": (S, K, B, z2_dim)}`` (optional)."""
        noise = noise or {}
        grad_off = torch.no_grad() if detach_latents else nullcontext()
        with grad_off:
            z1 = reparameterize(self.q_z1(x), noise.get("z1"), (samples,))  # (S, B, z_dim)
        log_q = self.q_y(z1, x).logits  # (S, B, K)
        classes = one_hot_classes(self.n_clusters, x)
        with grad_off:
            z2 = reparameterize(self.inference_z2(x, classes, add_class_axis(z1)), noise.get("z2"))  # (S, K, B, .)
        log_p_given_z2 = self.p_y(z2).logits  # (S, K=c, B, K=y)
        log_p = torch.logsumexp(log_q.transpose(-1, -2).unsqueeze(-1) + log_p_given_z2, dim=-3)  # (S, B, K)
        return log_q, log_p

    def _class_log_probs(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        log_q, log_p = self.classifier_log_probs(x, samples)
        return log_p if self.config.classifier == "p" else log_q

    def classification_losses(self, x: torch.Tensor, y: torch.Tensor,
                              samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(H(y, p(y|x)), H(y, q(y|x)))`` per labelled point ``(B,)`` (eq. 4.33), with the latents drawn without
        gradient (only ``theta_y`` and ``phi_y`` learn from labels) and the softmaxes averaged over the ``samples``
        draws inside the log (``ce="marginal"``) or not (``ce="per_sample"``)."""
        self._check_x(x)
        self._check_y(y, x)
        if self.config.unsupervised:
            raise ValueError("this CaGeM is unsupervised (n_clusters is set): its clusters are not the classes, so "
                             "there is no classification loss; use n_clusters=0 to train with labels")
        s = self._samples(samples, None, self.config.mc_samples)
        log_q, log_p = self.classifier_log_probs(x, s, detach_latents=True)
        return classification_loss(log_p, y, self.config.ce), classification_loss(log_q, y, self.config.ce)

    # ---------------------------------------------------------------------------------------------- training
    def _split_batch(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(x_u, x_l, y_l)``; ``x_l = y_l = None`` when the batch holds no labelled points (``{"x": ...}`` or an
        empty ``x_l``) or the model is unsupervised."""
        if "x_u" not in batch:
            if "x" not in batch:
                raise KeyError(f"a CaGeM batch needs x_u (with x_l, y_l when labelled) or x; got keys {sorted(batch)} "
                               "(build batches with dgmlab.data.iterate_batches)")
            self._check_x(batch["x"], "x")
            return batch["x"], None, None
        if "x_l" not in batch or len(batch["x_l"]) == 0 or self.config.unsupervised:
            self._check_x(batch["x_u"], "x_u")
            return batch["x_u"], None, None
        return self._check_batch(batch)

    def step(self, batch: dict, epoch: int) -> Output:
        """One mini-batch of eq. (4.33): ``mean_u U(x_u) - alpha * mean_l [H_p + H_q]``, warm-up tempering the
        bound. Without labelled points only the unlabelled bound is used (CaGeM-0). The labelled (cross-entropy)
        pass is normalised with its own batch statistics but leaves the running averages alone."""
        x_u, x_l, y_l = self._split_batch(batch)
        s = self.config.mc_samples
        temp = kl_temperature(epoch, self.config.warmup_epochs)
        unl = self._unlabelled(x_u, s, None)
        objective = unl.tempered(temp).mean()
        terms = {"unlabelled_bound": unl.value.mean().detach(), **unl.means("u_")}
        metrics = {"unlabelled_bound": terms["unlabelled_bound"], "temperature": temp}
        if x_l is not None:
            labelled_norm = frozen_running_stats if self.config.bn_labelled == "batch" else running_stats_mode
            with labelled_norm(self):
                log_q, log_p = self.classifier_log_probs(x_l, s, detach_latents=True)
            ce_p = classification_loss(log_p, y_l, self.config.ce)
            ce_q = classification_loss(log_q, y_l, self.config.ce)
            objective = objective - self.alpha * (ce_p + ce_q).mean()
            with torch.no_grad():
                chosen = log_p if self.config.classifier == "p" else log_q
                error_l = (torch.logsumexp(chosen, 0).argmax(-1) != y_l).float().mean() * 100
            terms.update(cross_entropy_p=ce_p.mean().detach(), cross_entropy_q=ce_q.mean().detach())
            metrics.update(cross_entropy_p=terms["cross_entropy_p"], cross_entropy_q=terms["cross_entropy_q"],
                           labelled_error=error_l)
        return Output(-objective, terms, metrics)

    # -------------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000,
                 samples: int | None = None) -> dict[str, float]:
        """``test_elbo`` (mean ``U(x)``, one sample) and its terms; with ``y``: ``test_error`` (% wrong, the
        configured classifier) and the other classifier's error (``test_error_q`` or ``test_error_p``); for the
        unsupervised model ``test_cluster_accuracy`` (%, every cluster mapped to its majority class) instead."""
        self._check_x(x)
        if y is not None:
            self._check_y(y, x)
        out = super().evaluate(x, None, batch_size)  # test_elbo and its terms
        if y is None:
            return out
        was_training = self.training
        self.eval()
        s = self._samples(samples, None, self.config.eval_samples)
        picks, picks_other = [], []
        for xb in x.split(batch_size):
            log_q, log_p = self.classifier_log_probs(xb, s)
            chosen, other = (log_p, log_q) if self.config.classifier == "p" else (log_q, log_p)
            picks.append(torch.logsumexp(chosen, 0).argmax(-1))
            picks_other.append(torch.logsumexp(other, 0).argmax(-1))
        self.train(was_training)
        picks, picks_other = torch.cat(picks), torch.cat(picks_other)
        if self.config.unsupervised:
            return {"test_cluster_accuracy": cluster_accuracy(picks, y, self.n_clusters, self.config.n_classes),
                    **out}
        other_name = "q" if self.config.classifier == "p" else "p"
        return {"test_error": 100.0 * (picks != y).float().mean().item(),
                f"test_error_{other_name}": 100.0 * (picks_other != y).float().mean().item(), **out}

    @property
    def _n_summed_values(self) -> int:
        """The importance-weighted log-likelihood sums over the clusters (the classes when supervised)."""
        return self.n_clusters

    # ------------------------------------------------------------------------------------ analysis helpers
    @torch.no_grad()
    def generate(self, z2: torch.Tensor, y=None) -> torch.Tensor:
        """Mean of ``p(x | z1, y)`` for top latents ``z2`` ``(B, z2_dim)`` with ``z1`` the mean of ``p(z1|y,z2)``:
        random generation draws ``y ~ p(y|z2)`` (``y=None``), class-conditional generation fixes ``y`` (an int or
        ``(B,)``), as in thesis Fig. 4.9."""
        if y is None:
            y = self.p_y(z2).sample()
        y_onehot = self._labels_like(y, z2)
        z1 = self.p_z1(z2, y_onehot).mean
        return self.generative_x(y_onehot, z1).mean

    def _labels_like(self, y, like: torch.Tensor) -> torch.Tensor:
        """An int or ``(B,)`` cluster index -> one-hot ``(B, K)`` over the ``K`` clusters."""
        y = torch.as_tensor(y, device=like.device)
        if y.dim() == 0:
            y = y.expand(like.shape[0])
        check_labels(y, self.n_clusters)
        return one_hot(y, self.n_clusters, like)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z1, z2)`` for the PCA plots of Appendix C Fig. 5: the mean of ``q(z1|x)`` and the mean of
        ``sum_y q(y|z1,x) q(z2|x,y,z1)`` at that ``z1``."""
        self._check_x(x)
        z1 = self.q_z1(x).mean
        q_y = self.q_y(z1, x).probs  # (B, K)
        means = self.inference_z2(x, one_hot_classes(self.n_clusters, x), add_class_axis(z1)).mean  # (K, B, .)
        return z1, (q_y.transpose(0, 1).unsqueeze(-1) * means).sum(0)


__all__ = ["CaGeM", "CaGeMConfig", "cluster_accuracy"]
