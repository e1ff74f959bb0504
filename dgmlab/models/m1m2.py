"""M1+M2 (Kingma et al. 2014): an M2 trained on the latent samples of a VAE "M1" (thesis section 4.1; reproduction notes rn-m1m2).

Two stages, run in sequence by one ``fit``:

1. epochs ``0 .. m1_epochs-1``: train M1, an ordinary VAE (:class:`dgmlab.models.vae.VAE`, thesis eq. 3.30), on all
   inputs of each batch (unlabelled and labelled);
2. from epoch ``m1_epochs`` on: M1 is frozen and an M2 (:class:`dgmlab.models.m2.M2`, eqs. 4.2-4.11) is trained on
   ``z1 ~ q(z1|x)`` drawn afresh for every batch, with a Gaussian ``p(z1|y, z2)``.

Together they are the two-layer generative model ``p(x|z1) p(z1|y,z2) p(y) p(z2)`` with the bottom-up inference
``q(z1|x) q(y|z1) q(z2|z1,y)``. Its bounds, reported by ``labelled_bound``/``unlabelled_bound``/``evaluate``, put
M2's bound in place of ``log p(z1)`` in M1's ELBO::

    U(x) = E_q(z1|x)[ log p(x|z1) - log q(z1|x) + U_M2(z1) ]        (a lower bound on log p(x))

Training the two layers jointly failed in the thesis (the top latent collapsed), which motivated the ADGM; here only
the sequential recipe is implemented. Sizes are not given in the thesis; the defaults follow Kingma et al. (2014)
as quoted in reproduction notes rn-m1m2: M1 600-600 softplus with a 50-d ``z1``, M2 with one 500-unit layer and a 50-d ``z2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dgmlab.models import register
from dgmlab.models.base import Output
from dgmlab.models.m2 import M2, M2Config, SemiSupervisedConfig, SemiSupervisedModel
from dgmlab.models.vae import VAE, VAEConfig
from dgmlab.objectives.semisupervised import Bound


@dataclass
class M1M2Config(SemiSupervisedConfig):
    """M1+M2 options. ``hidden``, ``z_dim`` and the other shared fields configure M2; ``m1_*`` configure the VAE.

    Args:
        m1_epochs: epochs of stage 1 (the VAE) before M2 training starts.
        m1_hidden, m1_z_dim, m1_activation: the VAE (encoder widths; the decoder mirrors them).
    """

    hidden: tuple[int, ...] = (500,)
    z_dim: int = 50
    eval_samples: int = 10
    m1_epochs: int = 10
    m1_hidden: tuple[int, ...] = (600, 600)
    m1_z_dim: int = 50
    m1_activation: str = "softplus"

    def __post_init__(self):
        super().__post_init__()
        self.m1_hidden = tuple(int(h) for h in self.m1_hidden)
        if self.m1_epochs < 0:
            raise ValueError(f"m1_epochs must be >= 0, got {self.m1_epochs}")


@register
class M1M2(SemiSupervisedModel):
    """M1+M2 (Kingma et al. 2014): a VAE (M1) trained first, then an M2 on its latent samples (thesis 4.1)."""

    name = "m1m2"
    Config = M1M2Config
    recipes = {"mnist": {"model": {}, "train": {"epochs": 1000},
                         "source": "thesis 4.1 (Kingma et al. 2014): an M2 on the latent samples of a VAE; sizes "
                                   "from Kingma et al., as the thesis gives none"}}

    def __init__(self, config: M1M2Config):
        super().__init__(config)
        c = config
        self.m1 = VAE(VAEConfig(x_dim=c.x_dim, z_dim=c.m1_z_dim, hidden=c.m1_hidden, activation=c.m1_activation,
                                likelihood=c.likelihood, eval_iw=0, batch_norm=c.batch_norm))
        self.m2 = M2(M2Config(x_dim=c.m1_z_dim, n_classes=c.n_classes, likelihood="gaussian", hidden=c.hidden,
                              z_dim=c.z_dim, n_train=c.n_train, n_labelled=c.n_labelled, beta=c.beta,
                              fixed_alpha=c.fixed_alpha, mc_samples=c.mc_samples, warmup_epochs=c.warmup_epochs,
                              activation=c.activation, ce=c.ce, batch_norm=c.batch_norm))

    def stage(self, epoch: int) -> int:
        """1 while M1 trains, 2 afterwards."""
        return 1 if epoch < self.config.m1_epochs else 2

    def features(self, x: torch.Tensor, samples: int | None = None) -> torch.Tensor:
        """``z1 ~ q(z1|x)`` from the frozen M1 (no gradient reaches M1): ``(B, m1_z_dim)`` or ``(S, B, m1_z_dim)``."""
        with torch.no_grad():
            q = self.m1.encode(x)
            return q.sample() if samples is None else q.sample((samples,))

    # ---------------------------------------------------------------------------------------------- training
    def step(self, batch: dict, epoch: int) -> Output:
        """Stage 1: the VAE step on ``x_u`` and ``x_l``. Stage 2: M2's step (reproduction notes G9 weighting) on ``z1`` samples."""
        x_u, x_l, y_l = self._check_batch(batch)
        if self.stage(epoch) == 1:
            out = self.m1.step({"x": torch.cat([x_u, x_l])}, epoch)
            return Output(out.loss, out.terms, {"stage": 1.0, **out.metrics})
        out = self.m2.step({"x_u": self.features(x_u), "x_l": self.features(x_l), "y_l": y_l},
                           epoch - self.config.m1_epochs)
        return Output(out.loss, out.terms, {"stage": 2.0, **out.metrics})

    # ------------------------------------------------------------------------------------ the stacked bounds
    def _m1_terms(self, x: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z1 ~ q(z1|x)`` ``(S, B, d)``, ``log p(x|z1)`` and ``log q(z1|x)`` ``(S, B)``."""
        q = self.m1.encode(x)
        z1 = q.rsample((samples,))
        return z1, self.m1.decode(z1).log_prob(x), q.log_prob(z1)

    def _stacked(self, x: torch.Tensor, samples: int, m2_bound) -> Bound:
        z1, log_px, log_qz1 = self._m1_terms(x, samples)
        s, b, d = z1.shape
        top = m2_bound(z1.reshape(s * b, d))
        reshape = lambda t: t.reshape(s, b).mean(0)  # noqa: E731
        value = (log_px - log_qz1).mean(0) + reshape(top.value)
        terms = {"log_px": log_px.mean(0), "entropy_z1": -log_qz1.mean(0), "m2_bound": reshape(top.value)}
        log_probs = self.m2.q_y(z1).logits  # (S, B, K)
        return Bound(value, terms, log_probs)

    def _labelled(self, x, y, samples, noise) -> Bound:
        return self._stacked(x, samples, lambda z1: self.m2._labelled(z1, y.repeat(len(z1) // len(y)), 1, None))

    def _unlabelled(self, x, samples, noise) -> Bound:
        return self._stacked(x, samples, lambda z1: self.m2._unlabelled(z1, 1, None))

    def _class_log_probs(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        return self.m2.q_y(self.m1.encode(x).sample((samples,))).logits

    def _log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``log [p(x|z1)/q(z1|x)] + log sum_y p(z1,y,z2_y)/q(z2_y|z1,y)``: ``z1`` once per importance sample (it
        comes before ``y`` in the inference model), ``z2`` once per sample and class (reproduction notes rn-iw-discrete-y)."""
        z1, log_px, log_qz1 = self._m1_terms(x, k)
        top = self.m2._log_weights(z1.reshape(-1, z1.shape[-1]), 1).reshape(k, -1)
        return log_px - log_qz1 + top

    @property
    def _unreported_terms(self) -> tuple[str, ...]:
        return ()
