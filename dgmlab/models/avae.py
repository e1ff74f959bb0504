"""The auxiliary variational auto-encoder (AVAE), unsupervised (thesis section 4.2, eqs. 4.12-4.17; Appendix A
section 2.2, eq. 2; reproduction notes rn-avae).

Generative model (4.12)-(4.13): the VAE's ``p(x, z)`` extended by an auxiliary ``a`` that leaves it unchanged when
``a`` is integrated out::

    p(x, z, a) = p(a | z, x) p(x | z) p(z),   p(z) = N(0, I),   p(a | z, x) = N(mu(z, x), sigma^2(z, x))

Inference model (4.14)-(4.15)::

    q(a, z | x) = q(a | x) q(z | a, x)

so that the marginal ``q(z|x) = int q(z|a,x) q(a|x) da`` is a continuous mixture of Gaussians, no longer Gaussian.

Bound, A(2) (every term Monte Carlo at the sampled ``a, z``; reproduction notes G15)::

    log p(x) >= E_q(a,z|x) [ log p(x|z) + log p(z) + log p(a|z,x) - log q(a|x) - log q(z|a,x) ]
             =  E[log p(x|z)] - KL_z - KL_a,    KL_z = E[log q(z|a,x) - log p(z)],  KL_a = E[log q(a|x) - log p(a|z,x)]

If ``p(a|z,x) = p(a)`` the auxiliary variable decouples and the model is a plain VAE (4.16)-(4.17, A App. A); the
thesis uses a KL temperature (warm-up, eq. 5.5) from 0 to 1 over the first 200 epochs to keep ``a`` active, and that
is the default here (``warmup_epochs=200``; it multiplies both KL terms, never ``log p(x|z)``).

This is the one-layer teaching model with ``p(a|z,x)`` (reproduction notes G6); ``aux_conditional="z"`` drops ``x``
from it. Sizes follow the LVAE settings the thesis copies and, where it gives none, our choice (reproduction notes
rn-avae): 512-512 leaky-ReLU networks, 64-d ``z`` and ``a``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dgmlab import nn as dnn
from dgmlab.models import register
from dgmlab.models.base import Model, Output, check_input
from dgmlab.objectives.importance import chunked_log_mean_exp
from dgmlab.objectives.kl import ACTIVE_UNIT_THRESHOLD, kl_temperature
from dgmlab.objectives.semisupervised import reparameterize, unit_log_prob

IW_MAX_ROWS = 100_000


@dataclass
class AVAEConfig:
    """AVAE options.

    Args:
        x_dim, likelihood: filled from the data by ``dgmlab.data.make_config``.
        hidden: hidden layers of every network (encoder side; ``p(x|z)`` mirrors them).
        z_dim, a_dim: latent and auxiliary sizes.
        activation: hidden nonlinearity (leaky ReLU 0.1, as in the LVAE MNIST setup).
        batch_norm: batch normalisation after every hidden linear layer (the thesis' AVAE runs used it).
        mc_samples: Monte Carlo samples of ``(a, z)`` per training step.
        warmup_epochs: KL temperature 0 -> 1 over this many epochs (thesis: 200; 0 = off).
        aux_conditional: ``"zx"`` = ``p(a|z,x)`` (A eq. 2) or ``"z"`` = ``p(a|z)``.
    """

    x_dim: int
    likelihood: str = "bernoulli"
    hidden: tuple[int, ...] = (512, 512)
    z_dim: int = 64
    a_dim: int = 64
    activation: str = "leaky_relu"
    batch_norm: bool = False
    mc_samples: int = 1
    warmup_epochs: int = 200
    aux_conditional: str = "zx"

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        for name in ("x_dim", "z_dim", "a_dim", "mc_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose 'bernoulli' or 'gaussian'")
        if self.aux_conditional not in ("zx", "z"):
            raise ValueError(f"unknown aux_conditional {self.aux_conditional!r}; choose 'zx' for p(a|z,x) or 'z'")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0 (0 switches warm-up off), got {self.warmup_epochs}")


@register
class AVAE(Model):
    """Auxiliary VAE: q(a|x) q(z|a,x) with p(a|z,x) p(x|z) p(z), trained on the bound A(2) (thesis 4.12-4.17)."""

    name = "avae"
    setting = "unsupervised"
    Config = AVAEConfig
    train_defaults: ClassVar[dict] = {"lr": 1e-3, "batch_size": 256}  # ladder-VAE settings (reproduction notes rn-avae)

    def __init__(self, config: AVAEConfig):
        super().__init__(config)
        c = config
        kw = dict(act=c.activation, batch_norm=c.batch_norm)
        self.q_a = dnn.gaussian(c.x_dim, c.hidden, c.a_dim, "logvar", **kw)  # q(a|x)    (4.15)
        self.q_z = dnn.gaussian(c.a_dim + c.x_dim, c.hidden, c.z_dim, "logvar", **kw)  # q(z|a,x)  (4.15)
        p_a_in = c.z_dim + (c.x_dim if c.aux_conditional == "zx" else 0)
        self.p_a = dnn.gaussian(p_a_in, c.hidden, c.a_dim, "logvar", **kw)  # p(a|z,x)  (4.13)
        self.p_x = dnn.likelihood(c.likelihood, c.z_dim, tuple(reversed(c.hidden)), c.x_dim, **kw)  # p(x|z)

    # ----------------------------------------------------------------------------------------------- the model
    def prior_z(self, like: torch.Tensor):
        """``p(z) = N(0, I)``."""
        return dnn.standard_normal(self.config.z_dim, like)

    def generative_a(self, x: torch.Tensor, z: torch.Tensor):
        """``p(a | z, x)`` (or ``p(a | z)``)."""
        return self.p_a(z, x) if self.config.aux_conditional == "zx" else self.p_a(z)

    def _check_x(self, x: torch.Tensor) -> None:
        check_input(x, self.config.x_dim)
        if x.dim() != 2:
            raise ValueError(f"x must have shape (batch, {self.config.x_dim}), got {tuple(x.shape)}")

    def log_densities(self, x: torch.Tensor, samples: int = 1, noise: dict | None = None) -> dict[str, torch.Tensor]:
        """Draw ``a ~ q(a|x)``, ``z ~ q(z|a,x)`` and return the five log-densities of A(2), each ``(S, B)``.

        ``noise`` (optional) fixes the draws: ``{"a": (S, B, a_dim), "z": (S, B, z_dim)}``.
        """
        noise = noise or {}
        q_a = self.q_a(x)
        a = reparameterize(q_a, noise.get("a"), (samples,))
        q_z = self.q_z(a, x)
        z = reparameterize(q_z, noise.get("z"))
        return {"log_px": self.p_x(z).log_prob(x), "log_pz": self.prior_z(x).log_prob(z),
                "log_pa": self.generative_a(x, z).log_prob(a), "log_qa": q_a.log_prob(a), "log_qz": q_z.log_prob(z)}

    def bound(self, x: torch.Tensor, samples: int | None = None, noise: dict | None = None) -> dict[str, torch.Tensor]:
        """The bound A(2) per point: ``{"elbo", "log_px", "kl_z", "kl_a"}``, each ``(B,)``, with
        ``elbo = log_px - kl_z - kl_a`` (Monte Carlo averages over ``samples`` draws)."""
        self._check_x(x)
        s = self.config.mc_samples if samples is None else samples
        if noise is not None and "a" in noise:
            s = noise["a"].shape[0]
        t = self.log_densities(x, s, noise)
        log_px = t["log_px"].mean(0)
        kl_z = (t["log_qz"] - t["log_pz"]).mean(0)
        kl_a = (t["log_qa"] - t["log_pa"]).mean(0)
        return {"elbo": log_px - kl_z - kl_a, "log_px": log_px, "kl_z": kl_z, "kl_a": kl_a}

    # ---------------------------------------------------------------------------------------------- training
    def step(self, batch: dict, epoch: int) -> Output:
        """Loss ``-(E log p(x|z) - T (KL_z + KL_a))`` with the warm-up temperature ``T`` (5.5)."""
        if "x" not in batch:
            raise KeyError("an unsupervised batch needs the key 'x' (build batches with "
                           "dgmlab.data.iterate_batches(data, 'unsupervised', ...))")
        temp = kl_temperature(epoch, self.config.warmup_epochs)
        b = self.bound(batch["x"])
        loss = -(b["log_px"] - temp * (b["kl_z"] + b["kl_a"])).mean()
        terms = {k: v.mean().detach() for k, v in b.items()}
        return Output(loss, terms, {"temperature": temp, **terms})

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000) -> dict[str, float]:
        """``test_elbo`` (A(2), one sample, nats per point), its terms, and the active units of ``a`` and ``z``
        (average per-unit ``log q - log p`` above 0.01 nats). ``y`` is ignored."""
        self._check_x(x)
        was_training = self.training
        self.eval()
        sums: dict[str, float] = {}
        for xb in x.split(batch_size):
            for k, v in self.bound(xb, 1).items():
                k = "recon" if k == "log_px" else k  # E_q[log p(x|z)] is a reconstruction term, not log p(x)
                sums[f"test_{k}"] = sums.get(f"test_{k}", 0.0) + v.sum().item()
        units = self.kl_per_unit(x, batch_size)
        self.train(was_training)
        out = {k: v / len(x) for k, v in sums.items()}
        out.update({f"test_active_units_{k}": float((v > ACTIVE_UNIT_THRESHOLD).sum()) for k, v in units.items()})
        return out

    # ---------------------------------------------------------------------------------------- log-likelihood
    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 5000, chunk: int = 500) -> torch.Tensor:
        """``L_k(x)``, the importance-weighted bound (3.31) with ``h = (a, z)`` drawn jointly from ``q(a,z|x)``:
        ``w = p(x|z) p(z) p(a|z,x) / (q(a|x) q(z|a,x))``; unbiased for ``p(x)`` because ``p(a|z,x)`` integrates to
        one. Chunked with a running logsumexp; runs in eval mode."""
        self._check_x(x)
        chunk = max(1, min(chunk, k, IW_MAX_ROWS))
        per_pass = max(1, IW_MAX_ROWS // chunk)
        was_training = self.training
        self.eval()

        def log_weights(n: int, xb: torch.Tensor) -> torch.Tensor:
            t = self.log_densities(xb, n)
            return t["log_px"] + t["log_pz"] + t["log_pa"] - t["log_qa"] - t["log_qz"]

        out = torch.cat([chunked_log_mean_exp(lambda n, xb=xb: log_weights(n, xb), k, chunk)
                         for xb in x.split(per_pass)])
        self.train(was_training)
        return out

    # ------------------------------------------------------------------------------------ analysis helpers
    @torch.no_grad()
    def kl_per_unit(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, torch.Tensor]:
        """Per-unit Monte Carlo ``log q - log p`` averaged over ``x``: ``{"a": (a_dim,), "z": (z_dim,)}``."""
        self._check_x(x)
        total = {"a": 0.0, "z": 0.0}
        for xb in x.split(batch_size):
            q_a = self.q_a(xb)
            a = q_a.sample()
            q_z = self.q_z(a, xb)
            z = q_z.sample()
            total["a"] = total["a"] + (unit_log_prob(q_a, a) - unit_log_prob(self.generative_a(xb, z), a)).sum(0)
            total["z"] = total["z"] + (unit_log_prob(q_z, z) - unit_log_prob(self.prior_z(xb), z)).sum(0)
        return {k: v / len(x) for k, v in total.items()}

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` draws ``z ~ p(z)`` decoded by ``p(x|z)`` (the auxiliary variable plays no part in generation)."""
        like = next(self.parameters())
        z = dnn.standard_normal(self.config.z_dim, like, (n,)).sample()
        p_x = self.p_x(z)
        return p_x.mean if mean else p_x.sample()

    @torch.no_grad()
    def posterior_samples(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` draws of ``z`` from the non-Gaussian marginal ``q(z|x) = int q(z|a,x) q(a|x) da``: ``(n, B, z_dim)``."""
        self._check_x(x)
        a = self.q_a(x).sample((n,))
        return self.q_z(a, x).sample()

