"""The variational auto-encoder (thesis section 3.2.2) and the importance-weighted auto-encoder
(reproduction notes rn-vae-settings, rn-iwae-settings).

Generative model (3.22)-(3.24)::

    p(x, z) = p(x|z) p(z),   p(z) = N(0, I),   p(x|z) = B(x | mu(z))  or  N(x | mu(z), sigma^2(z))

Inference model (3.25)-(3.29): ``q(z|x) = N(z | mu(x), sigma^2(x))`` with an MLP encoder, ``mu`` linear and
``sigma = softplus(linear)`` (3.29); sampling uses the reparameterisation ``z = mu + sigma * eps`` (3.19)-(3.21).

Bounds on ``log p(x)``:

* the ELBO (3.11)/(3.30): ``L(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))``, KL analytic (reproduction notes G15);
* the importance-weighted bound (3.31): ``L_K(x) = E[log (1/K) sum_k p(x, z_k) / q(z_k|x)]``; ``L_1`` is the ELBO,
  ``L_K`` grows with ``K``, and ``L_5000`` is the thesis' test log-likelihood.

:class:`LatentVariableModel` holds these bounds for any model with one Gaussian latent layer (it only needs
``encode``, ``decode`` and ``prior``); :class:`VAE` adds the neural networks and the training step, and :class:`IWAE`
is the same model trained on ``L_K`` (Burda et al., 2015). The exact linear-Gaussian model in
:mod:`dgmlab.models.linear_gaussian` reuses the bounds to check them against ``log p(x)``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch
from torch.distributions import Distribution, Independent, kl_divergence

from dgmlab import nn as dnn
from dgmlab import objectives
from dgmlab.models import register
from dgmlab.models.base import Model, Output, check_input

LIKELIHOODS = ("bernoulli", "gaussian")
VARIANCES = ("softplus_std", "logvar", "softplus_var", "logstd")
IW_EVAL_ROWS = 20_000
"""Importance samples x data points per forward pass in evaluation: bounds memory to ~IW_EVAL_ROWS * x_dim floats."""


@contextlib.contextmanager
def evaluation(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (batch-norm running statistics) and no gradients, restoring the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def batches(x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """Consecutive slices of at most ``size`` rows."""
    for start in range(0, len(x), size):
        yield x[start:start + size]


class LatentVariableModel(Model):
    """``p(x, z) = p(x|z) p(z)`` with an inference model ``q(z|x)``: the bounds of chapter 3 for one latent layer.

    Subclasses implement :meth:`encode` (``x -> q(z|x)``) and :meth:`decode` (``z -> p(x|z)``), both returning
    factorised ``torch.distributions``, and a config with ``x_dim`` and ``z_dim``. Every method broadcasts over
    leading sample axes: ``z`` of shape ``(K, batch, z_dim)`` gives ``p(x|z)`` with batch shape ``(K, batch)``.
    """

    # --- the model ----------------------------------------------------------------------------------------------
    def prior(self, like: torch.Tensor) -> Independent:
        """``p(z) = N(0, I)`` (3.23), on the device and dtype of ``like``."""
        return dnn.standard_normal(self.config.z_dim, like)

    def encode(self, x: torch.Tensor) -> Distribution:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> Distribution:  # pragma: no cover - interface
        raise NotImplementedError

    def check_observed(self, x: torch.Tensor) -> None:
        """Raise a clear error when ``x`` cannot be scored by ``p(x|z)`` (wrong shape or dtype)."""
        check_input(x, self.config.x_dim)

    def check_latent(self, z: torch.Tensor) -> None:
        check_input(z, self.config.z_dim, what="z")

    # --- bounds -------------------------------------------------------------------------------------------------
    def joint_terms(self, x: torch.Tensor, sample_shape: tuple[int, ...]):
        """Draw ``z ~ q(z|x)`` (reparameterised) and return ``(q, z, log p(x|z), log p(z), log q(z|x))``.

        The log-densities have shape ``(*sample_shape, batch)``; ``log p(x|z) + log p(z) - log q(z|x)`` is the
        log importance weight of (3.31).
        """
        self.check_observed(x)
        q = self.encode(x)
        z = q.rsample(sample_shape)
        log_px_z = self.decode(z).log_prob(x)
        log_pz = self.prior(z).log_prob(z)
        log_qz = q.log_prob(z)
        return q, z, log_px_z, log_pz, log_qz

    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``log w_k = log p(x, z_k) - log q(z_k|x)`` for ``k`` samples ``z_k ~ q(z|x)``; shape ``(k, batch)``."""
        _, _, log_px_z, log_pz, log_qz = self.joint_terms(x, (k,))
        return log_px_z + log_pz - log_qz

    def elbo(self, x: torch.Tensor, mc: int = 1, analytic_kl: bool = True) -> dict[str, torch.Tensor]:
        """The ELBO (3.30) per data point: ``{"recon": E_q log p(x|z), "kl": KL(q(z|x)||p(z)), "elbo": recon - kl}``.

        ``recon`` is a Monte Carlo average over ``mc`` reparameterised samples (3.20); ``kl`` is analytic, or with
        ``analytic_kl=False`` the Monte Carlo estimate ``log q(z|x) - log p(z)`` at the same samples (then
        ``elbo`` equals ``iw_bound(x, 1)`` drawn with the same random numbers).
        """
        _check_k(mc, "Monte Carlo samples mc")
        q, z, log_px_z, log_pz, log_qz = self.joint_terms(x, (mc,))
        recon = log_px_z.mean(0)
        kl = kl_divergence(q, self.prior(x)) if analytic_kl else (log_qz - log_pz).mean(0)
        return {"recon": recon, "kl": kl, "elbo": recon - kl}

    def iw_bound(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """One draw of the importance-weighted bound (3.31) with ``k`` samples per point (``logsumexp - log k``),
        shape ``(batch,)``; differentiable, so it is also the IWAE training objective."""
        _check_k(k)
        return objectives.iw_bound(self.log_weights(x, k), dim=0)

    def log_likelihood(self, x: torch.Tensor, k: int = 5000, chunk: int = 500,
                       batch_size: int | None = None) -> torch.Tensor:
        """``log p(x) ~= L_k(x)``, the thesis' test log-likelihood with ``k = 5000``, per data point (reproduction
        notes rn-iw-evaluation).

        Memory-bounded: ``q(z|x)`` is computed once per batch of ``batch_size`` points, then ``chunk`` importance
        samples at a time are drawn and folded into a running logsumexp, so at most ``chunk * batch_size`` samples
        exist at once (default ``batch_size``: ``IW_EVAL_ROWS // chunk``, at least 1). Runs in eval mode.
        """
        _check_k(k)
        _check_k(chunk, "chunk")
        if batch_size is not None:
            _check_k(batch_size, "batch_size")
        self.check_observed(x)
        rows = batch_size or max(1, IW_EVAL_ROWS // chunk)
        out = []
        with evaluation(self):
            for xb in batches(x, rows):
                q = self.encode(xb)

                def chunk_log_weights(n: int, q=q, xb=xb) -> torch.Tensor:
                    z = q.sample((n,))
                    return self.decode(z).log_prob(xb) + self.prior(z).log_prob(z) - q.log_prob(z)

                out.append(objectives.chunked_log_mean_exp(chunk_log_weights, k, chunk))
        return torch.cat(out)

    def kl_per_unit(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """``KL(q(z_j|x) || p(z_j))`` per latent unit ``j``, averaged over the points of ``x``: shape ``(z_dim,)``.

        Units with (almost) zero KL have collapsed onto the prior (section 3.2.2); see
        :func:`dgmlab.objectives.active_units`.
        """
        self.check_observed(x)
        total = None
        with evaluation(self):
            for xb in batches(x, batch_size):
                q = self.encode(xb)
                part = objectives.kl_per_unit(q, self.prior(xb)).sum(0)
                total = part if total is None else total + part
        return total / len(x)

    def score_function_surrogate(self, x: torch.Tensor, s: int = 1) -> torch.Tensor:
        """A per-point surrogate whose gradient is the score-function (REINFORCE) estimator of the ELBO gradient.

        With ``z_i ~ q(z|x)`` drawn *without* reparameterisation, its gradient w.r.t. the encoder is (3.18),
        ``(1/s) sum_i log[p(x, z_i)/q(z_i|x)] grad log q(z_i|x)``, and w.r.t. the decoder the Monte Carlo gradient of
        ``E_q log p(x, z)`` (3.12). Only its gradient is meaningful, not its value; compare its variance with that of
        the reparameterised :meth:`elbo` (3.20).
        """
        self.check_observed(x)
        q = self.encode(x)
        z = q.sample((s,))
        log_pxz = self.decode(z).log_prob(x) + self.prior(z).log_prob(z)
        log_qz = q.log_prob(z)
        return ((log_pxz - log_qz).detach() * log_qz + log_pxz).mean(0)

    # --- using the model ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` draws of ``z ~ p(z)`` pushed through ``p(x|z)``: its mean (default, e.g. pixel probabilities) or a
        sample ``x ~ p(x|z)``; shape ``(n, x_dim)``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        like = next(self.parameters())
        with evaluation(self):
            z = dnn.standard_normal(self.config.z_dim, like, (n,)).sample()
            p_x = self.decode(z)
            return p_x.mean if mean else p_x.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """Encode to the posterior mean ``mu(x)`` and decode: the mean of ``p(x | z = mu(x))`` (or a sample)."""
        with evaluation(self):
            p_x = self.decode(self.encode(x).mean)
            return p_x.mean if mean else p_x.sample()


def _check_k(k: int, what: str = "the number of importance samples k") -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{what} must be a positive integer, got {k!r}")


@dataclass
class VAEConfig:
    """Options of the VAE (reproduction notes rn-vae-settings). ``x_dim`` and ``likelihood`` come from the data via
    ``make_config``.

    Attributes:
        x_dim: input dimension.
        z_dim: latent units.
        hidden: widths of the encoder MLP; the decoder mirrors them (leaky ReLU as in the ladder VAE's MNIST runs).
        activation: nonlinearity ``f`` of (3.27).
        likelihood: ``bernoulli`` (binary x) or ``gaussian`` (continuous x), (3.24).
        variance: parameterisation of ``sigma(x)`` in ``q(z|x)``: ``softplus_std`` is (3.29); see reproduction notes
            rn-gaussian-heads.
        iw: importance samples of the training bound (1 = ELBO, the VAE; > 1 = IWAE).
        mc: Monte Carlo samples of the training bound (averaged outside the log).
        warmup_epochs: KL temperature from 0 to 1 linearly over this many epochs (5.5); 0 = no warm-up.
        batch_norm: batch normalisation after every hidden linear layer.
        eval_iw: importance samples of ``test_iw_bound`` in :meth:`VAE.evaluate` (0 or 1 = skip); kept small because
            evaluation runs every epoch. Use :meth:`~LatentVariableModel.log_likelihood` for ``L_5000``.
    """

    x_dim: int
    z_dim: int = 50
    hidden: tuple[int, ...] = (500, 500)
    activation: str = "leaky_relu"
    likelihood: str = "bernoulli"
    variance: str = "softplus_std"
    iw: int = 1
    mc: int = 1
    warmup_epochs: int = 0
    batch_norm: bool = False
    eval_iw: int = 10

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)  # lists come back from JSON checkpoints
        for name in ("x_dim", "z_dim", "iw", "mc"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive integer, got {value!r}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be positive, got {self.hidden}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.variance not in VARIANCES:
            raise ValueError(f"unknown variance parameterisation {self.variance!r}; choose one of {VARIANCES}")
        dnn.activation(self.activation)  # raises for an unknown name
        if self.warmup_epochs < 0 or self.eval_iw < 0:
            raise ValueError("warmup_epochs and eval_iw must be >= 0")


@register
class VAE(LatentVariableModel):
    """Variational auto-encoder: MLP q(z|x) (3.25)-(3.29), mirrored p(x|z) (3.24), trained on the ELBO (3.30).

    The VAE of thesis section 3.2.2; with ``iw > 1`` it is trained on the importance-weighted bound (3.31) instead.
    """

    name: ClassVar[str] = "vae"
    setting: ClassVar[str] = "unsupervised"
    Config: ClassVar[type] = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        c = config
        # inference model q(z|x), (3.25)-(3.29)
        self.q_z_given_x = dnn.gaussian(c.x_dim, c.hidden, c.z_dim, variance=c.variance, act=c.activation,
                                        batch_norm=c.batch_norm)
        # generative model p(x|z), (3.24); p(z) = N(0, I) is LatentVariableModel.prior
        self.p_x_given_z = dnn.likelihood(c.likelihood, c.z_dim, tuple(reversed(c.hidden)), c.x_dim,
                                          act=c.activation, batch_norm=c.batch_norm)

    def encode(self, x: torch.Tensor) -> Independent:
        """``q(z|x)``: a diagonal Gaussian with batch shape ``x.shape[:-1]``."""
        check_input(x, self.config.x_dim)
        return self.q_z_given_x(x)

    def decode(self, z: torch.Tensor) -> Independent:
        """``p(x|z)``: factorised Bernoulli or Gaussian with batch shape ``z.shape[:-1]``."""
        self.check_latent(z)
        return self.p_x_given_z(z)

    def check_observed(self, x: torch.Tensor) -> None:
        check_input(x, self.config.x_dim)
        if self.config.likelihood == "bernoulli" and not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("the Bernoulli likelihood scores binary data, but x holds values other than 0 and 1; "
                             "binarise it first, e.g. dgmlab.data.binarize(x), or use likelihood='gaussian'")

    # --- training -----------------------------------------------------------------------------------------------
    def step(self, batch: dict[str, torch.Tensor], epoch: int) -> Output:
        """Loss ``-(bound)`` on one batch, with the KL temperature ``T`` of warm-up (5.5).

        ``iw == 1``: ``E_q log p(x|z) - T * KL`` (analytic KL, ``mc`` samples). ``iw > 1``: the bound (3.31) with
        ``log w = log p(x|z) + T * (log p(z) - log q(z|x))``, averaged over ``mc`` independent draws. ``terms`` are
        the untempered ELBO pieces (and ``iw_bound``), averaged over the batch; ``metrics`` repeats them as floats
        beside the temperature.
        """
        x = batch["x"]
        c = self.config
        temp = objectives.kl_temperature(epoch, c.warmup_epochs)
        q, _, log_px_z, log_pz, log_qz = self.joint_terms(x, (c.mc, c.iw))  # shapes (mc, iw, batch)
        recon = log_px_z.mean((0, 1))
        kl = kl_divergence(q, self.prior(x))
        terms = {"elbo": recon - kl, "recon": recon, "kl": kl}
        if c.iw == 1:
            bound = recon - temp * kl
        else:
            bound = objectives.iw_bound(log_px_z + temp * (log_pz - log_qz), dim=1).mean(0)
            terms["iw_bound"] = objectives.iw_bound(log_px_z + log_pz - log_qz, dim=1).mean(0)
        terms = {k: v.mean().detach() for k, v in terms.items()}
        # the training loop logs metrics (as train_<name>), so the bound's pieces go there too
        return Output(loss=-bound.mean(), terms=terms,
                      metrics={"temperature": temp, **terms})

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000,
                 iw: int | None = None) -> dict[str, float]:
        """Test metrics in nats per point: ``test_elbo`` (``L_1``, analytic KL), ``test_recon``, ``test_kl``,
        ``test_active_units`` (units with KL > 0.01 nats) and ``test_iw_bound`` (``L_iw`` with ``iw`` samples,
        default ``config.eval_iw``; skipped when ``iw <= 1``). ``y`` is ignored."""
        k = self.config.eval_iw if iw is None else iw
        self.check_observed(x)
        sums = {"test_elbo": 0.0, "test_recon": 0.0, "test_kl": 0.0}
        if k > 1:
            sums["test_iw_bound"] = 0.0
        kl_units = torch.zeros(self.config.z_dim, dtype=x.dtype, device=x.device)
        with evaluation(self):
            for xb in batches(x, batch_size):
                q, _, log_px_z, _, _ = self.joint_terms(xb, (1,))
                units = objectives.kl_per_unit(q, self.prior(xb))  # (batch, z_dim); sums to the analytic KL
                recon, kl = log_px_z[0], units.sum(-1)
                sums["test_recon"] += float(recon.sum())
                sums["test_kl"] += float(kl.sum())
                sums["test_elbo"] += float((recon - kl).sum())
                kl_units += units.sum(0)
                if k > 1:
                    for xs in batches(xb, max(1, IW_EVAL_ROWS // k)):
                        sums["test_iw_bound"] += float(self.iw_bound(xs, k).sum())
        metrics = {key: value / len(x) for key, value in sums.items()}
        metrics["test_active_units"] = float(objectives.active_units(kl_units / len(x)))
        return metrics


@dataclass
class IWAEConfig(VAEConfig):
    """The VAE's options with ``iw`` importance samples in the training bound (the thesis' tables: 1, 10 or 50;
    reproduction notes rn-iwae-settings)."""

    iw: int = 10


@register
class IWAE(VAE):
    """Importance-weighted auto-encoder (Burda et al. 2015): the VAE trained on the K-sample bound L_K (3.31)."""

    name: ClassVar[str] = "iwae"
    Config: ClassVar[type] = IWAEConfig


__all__ = ["IWAE", "IWAEConfig", "LatentVariableModel", "VAE", "VAEConfig", "batches", "evaluation"]
