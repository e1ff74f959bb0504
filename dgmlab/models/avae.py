"""The auxiliary variational auto-encoder (AVAE), unsupervised (thesis section 4.2, eqs. 4.12-4.17; Appendix A
section 2.2, eq. 2, and section 4.3, eqs. 19-20; reproduction notes rn-avae).

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
is the default here (``warmup_epochs=200``; it multiplies every KL term, never ``log p(x|z)``).

This is the one-layer teaching model with ``p(a|z,x)`` (reproduction notes G6); ``aux_conditional="z"`` drops ``x``
from it. Sizes follow the LVAE settings the thesis copies and, where it gives none, our choice (reproduction notes
rn-avae): 512-512 leaky-ReLU networks, 64-d ``z`` and ``a``.

Two stochastic layers (``layers=2``), the model of the MNIST benchmark, A(19)-(20) with ``L = 2``::

    q(a, z | x)  = q(a1 | x) q(z1 | a1, x) q(a2 | a1, x) q(z2 | a2, z1)                                    A(19)
    p(x, a, z)   = p(x | z1) p(z2) p(a2 | z2) p(z1 | z2) p(a1 | z1, z2)                                     A(20)

and the bound is again ``E_q[log p(x, a, z) - log q(a, z | x)]`` = ``E[log p(x|z1)] - KL_z1 - KL_a1 - KL_z2 - KL_a2``
with one Monte Carlo KL-like term per latent variable (``KL_v = E[log q(v|.) - log p(v|.)]``). Here the auxiliary
conditionals drop ``x`` as A(20) does (reproduction notes G6: ``aux_conditional`` defaults to ``"z"`` for two
layers; ``"zx"`` adds ``x`` to both ``p(a_i|.)``). Sizes, our choice after the LVAE (reproduction notes rn-avae):
the networks of layer 1 (``q(a1|x)``, ``q(z1|a1,x)``, ``p(a1|z1,z2)``, ``p(x|z1)``) are 512-512 with 64-d
``z1, a1``; those of layer 2 (``q(a2|a1,x)``, ``q(z2|a2,z1)``, ``p(a2|z2)``, ``p(z1|z2)``) are 256-256 with 32-d
``z2, a2``.
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
        hidden: hidden layers of every layer-1 network (encoder side; ``p(x|z)`` mirrors them).
        z_dim, a_dim: latent and auxiliary sizes (of ``z1, a1`` when ``layers=2``).
        activation: hidden nonlinearity (leaky ReLU 0.1, as in the LVAE MNIST setup).
        batch_norm: batch normalisation after every hidden linear layer (the thesis' AVAE runs used it).
        mc_samples: Monte Carlo samples of ``(a, z)`` per training step.
        warmup_epochs: KL temperature 0 -> 1 over this many epochs (thesis: 200; 0 = off).
        aux_conditional: ``"zx"`` = ``p(a|z,x)`` (A eq. 2) or ``"z"`` = ``p(a|z)``; ``None`` = the thesis' choice,
            ``"zx"`` for one layer and ``"z"`` for two (A eq. 20).
        layers: stochastic layers, 1 (A eq. 2) or 2 (A eqs. 19-20).
        hidden2, z2_dim, a2_dim: the layer-2 networks and sizes (used only when ``layers=2``).
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
    aux_conditional: str | None = None
    layers: int = 1
    hidden2: tuple[int, ...] = (256, 256)
    z2_dim: int = 32
    a2_dim: int = 32

    def __post_init__(self):
        if type(self.layers) is not int or self.layers not in (1, 2):
            raise ValueError(f"layers must be the integer 1 (one stochastic layer, A eq. 2) or 2 (two layers, "
                             f"A eqs. 19-20), got {self.layers!r}; set layers=1 or layers=2")
        self.hidden = tuple(int(h) for h in self.hidden)
        self.hidden2 = tuple(int(h) for h in self.hidden2)
        for name in ("x_dim", "z_dim", "a_dim", "mc_samples", "z2_dim", "a2_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose 'bernoulli' or 'gaussian'")
        if self.aux_conditional is None:
            self.aux_conditional = "zx" if self.layers == 1 else "z"
        if self.aux_conditional not in ("zx", "z"):
            raise ValueError(f"unknown aux_conditional {self.aux_conditional!r}; choose 'zx' for p(a|z,x) or 'z'")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0 (0 switches warm-up off), got {self.warmup_epochs}")


@register
class AVAE(Model):
    """Auxiliary VAE: q(a|x) q(z|a,x) with p(a|z,x) p(x|z) p(z), trained on the bound A(2) (thesis 4.12-4.17).

    ``layers=2`` gives the two-layer model of the MNIST benchmark, A(19)-(20)."""

    name = "avae"
    setting = "unsupervised"
    Config = AVAEConfig
    train_defaults: ClassVar[dict] = {"lr": 1e-3, "batch_size": 256}  # ladder-VAE settings (reproduction notes rn-avae)
    recipes: ClassVar[dict[str, dict]] = {"mnist": {
        "model": {"batch_norm": True, "warmup_epochs": 200},
        "train": {"epochs": 2000},
        "source": "thesis 4.2 and Appendix A section 4.3: the ladder VAE's MNIST settings (Sønderby et al. 2016), "
                  "warm-up 0 -> 1 over 200 epochs, batch normalisation, Adam 1e-3, batch 256, 2000 epochs, 1 MC and "
                  "1 IW sample; sizes are our choice (reproduction notes rn-avae): 512-512 networks, dim z = dim a = "
                  "64; --set layers=2 for the two-layer model of A eqs. 19-20 (A-Tab 1: -84.59 and -82.97)"}}

    def __init__(self, config: AVAEConfig):
        super().__init__(config)
        c = config
        kw = dict(act=c.activation, batch_norm=c.batch_norm)
        x_in = c.x_dim if c.aux_conditional == "zx" else 0
        self.q_a = dnn.gaussian(c.x_dim, c.hidden, c.a_dim, "logvar", **kw)  # q(a|x)    (4.15), q(a1|x)    A(19)
        self.q_z = dnn.gaussian(c.a_dim + c.x_dim, c.hidden, c.z_dim, "logvar", **kw)  # q(z|a,x) (4.15), q(z1|a1,x)
        p_a_in = c.z_dim + (c.z2_dim if c.layers == 2 else 0) + x_in
        self.p_a = dnn.gaussian(p_a_in, c.hidden, c.a_dim, "logvar", **kw)  # p(a|z,x)  (4.13), p(a1|z1,z2) A(20)
        self.p_x = dnn.likelihood(c.likelihood, c.z_dim, tuple(reversed(c.hidden)), c.x_dim, **kw)  # p(x|z)
        if c.layers == 2:
            self.q_a2 = dnn.gaussian(c.a_dim + c.x_dim, c.hidden2, c.a2_dim, "logvar", **kw)  # q(a2|a1,x)  A(19)
            self.q_z2 = dnn.gaussian(c.a2_dim + c.z_dim, c.hidden2, c.z2_dim, "logvar", **kw)  # q(z2|a2,z1) A(19)
            self.p_a2 = dnn.gaussian(c.z2_dim + x_in, c.hidden2, c.a2_dim, "logvar", **kw)  # p(a2|z2)    A(20)
            self.p_z1 = dnn.gaussian(c.z2_dim, tuple(reversed(c.hidden2)), c.z_dim, "logvar", **kw)  # p(z1|z2)

    @property
    def latents(self) -> tuple[str, ...]:
        """The latent variables, in the order their KL-like terms are summed: ``("z", "a")`` for one layer,
        ``("z1", "a1", "z2", "a2")`` for two."""
        return ("z", "a") if self.config.layers == 1 else ("z1", "a1", "z2", "a2")

    # ----------------------------------------------------------------------------------------------- the model
    def prior_z(self, like: torch.Tensor):
        """``p(z) = N(0, I)`` (the top layer: ``p(z2)`` when ``layers=2``)."""
        return dnn.standard_normal(self.config.z2_dim if self.config.layers == 2 else self.config.z_dim, like)

    def generative_a(self, x: torch.Tensor, *z: torch.Tensor):
        """``p(a | z, x)`` (or ``p(a | z)``); with two layers ``p(a1 | z1, z2)`` given ``z = (z1, z2)``."""
        return self.p_a(*z, x) if self.config.aux_conditional == "zx" else self.p_a(*z)

    def generative_a2(self, x: torch.Tensor, z2: torch.Tensor):
        """``p(a2 | z2)`` (or ``p(a2 | z2, x)``), A(20)."""
        return self.p_a2(z2, x) if self.config.aux_conditional == "zx" else self.p_a2(z2)

    def _check_x(self, x: torch.Tensor) -> None:
        check_input(x, self.config.x_dim)
        if x.dim() != 2:
            raise ValueError(f"x must have shape (batch, {self.config.x_dim}), got {tuple(x.shape)}")

    def draw(self, x: torch.Tensor, samples: int = 1, noise: dict | None = None) -> tuple[dict, dict, dict]:
        """Draw every latent from the inference model and return ``(h, q, p)``: the draws ``(S, B, dim)``, and for
        each the inference and generative distributions that score it, keyed by ``self.latents``.

        ``noise`` (optional) fixes the draws: ``{"a": (S, B, a_dim), "z": (S, B, z_dim)}`` (keys ``a1, z1, a2, z2``
        for two layers)."""
        noise = noise or {}
        if self.config.layers == 1:
            q_a = self.q_a(x)                                              # q(a|x)      (4.15)
            a = reparameterize(q_a, noise.get("a"), (samples,))
            q_z = self.q_z(a, x)                                           # q(z|a,x)    (4.15)
            z = reparameterize(q_z, noise.get("z"))
            return ({"z": z, "a": a}, {"z": q_z, "a": q_a},
                    {"z": self.prior_z(x), "a": self.generative_a(x, z)})  # p(z), p(a|z,x) (4.13)
        q = {"a1": self.q_a(x)}                                            # q(a1|x)         A(19)
        h = {"a1": reparameterize(q["a1"], noise.get("a1"), (samples,))}
        q["z1"] = self.q_z(h["a1"], x)                                     # q(z1|a1,x)      A(19)
        h["z1"] = reparameterize(q["z1"], noise.get("z1"))
        q["a2"] = self.q_a2(h["a1"], x)                                    # q(a2|a1,x)      A(19)
        h["a2"] = reparameterize(q["a2"], noise.get("a2"))
        q["z2"] = self.q_z2(h["a2"], h["z1"])                              # q(z2|a2,z1)     A(19)
        h["z2"] = reparameterize(q["z2"], noise.get("z2"))
        p = {"z2": self.prior_z(x), "a2": self.generative_a2(x, h["z2"]),  # p(z2), p(a2|z2) A(20)
             "z1": self.p_z1(h["z2"]), "a1": self.generative_a(x, h["z1"], h["z2"])}  # p(z1|z2), p(a1|z1,z2)
        return h, q, p

    def log_densities(self, x: torch.Tensor, samples: int = 1, noise: dict | None = None) -> dict[str, torch.Tensor]:
        """The log-densities of the bound at one draw of every latent, each ``(S, B)``: ``log_px`` and, per latent
        ``v``, ``log_q{v}`` and ``log_p{v}`` (one layer: ``log_px, log_pz, log_pa, log_qa, log_qz`` of A(2))."""
        h, q, p = self.draw(x, samples, noise)
        out = {"log_px": self.p_x(h["z1" if self.config.layers == 2 else "z"]).log_prob(x)}
        for v in self.latents:
            out[f"log_p{v}"] = p[v].log_prob(h[v])
            out[f"log_q{v}"] = q[v].log_prob(h[v])
        return out

    def bound(self, x: torch.Tensor, samples: int | None = None, noise: dict | None = None) -> dict[str, torch.Tensor]:
        """The bound A(2) (A(19)-(20) for two layers) per point: ``{"elbo", "log_px", "kl_<v>" per latent}``, each
        ``(B,)``, with ``elbo = log_px - sum_v kl_<v>`` (Monte Carlo averages over ``samples`` draws)."""
        self._check_x(x)
        s = self.config.mc_samples if samples is None else samples
        if noise:
            s = next(iter(noise.values())).shape[0]
        t = self.log_densities(x, s, noise)
        log_px = t["log_px"].mean(0)
        kl = {f"kl_{v}": (t[f"log_q{v}"] - t[f"log_p{v}"]).mean(0) for v in self.latents}
        elbo = log_px
        for term in kl.values():
            elbo = elbo - term
        return {"elbo": elbo, "log_px": log_px, **kl}

    # ---------------------------------------------------------------------------------------------- training
    def step(self, batch: dict, epoch: int) -> Output:
        """Loss ``-(E log p(x|z) - T sum_v KL_v)`` with the warm-up temperature ``T`` (5.5) on the KL terms only."""
        if "x" not in batch:
            raise KeyError("an unsupervised batch needs the key 'x' (build batches with "
                           "dgmlab.data.iterate_batches(data, 'unsupervised', ...))")
        temp = kl_temperature(epoch, self.config.warmup_epochs)
        b = self.bound(batch["x"])
        kl = sum(b[f"kl_{v}"] for v in self.latents)
        loss = -(b["log_px"] - temp * kl).mean()
        terms = {k: v.mean().detach() for k, v in b.items()}
        return Output(loss, terms, {"temperature": temp, **terms})

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000) -> dict[str, float]:
        """``test_elbo`` (the bound, one sample, nats per point), its terms, and the active units of every latent
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
        ``w = p(x|z) p(z) p(a|z,x) / (q(a|x) q(z|a,x))`` (two layers: ``w = p(x,a,z) / q(a,z|x)`` of A(19)-(20));
        unbiased for ``p(x)`` because every ``p(a_i|.)`` integrates to one. Chunked with a running logsumexp; runs
        in eval mode."""
        self._check_x(x)
        chunk = max(1, min(chunk, k, IW_MAX_ROWS))
        per_pass = max(1, IW_MAX_ROWS // chunk)
        was_training = self.training
        self.eval()

        def log_weights(n: int, xb: torch.Tensor) -> torch.Tensor:
            t = self.log_densities(xb, n)
            log_w = t["log_px"]
            for v in self.latents:  # log p(x|z) + log p(z) + log p(a|z,x) - log q(a|x) - log q(z|a,x) for one layer
                log_w = log_w + t[f"log_p{v}"]
            for v in reversed(self.latents):
                log_w = log_w - t[f"log_q{v}"]
            return log_w

        out = torch.cat([chunked_log_mean_exp(lambda n, xb=xb: log_weights(n, xb), k, chunk)
                         for xb in x.split(per_pass)])
        self.train(was_training)
        return out

    # ------------------------------------------------------------------------------------ analysis helpers
    @torch.no_grad()
    def kl_per_unit(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, torch.Tensor]:
        """Per-unit Monte Carlo ``log q - log p`` averaged over ``x``, per latent: ``{"a": (a_dim,), "z": (z_dim,)}``
        (``a1, z1, a2, z2`` for two layers)."""
        self._check_x(x)
        total = {v: 0.0 for v in self.latents}
        for xb in x.split(batch_size):
            h, q, p = self.draw(xb)
            for v in self.latents:
                total[v] = total[v] + (unit_log_prob(q[v], h[v]) - unit_log_prob(p[v], h[v]))[0].sum(0)
        return {k: v / len(x) for k, v in total.items()}

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` draws ``z ~ p(z)`` (two layers: ``z2 ~ p(z2)``, ``z1 ~ p(z1|z2)``) decoded by ``p(x|z)`` (the
        auxiliary variables play no part in generation)."""
        like = next(self.parameters())
        z = self.prior_z(like).sample((n,))
        if self.config.layers == 2:
            z = self.p_z1(z).sample()
        p_x = self.p_x(z)
        return p_x.mean if mean else p_x.sample()

    @torch.no_grad()
    def posterior_samples(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` draws of ``z`` (``z1`` for two layers) from the non-Gaussian marginal
        ``q(z|x) = int q(z|a,x) q(a|x) da``: ``(n, B, z_dim)``."""
        self._check_x(x)
        a = self.q_a(x).sample((n,))
        return self.q_z(a, x).sample()
