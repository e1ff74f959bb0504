"""The auxiliary deep generative model (ADGM), the skip deep generative model (SDGM) and the ADGM with a deterministic
auxiliary variable (thesis section 4.2, eqs. 4.20-4.23; Appendix A eqs. 3-17, section 2.4 and Fig. 5; reproduction notes rn-adgm, rn-g5).

ADGM generative model, A(3)-(6), and reproduction notes G4 for the conditioning of ``a``::

    p(x, y, z, a) = p(x | y, z) p(a | z, y) p(y) p(z)          aux_conditional="zy"  (benchmarks, A section 3)
                  = p(x | y, z) p(a | x, y, z) p(y) p(z)       aux_conditional="xzy" (method text, eq. 4.21, A(5))

``a`` is a leaf of the generative graph: marginalising it leaves M2's ``p(x, y, z)`` unchanged.

SDGM generative model (A section 2.4; reproduction notes G5: ``p(a|z,y)``, the acyclic reading)::

    p(x, y, z, a) = p(x | a, y, z) p(a | z, y) p(y) p(z)        (a is now a second latent layer)

Inference model, shared by both, A(7)-(9)::

    q(a, y, z | x) = q(a | x) q(y | a, x) q(z | a, y, x)        q(y | a, x) is the classifier

Both bounds use the log-ratio (4.21)::

    f(x, y, a, z) = log p(x|.) + log p(a|.) + log p(y) + log p(z) - log q(a|x) - log q(z|a,y,x)

    labelled   (4.22), A(10):  ELBO_l(x, y) = E_q(a|x) E_q(z|a,y,x) [f(x, y, a, z)]
    unlabelled (4.20), A(11):  U(x) = E_q(a|x) [ sum_y q(y|a,x) E_q(z|a,y,x)[f(x, y, a, z)] + H[q(y|a,x)] ]

estimated as in A(17): ``S`` samples ``a_s ~ q(a|x)``, every class enumerated exactly (one batched pass over the
class-tiled batch) and one ``z_{s,y} ~ q(z|a_s,y,x)`` per sample and class. All a- and z-terms are Monte Carlo
(reproduction notes G15). Classification loss (4.23), A(12): ``alpha * CE(y, E_q(a|x)[q(y|a,x)])`` with the softmax averaged over the
samples inside the log (``ce="marginal"``, the authors' code; ``ce="per_sample"`` gives A(12) literally; equal for
one sample). Prediction: ``argmax_y mean_s q(y|a_s,x)``.

Deterministic auxiliary variable (A-Fig. 5 ablation, reproduction notes rn-adgm-det): ``a = f(x)`` is a deterministic network output and the
``log p(a|.) - log q(a|x)`` terms are dropped; it is registered as ``adgm_det`` (or set ``auxiliary="deterministic"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dgmlab import nn as dnn
from dgmlab.models import register
from dgmlab.models.m2 import SemiSupervisedConfig, SemiSupervisedModel
from dgmlab.objectives.semisupervised import (Bound, add_class_axis, categorical_entropy, glorot_init, make_bound,
                                              one_hot, one_hot_classes, reparameterize, sum_over_classes,
                                              uniform_log_prior, unit_log_prob, with_fixed_variance)

AUX_CONDITIONALS = ("zy", "xzy")
AUXILIARY_KINDS = ("stochastic", "deterministic")


@dataclass
class ADGMConfig(SemiSupervisedConfig):
    """ADGM options (see :class:`dgmlab.models.m2.SemiSupervisedConfig` for the shared ones).

    Args:
        a_dim: size of the auxiliary variable (thesis MNIST: 100; half-moons: 10).
        eval_samples: draws of ``a`` averaged for the test error during training (100 for a final number, G10).
        aux_conditional: ``"zy"`` = ``p(a|z,y)`` (benchmark setting) or ``"xzy"`` = ``p(a|x,y,z)`` (reproduction notes G4).
        auxiliary: ``"stochastic"`` (the ADGM) or ``"deterministic"`` (the A-Fig. 5 ablation).
        free_bits_a: free bits on the auxiliary variable (Kingma et al. 2016): below this many nats the batch mean
            of ``KL(a)`` costs nothing in the training objective, so ``a`` can carry that much information for
            free (0 = off, the thesis). The reported bounds are unchanged.
    """

    a_dim: int = 100
    eval_samples: int = 10
    aux_conditional: str = "zy"
    auxiliary: str = "stochastic"
    free_bits_a: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if not self.free_bits_a >= 0:
            raise ValueError(f"free_bits_a must be >= 0 nats (0 switches free bits off), got {self.free_bits_a!r}")
        if not isinstance(self.a_dim, int) or self.a_dim < 1:
            raise ValueError(f"a_dim must be a positive integer, got {self.a_dim!r}")
        if self.aux_conditional not in AUX_CONDITIONALS:
            raise ValueError(f"unknown aux_conditional {self.aux_conditional!r}; choose 'zy' for p(a|z,y) or "
                             "'xzy' for p(a|x,y,z)")
        if self.auxiliary not in AUXILIARY_KINDS:
            raise ValueError(f"unknown auxiliary {self.auxiliary!r}; choose one of {AUXILIARY_KINDS}")


@register
class ADGM(SemiSupervisedModel):
    """Auxiliary deep generative model: M2 plus an auxiliary a in q(a|x) q(y|a,x) q(z|a,y,x) (thesis 4.20-4.23)."""

    name = "adgm"
    Config = ADGMConfig
    skip_connection = False  # True for the SDGM: p(x | a, y, z)
    recipes = {**SemiSupervisedModel.recipes,
               "halfmoons": {**SemiSupervisedModel.recipes["halfmoons"],
                             "model": {**SemiSupervisedModel.recipes["halfmoons"]["model"], "a_dim": 10}},
               "pv": {**SemiSupervisedModel.recipes["pv"],
                      "model": {**SemiSupervisedModel.recipes["pv"]["model"], "a_dim": 10}}}

    def __init__(self, config: ADGMConfig):
        super().__init__(config)
        c, n_classes = config, config.n_classes
        self.stochastic = c.auxiliary == "stochastic"
        self._check_variant()
        h_last = c.hidden[-1] if c.hidden else c.x_dim
        act, bn = c.activation, c.batch_norm
        if self.stochastic:
            self.q_a = dnn.gaussian(c.x_dim, c.hidden, c.a_dim, "logvar", act, bn)  # q(a|x)      A(7)
        else:
            self.a_net = dnn.Conditional(c.x_dim, c.hidden, nn.Linear(h_last, c.a_dim), act, bn)  # a = f(x)
        self.q_y = dnn.categorical(c.a_dim + c.x_dim, c.hidden, n_classes, act, bn)  # q(y|a,x)  A(8)
        self.q_z = dnn.gaussian(c.a_dim + n_classes + c.x_dim, c.hidden, c.z_dim, "logvar", act, bn)  # A(9)
        if self.stochastic:
            p_a_in = c.z_dim + n_classes + (c.x_dim if c.aux_conditional == "xzy" else 0)
            self.p_a = dnn.gaussian(p_a_in, c.hidden, c.a_dim, "logvar", act, bn)  # p(a|z,y) / p(a|x,y,z) A(5)
        p_x_in = c.z_dim + n_classes + (c.a_dim if self.skip_connection else 0)
        self.p_x = dnn.likelihood(c.likelihood, p_x_in, c.hidden, c.x_dim, act, bn)  # p(x|y,z) A(6)
        glorot_init(self)

    def _check_variant(self) -> None:
        pass

    @property
    def _unreported_terms(self) -> tuple[str, ...]:
        return ("log_py",) if self.stochastic else ("log_py", "kl_a")

    # ----------------------------------------------------------------------------------------- distributions
    def prior_z(self, like: torch.Tensor):
        """``p(z) = N(0, I)``, A(3)."""
        return dnn.standard_normal(self.config.z_dim, like)

    def sample_a(self, x: torch.Tensor, samples: int, eps_a: torch.Tensor | None = None):
        """``S`` draws ``a ~ q(a|x)``: ``(S, B, a_dim)``, with ``log q(a|x)`` ``(S, B)`` (zero if deterministic)."""
        if not self.stochastic:
            a = self.a_net(x)
            return a.expand(samples, *a.shape), torch.zeros((), dtype=x.dtype, device=x.device)
        q_a = self.q_a(x)
        a = reparameterize(q_a, eps_a, (samples,))
        return a, q_a.log_prob(a)

    def generative_a(self, x: torch.Tensor, y_onehot: torch.Tensor, z: torch.Tensor):
        """``p(a | z, y)`` or ``p(a | x, y, z)`` (reproduction notes G4)."""
        if self.config.aux_conditional == "xzy":
            return self.p_a(x, y_onehot, z)
        return self.p_a(z, y_onehot)

    def generative_x(self, a: torch.Tensor, y_onehot: torch.Tensor, z: torch.Tensor):
        """``p(x | y, z)`` for the ADGM; the SDGM overrides it with ``p(x | a, y, z)``."""
        return with_fixed_variance(self.p_x(z, y_onehot), self.config.x_logvar)

    def _class_log_probs(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        a, _ = self.sample_a(x, samples)
        return self.q_y(a, x).logits  # (S, B, K) normalised log q(y|a,x)

    def _joint_terms(self, x: torch.Tensor, a: torch.Tensor, y_onehot: torch.Tensor,
                     eps_z: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The class-dependent log-densities of f (4.21) at ``z ~ q(z|a,y,x)``.

        ``a`` is ``(S, B, a_dim)`` with one-hot ``y`` ``(B, K)`` (labelled), or ``(S, 1, B, a_dim)`` with the class
        grid ``(K, 1, K)`` (unlabelled: the batch tiled over the classes); results are ``(S, B)`` or ``(S, K, B)``.
        """
        q_z = self.q_z(a, y_onehot, x)
        z = reparameterize(q_z, eps_z)
        terms = {"log_px": self.generative_x(a, y_onehot, z).log_prob(x),
                 "log_pz": self.prior_z(x).log_prob(z),
                 "log_qz": q_z.log_prob(z)}
        terms["log_pa"] = (self.generative_a(x, y_onehot, z).log_prob(a) if self.stochastic
                           else torch.zeros_like(terms["log_qz"]))
        return terms

    # ---------------------------------------------------------------------------------------------- bounds
    def _free_bits(self, bound: Bound) -> torch.Tensor | float:
        """``mean KL(a) - max(mean KL(a), free_bits_a)``: cancels the pull of ``KL(a)`` while it is below the floor."""
        if not self.config.free_bits_a or not self.stochastic:
            return 0.0
        kl_a = bound.terms["kl_a"].mean()
        return kl_a - torch.clamp(kl_a, min=self.config.free_bits_a)

    def _labelled(self, x, y, samples, noise) -> Bound:
        """ELBO_l (4.22), A(10), with one ``z`` per sample of ``a``."""
        noise = noise or {}
        a, log_qa = self.sample_a(x, samples, noise.get("a"))
        log_q_y = self.q_y(a, x).logits
        t = self._joint_terms(x, a, one_hot(y, self.config.n_classes, x), noise.get("z"))
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return make_bound(t["log_px"].mean(0), uniform_log_prior(self.config.n_classes, x),
                          (t["log_qz"] - t["log_pz"]).mean(0), (log_qa - t["log_pa"]).mean(0), zero,
                          class_log_probs=log_q_y)

    def _unlabelled(self, x, samples, noise) -> Bound:
        """U(x) (4.20), A(11) with the MC scheme A(17): all K classes in one pass over the class-tiled batch."""
        noise = noise or {}
        a, log_qa = self.sample_a(x, samples, noise.get("a"))  # (S, B, a_dim)
        log_q_y = self.q_y(a, x).logits  # (S, B, K)
        q_y = log_q_y.exp()
        classes = one_hot_classes(self.config.n_classes, x)  # (K, 1, K)
        t = self._joint_terms(x, add_class_axis(a), classes, noise.get("z"))  # each (S, K, B)
        return make_bound(
            log_px=sum_over_classes(q_y, t["log_px"]).mean(0),
            log_py=uniform_log_prior(self.config.n_classes, x),
            kl_z=sum_over_classes(q_y, t["log_qz"] - t["log_pz"]).mean(0),
            kl_a=(log_qa - sum_over_classes(q_y, t["log_pa"])).mean(0),
            entropy_y=categorical_entropy(log_q_y).mean(0),
            class_log_probs=log_q_y)

    def _log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``log sum_y p(x,y,a,z_y) / (q(a|x) q(z_y|a,y,x))``: ``a`` once per importance sample, ``z`` once per
        (sample, class) (reproduction notes rn-iw-discrete-y). Shape ``(k, B)``."""
        a, log_qa = self.sample_a(x, k)
        t = self._joint_terms(x, add_class_axis(a), one_hot_classes(self.config.n_classes, x), None)
        log_w = (t["log_px"] + t["log_pa"] + uniform_log_prior(self.config.n_classes, x) + t["log_pz"]
                 - t["log_qz"])
        return torch.logsumexp(log_w, dim=1) - log_qa

    # ------------------------------------------------------------------------------------ analysis helpers
    @torch.no_grad()
    def generate(self, z: torch.Tensor, y, a: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of ``p(x | y, z)`` for styles ``z`` ``(B, z_dim)`` and labels ``y`` (int or ``(B,)``).

        The SDGM first draws ``a ~ p(a | z, y)`` (unless ``a`` is given) and returns the mean of ``p(x | a, y, z)``
        (the A-Fig. 3 recipe, reproduction notes rn-analogies).
        """
        y_onehot = self._labels_like(y, z)
        if self.skip_connection and a is None:
            a = self.generative_a(None, y_onehot, z).sample()
        return self.generative_x(a, y_onehot, z).mean

    @torch.no_grad()
    def encode_style(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, y)``: the predicted label (``classify`` with ``eval_samples`` draws) and the mean of
        ``q(z | a, y, x)`` at the mean of ``q(a|x)`` (the "style" of ``x``, A-Fig. 3a)."""
        self._check_x(x)
        y = self.predict(x)
        a = self.q_a(x).mean if self.stochastic else self.a_net(x)
        return self.q_z(a, one_hot(y, self.config.n_classes, x), x).mean, y

    @torch.no_grad()
    def auxiliary_samples(self, x: torch.Tensor) -> torch.Tensor:
        """One draw ``a ~ q(a|x)`` per point ``(B, a_dim)`` (for the PCA of the auxiliary space, thesis Fig. 4.7b)."""
        self._check_x(x)
        return self.sample_a(x, 1)[0][0]

    @torch.no_grad()
    def kl_per_unit(self, x: torch.Tensor, batch_size: int = 500) -> dict[str, torch.Tensor]:
        """Per-unit Monte Carlo ``log q - log p`` for ``a`` and ``z``, averaged over ``x`` (A-Fig. 4a).

        ``z``: ``sum_y q(y|a,x) [log q(z_j|a,y,x) - log p(z_j)]``; ``a``: ``log q(a_j|x) - sum_y q(y|a,x) log p(a_j|.)``.
        One sample of ``a`` per point and one ``z`` per class. The deterministic variant has no ``a`` entry.
        """
        self._check_x(x)
        totals: dict[str, torch.Tensor] = {}
        classes = one_hot_classes(self.config.n_classes, x)
        for xb in x.split(batch_size):
            a, _ = self.sample_a(xb, 1)  # (1, B, a_dim)
            q_y = self.q_y(a, xb).probs.transpose(-1, -2).unsqueeze(-1)  # (1, K, B, 1)
            a_k = add_class_axis(a)
            q_z = self.q_z(a_k, classes, xb)
            z = q_z.rsample()  # (1, K, B, z_dim)
            per_unit = {"z": (q_y * (unit_log_prob(q_z, z) - unit_log_prob(self.prior_z(xb), z))).sum(1)}
            if self.stochastic:
                log_pa = (q_y * unit_log_prob(self.generative_a(xb, classes, z), a_k)).sum(1)
                per_unit["a"] = unit_log_prob(self.q_a(xb), a) - log_pa
            for key, v in per_unit.items():
                totals[key] = totals.get(key, 0) + v.sum((0, 1))
        return {k: v / len(x) for k, v in totals.items()}


@dataclass
class SDGMConfig(ADGMConfig):
    """SDGM options: as the ADGM; ``p(a|z,y)`` is required (reproduction notes G5) and ``a`` must be stochastic."""


@register
class SDGM(ADGM):
    """Skip deep generative model: the ADGM with x depending on a, p(x|a,y,z) p(a|z,y) (A section 2.4)."""

    name = "sdgm"
    Config = SDGMConfig
    skip_connection = True

    def _check_variant(self) -> None:
        if self.config.aux_conditional != "zy":
            raise ValueError("the SDGM needs aux_conditional='zy': p(a|x,y,z) together with p(x|a,y,z) would make the "
                             "generative model cyclic (reproduction notes G5)")
        if not self.stochastic:
            raise ValueError("the SDGM's a is a latent variable of the generative model; it cannot be deterministic "
                             "(use adgm_det for the deterministic-auxiliary ablation)")

    def generative_x(self, a: torch.Tensor, y_onehot: torch.Tensor, z: torch.Tensor):
        """``p(x | a, y, z)``: the skip connection from ``a`` to ``x``."""
        return with_fixed_variance(self.p_x(a, y_onehot, z), self.config.x_logvar)


@dataclass
class ADGMDeterministicConfig(ADGMConfig):
    """The A-Fig. 5 ablation: ``a = f(x)`` deterministic (same networks otherwise)."""

    auxiliary: str = "deterministic"


@register
class ADGMDeterministic(ADGM):
    """ADGM ablation with a deterministic auxiliary a = f(x), no log p(a) - log q(a) terms (A Fig. 5)."""

    name = "adgm_det"
    Config = ADGMDeterministicConfig

    def _check_variant(self) -> None:
        if self.stochastic:
            raise ValueError("adgm_det is the deterministic-auxiliary ablation; for a stochastic a train 'adgm'")
