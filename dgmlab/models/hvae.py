"""The hierarchical VAE with bottom-up ("vanilla") inference (thesis section 3.3, eqs. 3.32-3.36; Sønderby et al.
2016, "Ladder variational autoencoders", section 2.1): the "VAE" baseline of the thesis' Figs. 5.2 and 5.3.

Generative model (3.32)-(3.34), L latent layers ``z_1`` (bottom) ... ``z_L`` (top)::

    p(x, z_1..L) = p(x|z_1) p(z_L) prod_{i=1}^{L-1} p(z_i|z_{i+1}),
    p(z_L) = N(0, I),   p(z_i|z_{i+1}) = N(mu_p,i(z_{i+1}), sigma^2_p,i(z_{i+1})),   p(x|z_1) = B(x | mu(z_1))

Inference model (3.35)-(3.36), bottom-up::

    q(z_1..L|x) = q(z_1|x) prod_{i=2}^{L} q(z_i|z_{i-1}),   q(z_i|.) = N(mu_q,i(.), sigma^2_q,i(.))

Every ``mu`` / ``sigma^2`` pair is a two-layer MLP ``d = MLP(input)`` shared by a linear ``mu = Linear(d)`` and
``sigma^2 = softplus(Linear(d))`` (Sønderby et al. 2016, eqs. 10-12). Sizes (thesis section 5.1.1): latent layers
64-32-16-8-4 from bottom to top; the MLPs between ``x`` and ``z_1`` have 512 units in both hidden layers, the
connections ``z_1<->z_2``, ``z_2<->z_3``, ``z_3<->z_4``, ``z_4<->z_5`` have 256, 128, 64 and 32, in the inference
and the generative direction alike. ``depth = d`` keeps the bottom ``d`` layers (shallower models "remove latent
variables from the top of the hierarchy").

Bound (3.30) per layer, with the warm-up temperature ``T`` of (5.5) on the KL terms only::

    L_T(x) = E_q[log p(x|z_1)] - T sum_i KL_i,   KL_i = E_q[log q(z_i|.) - log p(z_i|.)]

The layer terms sum to ``KL(q(z_1..L|x) || p(z_1..L))``. In the bottom-up model ``z_{i+1}`` is drawn *from* ``z_i``,
so ``KL_i`` for ``i < L`` cannot be taken analytically "given the parent" (the parent of ``p(z_i|z_{i+1})`` depends on
the very sample ``z_i``): it is the Monte Carlo difference ``log q(z_i|z_{i-1}) - log p(z_i|z_{i+1})`` at the samples.
The top layer's ``KL(q(z_L|z_{L-1}) || N(0, I))`` is analytic given the sampled ``z_{L-1}``.

:class:`HierarchicalVAE` holds what the bottom-up model and the ladder VAE (:mod:`dgmlab.models.lvae`) share: the
generative model, the bounds (ELBO, importance-weighted bound (3.31), chunked ``L_5000``), per-layer and per-unit KL,
the training step and the test metrics. A subclass only defines the inference pass.

Choices the thesis leaves open (reproduction notes, hierarchical VAEs):

* batch-norm placement: after each hidden linear layer, before the leaky ReLU; with ``batch_norm_heads`` also on the
  linear ``mu`` output and on the variance pre-activation (before softplus) of every latent Gaussian, in the inference
  and the generative networks, never on the Bernoulli logits of ``p(x|z_1)``; leading sample axes share the batch
  statistics (reproduction notes: hierarchical BN placement);
* variance floor: ``sigma^2 = softplus(.) + 1e-6`` (reproduction notes rn-gaussian-heads);
* KL estimators: analytic where both Gaussians are conditioned on samples drawn before the layer, otherwise Monte
  Carlo at the sample, and Monte Carlo inside every importance weight (reproduction notes G15); per-unit KL of the
  Monte Carlo layers is the per-unit ``log q - log p`` averaged over the data, one sample per point, so a collapsed
  unit reads ~0 and may be slightly negative (reproduction notes: per-unit KL of bottom-up layers);
* warm-up per epoch, ``T = epoch / warmup_epochs`` from epoch 0 (reproduction notes rn-warmup), also applied to the
  ``log p - log q`` terms inside the importance weights when ``iw > 1``;
* weights: PyTorch's default initialisation, as the VAE (reproduction notes rn-init);
* active units: average KL above 0.01 nats over the test set (reproduction notes L3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import nn
from torch.distributions import Independent, Normal

from dgmlab import nn as dnn
from dgmlab import objectives
from dgmlab.models import register
from dgmlab.models.base import Model, Output, check_input
from dgmlab.models.vae import IW_EVAL_ROWS, LIKELIHOODS, VARIANCES, _check_k, batches, evaluation

Layers = list  # one entry per latent layer, index 0 = z_1 (bottom)


# --------------------------------------------------------------------------------------------------- configuration
@dataclass
class HVAEConfig:
    """Options of the hierarchical VAEs (thesis section 5.1.1; Sønderby et al. 2016, section 3). ``x_dim`` and
    ``likelihood`` come from the data via ``make_config``.

    Attributes:
        x_dim: input dimension.
        z_dims: latent units per layer, bottom (``z_1``) to top: the thesis' 64-32-16-8-4.
        hidden: width of the two hidden layers of the MLPs of each stage, bottom to top: stage 1 (``x <-> z_1``) 512,
            then 256, 128, 64, 32 (one width per latent layer).
        depth: number of latent layers used, 1..len(z_dims); the top layers are dropped (``None``: all of them).
        activation: hidden nonlinearity (leaky ReLU ``max(x, 0.1x)`` on MNIST).
        likelihood: ``bernoulli`` (binary x, (3.34)) or ``gaussian``.
        variance: parameterisation of every latent ``sigma^2``: ``softplus_var`` is ``softplus(Linear(d))``
            (Sønderby et al. eqs. 12, 15); see reproduction notes rn-gaussian-heads.
        batch_norm: batch normalisation after every hidden linear layer, before the nonlinearity (the "+BN" models).
        batch_norm_heads: also batch-normalise the linear outputs of every latent ``mu`` and of the pre-softplus
            variance ("including the mu and sigma layers of the latent variables", thesis section 5.1.1).
        warmup_epochs: KL temperature ``T`` from 0 to 1 linearly over this many epochs, (5.5); 0 = off. It
            multiplies the KL terms only, never ``log p(x|z_1)``.
        iw: importance samples of the training bound (3.31) (1 = the ELBO).
        mc: Monte Carlo samples of the training bound (averaged outside the log; 10 in the thesis' fine-tuning).
        eval_iw: importance samples of ``test_iw_bound`` in ``evaluate`` (0 or 1 = skip); kept small because
            evaluation runs every epoch. Use ``log_likelihood`` (``python -m dgmlab eval``) for ``L_5000``.
    """

    x_dim: int
    z_dims: tuple[int, ...] = (64, 32, 16, 8, 4)
    hidden: tuple[int, ...] = (512, 256, 128, 64, 32)
    depth: int | None = None
    activation: str = "leaky_relu"
    likelihood: str = "bernoulli"
    variance: str = "softplus_var"
    batch_norm: bool = False
    batch_norm_heads: bool = False
    warmup_epochs: int = 0
    iw: int = 1
    mc: int = 1
    eval_iw: int = 10

    def __post_init__(self):
        name = type(self).__name__
        if isinstance(self.z_dims, int):
            self.z_dims = (self.z_dims,)
        if isinstance(self.hidden, int):
            self.hidden = (self.hidden,)
        self.z_dims = tuple(self.z_dims)  # lists come back from JSON checkpoints
        self.hidden = tuple(self.hidden)
        if not self.z_dims:
            raise ValueError(f"{name}.z_dims needs at least one latent layer, got ()")
        for field, sizes in (("z_dims", self.z_dims), ("hidden", self.hidden)):
            if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
                raise ValueError(f"{name}.{field} must hold positive integers (one per latent layer), got {sizes}")
        if len(self.hidden) != len(self.z_dims):
            raise ValueError(f"{name}: z_dims and hidden must have the same length (one MLP width per latent layer), "
                             f"got {len(self.z_dims)} latent sizes {self.z_dims} and {len(self.hidden)} widths "
                             f"{self.hidden}")
        if self.depth is not None and (isinstance(self.depth, bool) or not isinstance(self.depth, int)
                                       or not 1 <= self.depth <= len(self.z_dims)):
            raise ValueError(f"{name}.depth must be an integer from 1 to {len(self.z_dims)} (the number of latent "
                             f"layers in z_dims={self.z_dims}), or None for all of them; got {self.depth!r}")
        for field in ("x_dim", "iw", "mc"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{field} must be a positive integer, got {value!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.variance not in VARIANCES:
            raise ValueError(f"unknown variance parameterisation {self.variance!r}; choose one of {VARIANCES}")
        dnn.activation(self.activation)  # raises for an unknown name
        if not isinstance(self.warmup_epochs, (int, float)) or self.warmup_epochs < 0:
            raise ValueError(f"{name}.warmup_epochs must be >= 0 (0 switches warm-up off), got {self.warmup_epochs!r}")
        if isinstance(self.eval_iw, bool) or not isinstance(self.eval_iw, int) or self.eval_iw < 0:
            raise ValueError(f"{name}.eval_iw must be an integer >= 0 (0 or 1 skips test_iw_bound), "
                             f"got {self.eval_iw!r}")

    @property
    def sizes(self) -> tuple[int, ...]:
        """Latent sizes of the layers in use, bottom to top."""
        return self.z_dims[:self.depth]

    @property
    def widths(self) -> tuple[int, ...]:
        """Hidden widths of the stages in use, bottom to top."""
        return self.hidden[:self.depth]


# --------------------------------------------------------------------------------------------------- building blocks
class NormalisedGaussianHead(dnn.GaussianHead):
    """A :class:`dgmlab.nn.GaussianHead` whose two linear outputs (``mu`` and the variance pre-activation) are batch
    normalised, as in the thesis' "+BN" hierarchical models (section 5.1.1: BN "throughout all layers, including the
    mu and sigma layers of the latent variables"). Leading sample axes are folded into the batch for the statistics."""

    def __init__(self, in_dim: int, out_dim: int, variance: str = "softplus_var"):
        super().__init__(in_dim, out_dim, variance)
        self.mu_norm = dnn.BatchNorm(out_dim)
        self.scale_norm = dnn.BatchNorm(out_dim)

    def forward(self, h: torch.Tensor) -> Independent:
        lead, flat = h.shape[:-1], h.reshape(-1, h.shape[-1])
        mu = self.mu_norm(self.mu(flat)).reshape(*lead, -1)
        s = self.scale_norm(self.scale(flat)).reshape(*lead, -1)
        return Independent(Normal(mu, self.std(s)), 1)


def gaussian_head(c: HVAEConfig, in_dim: int, out_dim: int) -> dnn.GaussianHead:
    """``mu = Linear(d)``, ``sigma^2 = softplus(Linear(d))`` (Sønderby et al. eqs. 11-12), batch-normalised with
    ``batch_norm_heads``."""
    return (NormalisedGaussianHead if c.batch_norm_heads else dnn.GaussianHead)(in_dim, out_dim, c.variance)


def gaussian_conditional(c: HVAEConfig, in_dim: int, width: int, out_dim: int) -> dnn.Conditional:
    """``N(mu(y), sigma^2(y))`` with ``d(y) = MLP(y)`` of two hidden layers of ``width`` units (eqs. 10-12)."""
    return dnn.Conditional(in_dim, (width, width), gaussian_head(c, width, out_dim), c.activation, c.batch_norm)


def normal(mu: torch.Tensor, var: torch.Tensor) -> Independent:
    """A diagonal Gaussian ``N(mu, diag var)`` over the last axis."""
    return Independent(Normal(mu, var.sqrt()), 1)


def draw(dist: Independent, eps: torch.Tensor | None, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
    """Reparameterised sample ``z = mu + sigma * eps`` (3.19)-(3.21); fresh noise unless ``eps`` is given."""
    if eps is None:
        return dist.rsample(sample_shape)
    base = dist.base_dist
    return base.loc + base.scale * eps


def unit_log_prob(dist: Independent, z: torch.Tensor) -> torch.Tensor:
    """Per-unit log density (before the sum over the event axis)."""
    return dist.base_dist.log_prob(z)


@dataclass
class Pass:
    """One stochastic pass through inference and generative model: per layer (index 0 = ``z_1``) the inference
    distribution ``q``, the prior ``p`` (``p(z_i|z_{i+1})``, and ``N(0, I)`` at the top) and the sample ``z``, plus
    ``log p(x|z_1)``. Shapes: ``z`` and ``log_px`` carry the sample axes ``(*sample_shape, batch)``."""

    q: Layers
    p: Layers
    z: Layers
    log_px: torch.Tensor


# --------------------------------------------------------------------------------------------------- the model family
class HierarchicalVAE(Model):
    """What the bottom-up hierarchical VAE and the ladder VAE share: the generative model (3.32)-(3.34), the bounds,
    the KL bookkeeping per layer and unit, training and evaluation. Subclasses implement :meth:`infer`."""

    setting: ClassVar[str] = "unsupervised"
    train_defaults: ClassVar[dict] = {"lr": 1e-3, "batch_size": 256}  # thesis section 5.1.1 (Adam)

    def __init__(self, config: HVAEConfig):
        super().__init__(config)
        c = config
        sizes, widths = c.sizes, c.widths
        # generative model: p(x|z_1) with the 512-unit stage-1 MLP, (3.34)
        self.p_x = dnn.likelihood(c.likelihood, sizes[0], (widths[0], widths[0]), c.x_dim, act=c.activation,
                                  batch_norm=c.batch_norm)
        # p(z_i|z_{i+1}) for i = 1..L-1 (index i-1), through the MLP of stage i+1, (3.33); p(z_L) = N(0, I)
        self.p_z = nn.ModuleList(gaussian_conditional(c, sizes[i + 1], widths[i + 1], sizes[i])
                                 for i in range(len(sizes) - 1))

    # ---------------------------------------------------------------------------------------------------- the model
    @property
    def n_layers(self) -> int:
        return len(self.config.sizes)

    def layer_names(self) -> list[str]:
        return [f"z{i + 1}" for i in range(self.n_layers)]

    def prior_top(self, like: torch.Tensor) -> Independent:
        """``p(z_L) = N(0, I)`` (3.33), on the device and dtype of ``like``."""
        return dnn.standard_normal(self.config.sizes[-1], like)

    def infer(self, x: torch.Tensor, sample_shape: tuple[int, ...] = (),
              noise: Sequence[torch.Tensor] | None = None) -> tuple[Layers, Layers, Layers]:
        """Draw ``z_1..L ~ q(z|x)`` and return ``(q, p, z)`` per layer (see :class:`Pass`)."""
        raise NotImplementedError  # pragma: no cover - interface

    def analytic_layers(self) -> set[int]:
        """Indices of the layers whose ``KL(q || p)`` is analytic given the parent sample (see the module text)."""
        raise NotImplementedError  # pragma: no cover - interface

    def check_observed(self, x: torch.Tensor) -> None:
        """Raise a clear error when ``x`` cannot be scored by ``p(x|z_1)`` (wrong shape, dtype or values)."""
        check_input(x, self.config.x_dim)
        if x.dim() != 2:
            raise ValueError(f"x must have shape (batch, {self.config.x_dim}), got {tuple(x.shape)}")
        if self.config.likelihood == "bernoulli" and not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("the Bernoulli likelihood scores binary data, but x holds values other than 0 and 1; "
                             "binarise it first, e.g. dgmlab.data.binarize(x), or use likelihood='gaussian'")

    def _noise(self, noise: Sequence[torch.Tensor] | None, sample_shape: tuple[int, ...], batch: int):
        """Check a fixed-noise list (one ``eps`` per layer, shape ``(*sample_shape, batch, d_i)``) and return the
        sample shape it implies."""
        if noise is None:
            return tuple(sample_shape)
        if len(noise) != self.n_layers:
            raise ValueError(f"noise must hold one tensor per latent layer ({self.n_layers}), got {len(noise)}")
        shape = tuple(noise[0].shape[:-2])
        for i, (eps, d) in enumerate(zip(noise, self.config.sizes)):
            if tuple(eps.shape) != (*shape, batch, d):
                raise ValueError(f"noise for z{i + 1} must have shape {(*shape, batch, d)}, got {tuple(eps.shape)}")
        return shape

    def forward_pass(self, x: torch.Tensor, sample_shape: tuple[int, ...] = (),
                     noise: Sequence[torch.Tensor] | None = None) -> Pass:
        """Inference pass and ``log p(x|z_1)``; ``noise`` (one ``eps`` per layer) fixes the draws."""
        self.check_observed(x)
        sample_shape = self._noise(noise, sample_shape, len(x))
        q, p, z = self.infer(x, sample_shape, noise)
        return Pass(q, p, z, self.p_x(z[0]).log_prob(x))

    def decode(self, z1: torch.Tensor):
        """``p(x|z_1)``: factorised Bernoulli or Gaussian with batch shape ``z1.shape[:-1]``."""
        check_input(z1, self.config.sizes[0], what="z1")
        return self.p_x(z1)

    # ------------------------------------------------------------------------------------------------- the KL terms
    def unit_kl(self, s: Pass, analytic: bool = True) -> Layers:
        """Per layer, the per-unit KL estimate, shape ``(*sample_shape, batch, d_i)``: analytic
        ``KL(q(z_ij|.) || p(z_ij|.))`` for the layers of :meth:`analytic_layers` (with ``analytic``), else the Monte
        Carlo difference ``log q(z_ij|.) - log p(z_ij|.)`` at the sample. Summed over units and layers it is the
        KL term of the ELBO (3.30)."""
        exact = self.analytic_layers() if analytic else set()
        out = []
        for i, (q, p, z) in enumerate(zip(s.q, s.p, s.z)):
            if i in exact:
                kl = objectives.kl_per_unit(q, p)
                out.append(kl.expand(*z.shape) if kl.shape != z.shape else kl)
            else:
                out.append(unit_log_prob(q, z) - unit_log_prob(p, z))
        return out

    @staticmethod
    def log_ratio(s: Pass) -> torch.Tensor:
        """``sum_i log p(z_i|.) - log q(z_i|.)`` at the samples, shape ``(*sample_shape, batch)`` (Monte Carlo)."""
        return sum(p.log_prob(z) - q.log_prob(z) for q, p, z in zip(s.q, s.p, s.z))

    # ------------------------------------------------------------------------------------------------------ bounds
    def elbo(self, x: torch.Tensor, mc: int = 1, analytic_kl: bool = True,
             noise: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The ELBO (3.30) per data point: ``recon = E_q log p(x|z_1)``, ``kl_layer{i}`` for each layer, their sum
        ``kl`` and ``elbo = recon - kl`` (each shape ``(batch,)``, Monte Carlo averages over ``mc`` draws).

        ``analytic_kl=False`` uses the Monte Carlo difference ``log q - log p`` at the samples for every layer; then
        ``elbo`` equals ``iw_bound(x, 1)`` drawn with the same noise. ``noise`` (one ``eps`` per layer, shape
        ``(mc, batch, d_i)``) fixes the draws.
        """
        _check_k(mc, "Monte Carlo samples mc")
        s = self.forward_pass(x, (mc,), noise)
        layers = [u.sum(-1).mean(0) for u in self.unit_kl(s, analytic_kl)]
        recon = s.log_px.mean(0)
        kl = sum(layers)
        return {"recon": recon, "kl": kl, "elbo": recon - kl,
                **{f"kl_layer{i + 1}": v for i, v in enumerate(layers)}}

    def log_weights(self, x: torch.Tensor, k: int, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``log w_k = log p(x, z_k) - log q(z_k|x)`` for ``k`` joint samples ``z_k = (z_1..L)_k ~ q``; ``(k, batch)``.
        Every term is Monte Carlo (reproduction notes G15)."""
        _check_k(k)
        s = self.forward_pass(x, (k,), noise)
        return s.log_px + self.log_ratio(s)

    def iw_bound(self, x: torch.Tensor, k: int, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """One draw of the importance-weighted bound (3.31) with ``k`` samples per point, shape ``(batch,)``."""
        return objectives.iw_bound(self.log_weights(x, k, noise), dim=0)

    def log_likelihood(self, x: torch.Tensor, k: int = 5000, chunk: int = 500,
                       batch_size: int | None = None) -> torch.Tensor:
        """``log p(x) ~= L_k(x)``, the thesis' test log-likelihood with ``k = 5000``, per data point (reproduction
        notes rn-iw-evaluation).

        Memory-bounded: ``chunk`` joint samples of all layers per point at a time, folded into a running logsumexp,
        for ``batch_size`` points at once (default ``IW_EVAL_ROWS // chunk``, at least 1). Runs in eval mode.
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
                out.append(objectives.chunked_log_mean_exp(lambda n, xb=xb: self.log_weights(xb, n), k, chunk))
        return torch.cat(out)

    @torch.no_grad()
    def kl_per_unit(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, torch.Tensor]:
        """Per layer, ``KL(q(z_ij|.) || p(z_ij|.))`` per unit ``j`` averaged over the points of ``x`` (one posterior
        sample each): ``{"z1": (d_1,), ..., "zL": (d_L,)}``. The estimator of each layer is that of :meth:`unit_kl`:
        analytic for the layers of :meth:`analytic_layers` (bottom-up VAE: the top layer only; ladder VAE: every
        layer), Monte Carlo ``log q - log p`` for the others; the values of a layer sum to its
        ``test_kl_layer{i}``. Units with (almost) zero KL have collapsed onto their prior (thesis Fig. 5.2;
        :func:`dgmlab.objectives.active_units`)."""
        self.check_observed(x)
        totals = [0.0] * self.n_layers
        with evaluation(self):
            for xb in batches(x, batch_size):
                for i, u in enumerate(self.unit_kl(self.forward_pass(xb, (1,)))):
                    totals[i] = totals[i] + u[0].sum(0)
        return {name: t / len(x) for name, t in zip(self.layer_names(), totals)}

    # ---------------------------------------------------------------------------------------------------- training
    def step(self, batch: dict[str, torch.Tensor], epoch: int) -> Output:
        """Loss ``-(bound)`` on one batch, with the KL temperature ``T`` of warm-up (5.5) on the KL terms only.

        ``iw == 1``: ``E_q log p(x|z_1) - T * sum_i KL_i`` (``mc`` samples; KL analytic where the class allows it).
        ``iw > 1``: the bound (3.31) with ``log w = log p(x|z_1) + T * sum_i (log p(z_i|.) - log q(z_i|.))``, averaged
        over ``mc`` independent draws. ``terms`` are the untempered pieces (``elbo``, ``recon``, ``kl``,
        ``kl_layer{i}``, and ``iw_bound`` when ``iw > 1``), averaged over the batch; ``metrics`` repeats them as
        floats beside the temperature.
        """
        if "x" not in batch:
            raise KeyError("an unsupervised batch needs the key 'x' (build batches with "
                           "dgmlab.data.iterate_batches(data, 'unsupervised', ...))")
        x, c = batch["x"], self.config
        temp = objectives.kl_temperature(epoch, c.warmup_epochs)
        s = self.forward_pass(x, (c.mc, c.iw))  # shapes (mc, iw, batch)
        layers = [u.sum(-1).mean((0, 1)) for u in self.unit_kl(s)]
        recon, kl = s.log_px.mean((0, 1)), sum(layers)
        terms = {"elbo": recon - kl, "recon": recon, "kl": kl, **{f"kl_layer{i + 1}": v for i, v in enumerate(layers)}}
        if c.iw == 1:
            bound = recon - temp * kl
        else:
            ratio = self.log_ratio(s)
            bound = objectives.iw_bound(s.log_px + temp * ratio, dim=1).mean(0)
            terms["iw_bound"] = objectives.iw_bound(s.log_px + ratio, dim=1).mean(0)
        terms = {k: v.mean().detach() for k, v in terms.items()}
        return Output(loss=-bound.mean(), terms=terms,
                      metrics={"temperature": temp, **terms})

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000,
                 iw: int | None = None) -> dict[str, float]:
        """Test metrics in nats per point (one posterior sample per point): ``test_elbo`` (``L_1``), ``test_recon``,
        ``test_kl`` (all layers) and ``test_kl_layer{i}`` (they sum to ``test_kl``), ``test_active_units_layer{i}``
        (units with average KL > 0.01 nats) and their total ``test_active_units``, ``test_unit_kl_layer{i}`` (a list:
        the KL of every unit, which sums to ``test_kl_layer{i}``), and ``test_iw_bound`` (``L_iw``,
        default ``config.eval_iw``; skipped when ``iw <= 1``). ``y`` is ignored."""
        k = self.config.eval_iw if iw is None else iw
        self.check_observed(x)
        n_layers = self.n_layers
        sums = {"test_elbo": 0.0, "test_recon": 0.0, "test_kl": 0.0,
                **{f"test_kl_layer{i + 1}": 0.0 for i in range(n_layers)}}
        if k > 1:
            sums["test_iw_bound"] = 0.0
        units = [torch.zeros(d, dtype=x.dtype, device=x.device) for d in self.config.sizes]
        with evaluation(self):
            for xb in batches(x, batch_size):
                s = self.forward_pass(xb, (1,))
                per_unit = [u[0] for u in self.unit_kl(s)]  # (batch, d_i) each
                layers = [u.sum(-1) for u in per_unit]
                recon, kl = s.log_px[0], sum(layers)
                sums["test_recon"] += float(recon.sum())
                sums["test_kl"] += float(kl.sum())
                sums["test_elbo"] += float((recon - kl).sum())
                for i, (u, layer) in enumerate(zip(per_unit, layers)):
                    sums[f"test_kl_layer{i + 1}"] += float(layer.sum())
                    units[i] += u.sum(0)
                if k > 1:
                    for xs in batches(xb, max(1, IW_EVAL_ROWS // k)):
                        sums["test_iw_bound"] += float(self.iw_bound(xs, k).sum())
        metrics = {key: value / len(x) for key, value in sums.items()}
        active = [objectives.active_units(u / len(x)) for u in units]
        metrics.update({f"test_active_units_layer{i + 1}": float(a) for i, a in enumerate(active)})
        metrics["test_active_units"] = float(sum(active))
        # Per unit, so that the history of a run holds the data of thesis Fig. 5.2 (log KL per unit against epoch).
        metrics.update({f"test_unit_kl_layer{i + 1}": [round(float(v), 6) for v in u / len(x)]
                        for i, u in enumerate(units)})
        return metrics

    # ----------------------------------------------------------------------------------------------- using the model
    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """Ancestral samples: ``z_L ~ N(0, I)``, ``z_i ~ p(z_i|z_{i+1})``, then the mean of ``p(x|z_1)`` (default)
        or a draw from it; shape ``(n, x_dim)``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        like = next(self.parameters())
        with evaluation(self):
            z = dnn.standard_normal(self.config.sizes[-1], like, (n,)).sample()
            for p_z in reversed(self.p_z):
                z = p_z(z).sample()
            p_x = self.p_x(z)
            return p_x.mean if mean else p_x.sample()

    @torch.no_grad()
    def posterior(self, x: torch.Tensor, mean: bool = True) -> dict[str, torch.Tensor]:
        """Per layer the latent code of ``x``: ``{"z1": (batch, d_1), ...}``, from the inference pass with zero noise
        (every ``z_i`` the mean of its ``q`` given the parents' means) or one posterior sample (``mean=False``); for
        e.g. a PCA of each layer (Sønderby et al. Fig. 6)."""
        self.check_observed(x)
        noise = [x.new_zeros(len(x), d) for d in self.config.sizes] if mean else None
        with evaluation(self):
            _, _, z = self.infer(x, (), noise)
        return dict(zip(self.layer_names(), z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """Decode the posterior-mean ``z_1`` of :meth:`posterior`: the mean of ``p(x|z_1)`` (or a sample)."""
        z1 = self.posterior(x)["z1"]
        with evaluation(self):
            p_x = self.p_x(z1)
            return p_x.mean if mean else p_x.sample()


def thesis_mnist_recipe(variant: str) -> dict:
    """The MNIST recipe of thesis 5.1.1 shared by the hierarchical VAE and the Ladder VAE (``variant`` names which)."""
    return {"model": {"batch_norm": True, "batch_norm_heads": True, "warmup_epochs": 200},
            "train": {"epochs": 2000},
            "source": f"thesis 5.1.1 (Sønderby et al. 2016, section 3), {variant}: 5 latent layers 64-32-16-8-4, "
                      "two-layer MLPs 512-256-128-64-32, leaky ReLU 0.1, Bernoulli x, BN on all layers incl. mu and "
                      "sigma, warm-up 0 -> 1 over 200 epochs, Adam 1e-3, batch 256, 2000 epochs, 1 MC and 1 IW sample"}


@register
class HVAE(HierarchicalVAE):
    """Hierarchical VAE with bottom-up inference q(z1|x) q(z2|z1)...q(zL|zL-1) (thesis 3.32-3.36)."""

    name: ClassVar[str] = "hvae"
    Config: ClassVar[type] = HVAEConfig
    recipes: ClassVar[dict[str, dict]] = {"mnist": thesis_mnist_recipe("the VAE+BN+WU baseline")}

    def __init__(self, config: HVAEConfig):
        super().__init__(config)
        c = config
        sizes, widths = c.sizes, c.widths
        # q(z_1|x) through the 512-unit MLP, q(z_i|z_{i-1}) through the MLP of stage i, (3.36)
        ins = (c.x_dim, *sizes[:-1])
        self.q_z = nn.ModuleList(gaussian_conditional(c, ins[i], widths[i], sizes[i]) for i in range(len(sizes)))

    def analytic_layers(self) -> set[int]:
        """Only the top layer: ``KL(q(z_L|z_{L-1}) || N(0, I))`` given the sampled ``z_{L-1}``. Lower layers are
        Monte Carlo, because the parent ``z_{i+1}`` of ``p(z_i|z_{i+1})`` is drawn from ``z_i`` itself."""
        return {self.n_layers - 1}

    def infer(self, x, sample_shape=(), noise=None):
        """Bottom-up (3.35): ``z_1 ~ q(z_1|x)``, then ``z_i ~ q(z_i|z_{i-1})``; afterwards the priors
        ``p(z_i|z_{i+1})`` at the samples."""
        q, z = [], []
        h = x
        for i, q_net in enumerate(self.q_z):
            q_i = q_net(h)
            h = draw(q_i, None if noise is None else noise[i], sample_shape if i == 0 else ())
            q.append(q_i)
            z.append(h)
        p = [p_net(z[i + 1]) for i, p_net in enumerate(self.p_z)] + [self.prior_top(x)]
        return q, p, z


__all__ = ["HVAE", "HVAEConfig", "HierarchicalVAE", "NormalisedGaussianHead", "Pass", "draw", "gaussian_conditional",
           "gaussian_head", "normal"]
