"""M2, the semi-supervised VAE of Kingma et al. (2014) (thesis section 4.1, eqs. 4.2-4.11; reproduction notes rn-m2), and the
machinery it shares with M1+M2, the ADGM and the SDGM (:class:`SemiSupervisedModel`).

Generative model (4.2)-(4.4)::

    p(x, y, z) = p(x | y, z) p(y) p(z),   p(z) = N(0, I),   p(y) = Cat(1/K),
    p(x | y, z) = Bernoulli(mu(y, z))  or  N(mu(y, z), sigma^2(y, z))

Inference model (4.5)-(4.6)::

    q(y, z | x) = q(z | x, y) q(y | x),   q(z | x, y) = N(mu(x, y), sigma^2(x, y)),   q(y | x) = Cat(pi(x))

Labelled bound (4.9), with ``log p(y)`` kept (reproduction notes G14)::

    ELBO_l(x, y) = E_q(z|x,y)[log p(x|y,z)] - KL(q(z|x,y) || p(z)) + log p(y)

Unlabelled bound (4.7)-(4.8): y is summed out exactly, the entropy of the classifier is added::

    U(x) = sum_y q(y|x) ELBO_l(x, y) + H[q(y|x)]

Objective (4.10)-(4.11), minimised in the weighting of the authors' code (reproduction notes G9)::

    loss = -( mean_l[ELBO_l(x_l, y_l) - alpha * CE(y_l, q(y|x_l))] + mean_u[U(x_u)] ),   alpha = beta * N / N_l

The KL term of z is analytic by default (reproduction notes G15); ``analytic_kl=False`` uses the one-sample Monte Carlo estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.distributions import kl_divergence

from dgmlab import nn as dnn
from dgmlab.models import register
from dgmlab.models.base import Model, Output, check_input, check_labels
from dgmlab.nn import frozen_running_stats, running_stats_mode
from dgmlab.objectives.importance import chunked_log_mean_exp
from dgmlab.objectives.kl import kl_temperature
from dgmlab.objectives.semisupervised import (CE_MODES, Bound, alpha_weight, categorical_entropy,
                                              classification_loss, glorot_init, make_bound, one_hot,
                                              one_hot_classes, reparameterize, sum_over_classes,
                                              uniform_log_prior, with_fixed_variance)

LIKELIHOODS = ("bernoulli", "gaussian")
BN_LABELLED = ("batch", "running")
REPORTED_NAMES = {"log_px": "recon"}
"""Bound terms renamed in reported metrics: ``E_q[log p(x|.)]`` is a reconstruction term, not ``log p(x)``."""
IW_MAX_ROWS = 100_000
"""Largest number of (importance sample, class, point) rows one network pass sees in ``log_likelihood``."""


@dataclass
class SemiSupervisedConfig:
    """Options shared by the semi-supervised models (reproduction notes rn-m2, rn-adgm; sizes of the thesis' MNIST runs).

    Args:
        x_dim, n_classes, likelihood, n_train, n_labelled: filled from the data by ``dgmlab.data.make_config``.
        hidden: hidden layers of every network (thesis MNIST: 500-500).
        z_dim: size of the latent ``z``.
        beta: ``alpha = beta * n_train / n_labelled`` weights the labelled cross-entropy (A eq. 12, reproduction notes G9).
        fixed_alpha: use this ``alpha`` instead (e.g. for a hand-built model without data).
        mc_samples: Monte Carlo samples of the continuous latents per training step (A eq. 17).
        eval_samples: samples averaged by ``classify`` during ``evaluate`` (use 100 for a final test error, G10).
        warmup_epochs: KL temperature from 0 to 1 over this many epochs (0 = off); it multiplies every
            ``log q - log p`` term except the observation likelihood (reproduction notes rn-warmup).
        activation: hidden nonlinearity.
        ce: ``"marginal"`` (``-log mean_s q(y|a_s,x)``, the authors' code) or ``"per_sample"`` (A eq. 12 literally).
        x_logvar: a fixed log-variance for a Gaussian ``p(x|.)`` (``None``: learned, the default) [X].
        batch_norm: batch normalisation between every hidden linear layer and its activation, in every network
            (on by default: the authors' code uses it, the papers do not say so; see the reproduction notes).
            The labelled and the unlabelled pass are normalised separately; only the unlabelled pass moves the
            running averages that evaluation uses.
        bn_labelled: how the labelled pass is normalised in training: ``"batch"`` (its own batch statistics, the
            authors' code), ``"running"`` (the running averages of the unlabelled passes) or ``"auto"`` (``"batch"``
            when every training point is labelled, else ``"running"``; the PV recipe, whose classes are skewed).
    """

    x_dim: int
    n_classes: int
    likelihood: str = "bernoulli"
    n_train: int = 0
    n_labelled: int = 0
    hidden: tuple[int, ...] = (500, 500)
    z_dim: int = 100
    beta: float = 0.1
    fixed_alpha: float | None = None
    mc_samples: int = 1
    eval_samples: int = 1
    warmup_epochs: int = 0
    activation: str = "relu"
    ce: str = "marginal"
    x_logvar: float | None = None
    batch_norm: bool = True
    bn_labelled: str = "batch"

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        for name in ("x_dim", "z_dim", "mc_samples", "eval_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.n_classes, int) or self.n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {self.n_classes!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.ce not in CE_MODES:
            raise ValueError(f"unknown cross-entropy mode ce={self.ce!r}; choose one of {CE_MODES}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0 (0 switches warm-up off), got {self.warmup_epochs}")
        if self.bn_labelled == "auto":
            # A labelled batch is a sample of the inputs' distribution only when every training point is labelled;
            # a class-balanced subset of a skewed dataset is not, and its own statistics would differ from the
            # running averages that evaluation uses (reproduction notes rn-pv-recipe).
            self.bn_labelled = "batch" if self.n_train and self.n_labelled >= self.n_train else "running"
        if self.bn_labelled not in BN_LABELLED:
            raise ValueError(f"unknown bn_labelled={self.bn_labelled!r}; choose 'batch' (the labelled batch's own "
                             "statistics), 'running' (the running averages) or 'auto' ('batch' when every training "
                             "point is labelled, else 'running')")
        if self.x_logvar is not None and self.likelihood != "gaussian":
            raise ValueError("x_logvar fixes the variance of a Gaussian p(x|.); it needs likelihood='gaussian'")
        if self.n_train and self.n_labelled and self.n_labelled > self.n_train:
            raise ValueError(f"n_labelled={self.n_labelled} exceeds n_train={self.n_train}: there cannot be more "
                             "labelled points than training points")

    @property
    def alpha(self) -> float:
        """Weight of the labelled cross-entropy: ``beta * n_train / n_labelled`` unless ``fixed_alpha`` is set."""
        if self.fixed_alpha is not None:
            return float(self.fixed_alpha)
        return alpha_weight(self.beta, self.n_train, self.n_labelled)


class SemiSupervisedModel(Model):
    """What M2, M1+M2, ADGM and SDGM share: input checks, the training step of eq. (4.11) in the weighting of
    reproduction notes G9, ``classify``, ``evaluate`` and the importance-weighted ``log_likelihood`` with ``y`` summed out.

    A subclass provides four tensor functions (``S`` Monte Carlo samples, ``B`` points, ``K`` classes):
    ``_class_log_probs(x, S) -> (S, B, K)``, ``_labelled(x, y, S, noise) -> Bound``,
    ``_unlabelled(x, S, noise) -> Bound`` and ``_log_weights(x, k) -> (k, B)``.
    """

    setting = "semi-supervised"
    _unreported_terms: ClassVar[tuple[str, ...]] = ("log_py",)  # constant -log K
    trim_mnist: ClassVar[bool] = True  # the thesis' 444-pixel MNIST (A section 3)
    train_defaults: ClassVar[dict] = {"lr": 3e-4, "batch_size": 100, "labelled_batch_size": 100,
                                      "lr_decay": 0.75, "lr_decay_every": 200, "lr_floor": 3e-5,
                                      "clip_grad_norm": 5.0}  # the authors' code (reproduction notes)
    recipes: ClassVar[dict[str, dict]] = {
        "mnist": {"model": {}, "train": {"epochs": 1000},
                  "source": "thesis 4.2 and Appendix A section 3: 444 pixels, 500-500 networks, z = a = 100, "
                            "100 labels, batches of 100 + 100, Adam 3e-4, 1000 epochs"},
        "halfmoons": {"model": {"hidden": (100, 100), "z_dim": 10}, "train": {"epochs": 10, "labelled_batch_size": 6},
                      "source": "thesis Fig. 4.7 and Appendix A section 4.2: 2x100 networks, z = a = 10, 6 labels, "
                                "batches of 100 + the 6 labelled points, 10 epochs"},
        "pv": {"model": {"hidden": (50, 50), "z_dim": 10, "beta": 1.0, "warmup_epochs": 10, "bn_labelled": "auto"},
               "train": {"epochs": 40, "lr": 1e-3, "lr_decay": 1.0, "lr_decay_every": 0, "lr_floor": 0.0},
               "source": "thesis chapter 6 (appendix D section III-B): 50-50 networks, Adam, KL warm-up; our choices "
                         "where the thesis is silent (reproduction notes rn-pv-recipe): z = a = 10, beta = 1, "
                         "lr 1e-3, batches of 100 + 100, warm-up over 10 of 40 epochs; with a class-balanced labelled "
                         "subset the labelled pass is normalised with the running averages (the plant's classes are "
                         "skewed), with all labels by its own batch statistics"},
    }

    # -------------------------------------------------------------------------------------------------- checks
    def _check_x(self, x: torch.Tensor, what: str = "x") -> None:
        check_input(x, self.config.x_dim, what)
        if x.dim() != 2:
            raise ValueError(f"{what} must have shape (batch, {self.config.x_dim}), got {tuple(x.shape)}")

    def _check_y(self, y: torch.Tensor, x: torch.Tensor, what: str = "y") -> None:
        check_labels(y, self.config.n_classes, what)
        if y.shape != x.shape[:1]:
            raise ValueError(f"{what} must hold one integer label per input, shape ({len(x)},), got {tuple(y.shape)}")

    def _check_batch(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        missing = {"x_u", "x_l", "y_l"} - set(batch)
        if missing:
            raise KeyError(f"a semi-supervised batch needs keys x_u, x_l, y_l; missing {sorted(missing)} "
                           "(build batches with dgmlab.data.iterate_batches(data, 'semi-supervised', ...))")
        x_u, x_l, y_l = batch["x_u"], batch["x_l"], batch["y_l"]
        self._check_x(x_u, "x_u")
        self._check_x(x_l, "x_l")
        self._check_y(y_l, x_l, "y_l")
        return x_u, x_l, y_l

    def _samples(self, samples: int | None, noise: dict | None, default: int) -> int:
        if noise is not None and "z" in noise:
            return noise["z"].shape[0]
        s = default if samples is None else samples
        if not isinstance(s, int) or s < 1:
            raise ValueError(f"samples must be a positive integer, got {s!r}")
        return s

    @property
    def alpha(self) -> float:
        return self.config.alpha

    # ----------------------------------------------------------------------------------------------- the bounds
    def labelled_bound(self, x: torch.Tensor, y: torch.Tensor, samples: int | None = None,
                       noise: dict | None = None) -> Bound:
        """The labelled bound per point (``Bound.value``, shape ``(B,)``) and its named terms.

        ``noise`` (optional) fixes the standard-normal draws: ``{"z": (S, B, z_dim)}`` (and ``"a": (S, B, a_dim)``
        for auxiliary models).
        """
        self._check_x(x)
        self._check_y(y, x)
        return self._labelled(x, y, self._samples(samples, noise, self.config.mc_samples), noise)

    def unlabelled_bound(self, x: torch.Tensor, samples: int | None = None, noise: dict | None = None) -> Bound:
        """The unlabelled bound ``U(x)`` per point, with ``y`` summed out exactly in one batched pass.

        ``noise`` (optional): ``{"z": (S, K, B, z_dim)}`` (one z per sample and class, A eq. 17) and
        ``"a": (S, B, a_dim)`` for auxiliary models.
        """
        self._check_x(x)
        return self._unlabelled(x, self._samples(samples, noise, self.config.mc_samples), noise)

    @torch.no_grad()
    def classify(self, x: torch.Tensor, samples: int | None = None) -> torch.Tensor:
        """Class probabilities ``(B, K)``: ``q(y|x)``, averaged over ``samples`` draws of any auxiliary variable
        (prediction rule, reproduction notes rn-g10: ``argmax_y E_q(a|x)[q(y|a, x)]``)."""
        self._check_x(x)
        s = self._samples(samples, None, self.config.eval_samples)
        log_p = self._class_log_probs(x, s)
        return (torch.logsumexp(log_p, 0) - math.log(log_p.shape[0])).exp()

    def predict(self, x: torch.Tensor, samples: int | None = None) -> torch.Tensor:
        """Predicted labels ``(B,)``."""
        return self.classify(x, samples).argmax(-1)

    # ---------------------------------------------------------------------------------------------- training
    def step(self, batch: dict, epoch: int) -> Output:
        """One mini-batch of eq. (4.11): labelled bound minus ``alpha`` times the cross-entropy on ``x_l, y_l``,
        plus the unlabelled bound on ``x_u``; batch means weighted as in reproduction notes G9. Warm-up tempers the KL terms.

        With batch normalisation the two passes are separate batches, and the labelled one (a few fixed points)
        leaves the running averages alone."""
        x_u, x_l, y_l = self._check_batch(batch)
        s = self.config.mc_samples
        temp = kl_temperature(epoch, self.config.warmup_epochs)
        labelled_norm = frozen_running_stats if self.config.bn_labelled == "batch" else running_stats_mode
        with labelled_norm(self):
            lab = self._labelled(x_l, y_l, s, None)
        unl = self._unlabelled(x_u, s, None)
        ce = classification_loss(lab.class_log_probs, y_l, self.config.ce)
        objective = ((lab.tempered(temp) - self.alpha * ce).mean() + unl.tempered(temp).mean()
                     + self._free_bits(lab) + self._free_bits(unl))
        with torch.no_grad():
            pred = torch.logsumexp(lab.class_log_probs, 0).argmax(-1)
            error_l = (pred != y_l).float().mean() * 100
        terms = {"labelled_bound": lab.value.mean().detach(), "unlabelled_bound": unl.value.mean().detach(),
                 "cross_entropy": ce.mean().detach(), **unl.means("u_")}
        metrics = {"labelled_bound": terms["labelled_bound"], "unlabelled_bound": terms["unlabelled_bound"],
                   "cross_entropy": terms["cross_entropy"], "labelled_error": error_l, "temperature": temp}
        return Output(-objective, terms, metrics)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000,
                 samples: int | None = None) -> dict[str, float]:
        """``test_error`` (%, ``argmax`` of :meth:`classify` with ``samples`` draws, default ``eval_samples``) and
        ``test_elbo`` (mean unlabelled bound in nats, one Monte Carlo sample) with its terms; the reconstruction
        term ``E_q[log p(x|.)]`` is reported as ``test_recon`` (it is not ``log p(x)``)."""
        self._check_x(x)
        if y is not None:
            self._check_y(y, x)
        was_training = self.training
        self.eval()
        sums: dict[str, float] = {}
        wrong = 0
        for i, xb in enumerate(x.split(batch_size)):
            bound = self._unlabelled(xb, 1, None)
            named = {REPORTED_NAMES.get(n, n): t for n, t in bound.terms.items()}
            for k, v in {"test_elbo": bound.value, **{f"test_{n}": t for n, t in named.items()}}.items():
                sums[k] = sums.get(k, 0.0) + v.sum().item()
            if y is not None:
                yb = y[i * batch_size:(i + 1) * batch_size]
                wrong += (self.predict(xb, samples) != yb).sum().item()
        self.train(was_training)
        out = {k: v / len(x) for k, v in sums.items() if k[len("test_"):] not in self._unreported_terms}
        if y is not None:
            out = {"test_error": 100.0 * wrong / len(x), **out}
        return out

    # ---------------------------------------------------------------------------------------- log-likelihood
    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 5000, chunk: int = 500) -> torch.Tensor:
        """Importance-weighted estimate ``L_k(x)`` of ``log p(x)`` per point (thesis eq. 3.31), ``y`` summed out:
        ``w_i = sum_y p(x, y, h_i^(y)) / q(h_i^(y) | x)`` with the latents before ``y`` in the inference model
        sampled once per ``i`` and those after ``y`` once per ``(i, y)`` (reproduction notes rn-iw-discrete-y). Chunks of importance samples
        and of points keep every network pass below ``IW_MAX_ROWS`` rows.

        With ``k = 1`` this is the bound with ``y`` marginalised exactly, which is at least the unlabelled bound
        ``U(x)`` (Jensen over ``y``); it grows with ``k`` towards ``log p(x)``.
        """
        self._check_x(x)
        n_classes = self._n_summed_values
        chunk = max(1, min(chunk, k, IW_MAX_ROWS // n_classes))
        per_pass = max(1, IW_MAX_ROWS // (chunk * n_classes))
        was_training = self.training
        self.eval()
        out = torch.cat([chunked_log_mean_exp(lambda n, xb=xb: self._log_weights(xb, n), k, chunk)
                         for xb in x.split(per_pass)])
        self.train(was_training)
        return out

    @property
    def _n_summed_values(self) -> int:
        """How many values of ``y`` every importance sample sums over (the classes; a clustering model's clusters)."""
        return self.config.n_classes

    # ---------------------------------------------------------------------------------- subclass interface
    def _free_bits(self, bound: Bound) -> torch.Tensor | float:
        """A correction added to the training objective (not to the reported bound); models with an auxiliary
        variable use it for free bits on ``KL(a)``."""
        return 0.0

    def _class_log_probs(self, x: torch.Tensor, samples: int) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _labelled(self, x, y, samples, noise) -> Bound:  # pragma: no cover - interface
        raise NotImplementedError

    def _unlabelled(self, x, samples, noise) -> Bound:  # pragma: no cover - interface
        raise NotImplementedError

    def _log_weights(self, x, k) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _labels_like(self, y, x: torch.Tensor) -> torch.Tensor:
        """An int or ``(B,)`` label tensor -> one-hot ``(B, K)`` on the device/dtype of ``x``."""
        y = torch.as_tensor(y, device=x.device)
        if y.dim() == 0:
            y = y.expand(x.shape[0])
        check_labels(y, self.config.n_classes)
        return one_hot(y, self.config.n_classes, x)


@dataclass
class M2Config(SemiSupervisedConfig):
    """M2 options (see :class:`SemiSupervisedConfig`); ``analytic_kl`` computes ``KL(q(z|x,y)||p(z))`` exactly."""

    analytic_kl: bool = True


@register
class M2(SemiSupervisedModel):
    """M2 (Kingma et al. 2014): semi-supervised VAE with the class y summed out (thesis eqs. 4.2-4.11)."""

    name = "m2"
    Config = M2Config
    _unreported_terms = ("log_py", "kl_a")  # M2 has no auxiliary variable

    def __init__(self, config: M2Config):
        super().__init__(config)
        c, n_classes = config, config.n_classes
        act, bn = c.activation, c.batch_norm
        self.q_y = dnn.categorical(c.x_dim, c.hidden, n_classes, act, bn)  # q(y|x)    (4.6)
        self.q_z = dnn.gaussian(c.x_dim + n_classes, c.hidden, c.z_dim, "logvar", act, bn)  # q(z|x,y)  (4.6)
        self.p_x = dnn.likelihood(c.likelihood, c.z_dim + n_classes, c.hidden, c.x_dim, act, bn)  # p(x|y,z) (4.4)
        glorot_init(self)

    def prior_z(self, like: torch.Tensor):
        """``p(z) = N(0, I)`` (4.3)."""
        return dnn.standard_normal(self.config.z_dim, like)

    def generative_x(self, y_onehot: torch.Tensor, z: torch.Tensor):
        """``p(x | y, z)`` (4.4)."""
        return with_fixed_variance(self.p_x(z, y_onehot), self.config.x_logvar)

    def _class_log_probs(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        return self.q_y(x).logits.unsqueeze(0)  # q(y|x) has no auxiliary variable: one "sample"

    def _reconstruction_and_kl(self, x: torch.Tensor, y_onehot: torch.Tensor, samples: int,
                               eps_z: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``E_q(z|x,y)[log p(x|y,z)]`` and ``KL(q(z|x,y) || p(z))`` for every label in ``y_onehot``.

        ``y_onehot`` is ``(B, K)`` for the labelled bound or the ``(K, 1, K)`` class grid for the unlabelled one;
        the results have the broadcast shape ``(B,)`` or ``(K, B)``.
        """
        q_z = self.q_z(x, y_onehot)
        z = reparameterize(q_z, eps_z, (samples,))  # (S, ..., B, z_dim)
        log_px = self.generative_x(y_onehot, z).log_prob(x).mean(0)
        p_z = self.prior_z(x)
        if self.config.analytic_kl:
            kl_z = kl_divergence(q_z, p_z)
        else:
            kl_z = (q_z.log_prob(z) - p_z.log_prob(z)).mean(0)
        return log_px, kl_z

    def _labelled(self, x, y, samples, noise) -> Bound:
        """ELBO_l (4.9) with ``log p(y)``."""
        eps_z = None if noise is None else noise.get("z")
        log_px, kl_z = self._reconstruction_and_kl(x, one_hot(y, self.config.n_classes, x), samples, eps_z)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return make_bound(log_px, uniform_log_prior(self.config.n_classes, x), kl_z, zero, zero,
                          class_log_probs=self._class_log_probs(x, 1))

    def _unlabelled(self, x, samples, noise) -> Bound:
        """U(x) (4.8): all K labels in one pass over the class-tiled batch, weighted by q(y|x), plus H[q(y|x)]."""
        eps_z = None if noise is None else noise.get("z")
        log_q_y = self.q_y(x).logits  # (B, K), normalised log-probabilities
        classes = one_hot_classes(self.config.n_classes, x)  # (K, 1, K)
        log_px, kl_z = self._reconstruction_and_kl(x, classes, samples, eps_z)  # (K, B) each
        q_y = log_q_y.exp()
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return make_bound(sum_over_classes(q_y, log_px), uniform_log_prior(self.config.n_classes, x),
                          sum_over_classes(q_y, kl_z), zero, categorical_entropy(log_q_y),
                          class_log_probs=log_q_y.unsqueeze(0))

    def _log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``log sum_y p(x, y, z_y) / q(z_y|x, y)`` for ``k`` draws of one ``z_y`` per class: ``(k, B)``."""
        classes = one_hot_classes(self.config.n_classes, x)
        q_z = self.q_z(x, classes)
        z = q_z.rsample((k,))  # (k, K, B, z_dim)
        log_w = (self.generative_x(classes, z).log_prob(x) + self.prior_z(x).log_prob(z)
                 + uniform_log_prior(self.config.n_classes, x) - q_z.log_prob(z))
        return torch.logsumexp(log_w, dim=1)

    # ------------------------------------------------------------------------------------ analysis helpers
    @torch.no_grad()
    def generate(self, z: torch.Tensor, y) -> torch.Tensor:
        """Mean of ``p(x | y, z)`` for styles ``z`` ``(B, z_dim)`` and labels ``y`` (int or ``(B,)``)."""
        return self.generative_x(self._labels_like(y, z), z).mean

    @torch.no_grad()
    def encode_style(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, y)``: the predicted label ``argmax q(y|x)`` and the mean of ``q(z | x, y)`` for it."""
        self._check_x(x)
        y = self.predict(x)
        return self.q_z(x, one_hot(y, self.config.n_classes, x)).mean, y

    @torch.no_grad()
    def kl_per_unit(self, x: torch.Tensor, batch_size: int = 500) -> dict[str, torch.Tensor]:
        """``{"z": (z_dim,)}``: ``sum_y q(y|x) KL(q(z_j|x,y) || p(z_j))`` per unit, averaged over ``x`` (analytic)."""
        self._check_x(x)
        total = torch.zeros(self.config.z_dim, dtype=x.dtype, device=x.device)
        classes = one_hot_classes(self.config.n_classes, x)
        for xb in x.split(batch_size):
            q_z = self.q_z(xb, classes).base_dist  # (K, B, z_dim)
            kl = kl_divergence(q_z, self.prior_z(xb).base_dist)
            total += (self.q_y(xb).probs.T.unsqueeze(-1) * kl).sum((0, 1))
        return {"z": total / len(x)}
