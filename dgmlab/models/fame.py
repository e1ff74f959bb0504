"""The feature map variational auto-encoder, FAME (thesis section 5.2, Fig. 5.4; Maaløe and Winther 2018, thesis
Appendix E, eqs. 1-2 and 6-9, Table 1).

FAME keeps the ladder VAE's probabilistic model (:mod:`dgmlab.models.lvae`) and changes its networks: the deterministic
layers become convolutions on feature maps, and ``p(x|z_1)`` becomes a PixelCNN (:mod:`dgmlab.models.pixelcnn`).

Generative model (E eqs. 1-2), ``L = 5`` dense latent layers of 64, 32, 16, 8 and 4 units::

    p(x, z) = p(x|z_1) p(z_L) prod_{i=1}^{L-1} p(z_i|z_{i+1}),   p(z_L) = N(0, I),
    p(z_i|z_{i+1}) = N(mu_theta,i(z_{i+1}), sigma^2_theta,i(z_{i+1})),
    p(x|z_1) = prod_j B(x_j | f_j(x_<j, d(z_1)))        (FAME: the PixelCNN reads the image and the decoder output)
    p(x|z_1) = prod_j B(x_j | f_j(d(z_1)))              (FAME No Concatenation: it reads the decoder output only)

Inference model, top-down as in the ladder VAE (E eqs. 7-9, thesis 5.1-5.4)::

    q(z|x) = q(z_L|x) prod_{i=1}^{L-1} q(z_i|z_{i+1}, x),
    q(z_i|z_{i+1}, x) = N(z_i; mu_q, sigma^2_q):  1/sigma^2_q = 1/sigma^2_phi,i + 1/sigma^2_theta,i,
                                                 mu_q = (mu_phi,i/sigma^2_phi,i + mu_theta,i/sigma^2_theta,i) sigma^2_q,

with the bottom-up terms ``(mu_phi,i, sigma_phi,i)(x)`` and the generative ``(mu_theta,i, sigma_theta,i)(z_{i+1})``
at the sampled ``z_{i+1}`` (:func:`dgmlab.models.lvae.precision_weighted_merge`); ``q(z_L|x) = N(mu_phi,L,
sigma^2_phi,L)``.

Networks (E section 2.2 and Table 1). Every Gaussian is read from a stack of feature maps ``h_{M,i}`` through one dense
layer: ``mu = Linear(DENSE(h_{M,i}))``, ``sigma = softplus(Linear(DENSE(h_{M,i})))``. The bottom-up blocks for a
28x28 image ('same' padding, so a stride-2 layer maps ``n`` pixels to ``ceil(n/2)``)::

    h_1: conv 5x5, 32 ch, stride 2; conv 3x3, 64 ch     1x28x28 -> 64x14x14   -> DENSE 64 -> z_1 (64)
    h_2: conv 3x3, 64 ch, stride 2; conv 3x3, 64 ch    64x14x14 -> 64x7x7     -> DENSE 32 -> z_2 (32)
    h_3: the same                                       64x7x7   -> 64x4x4     -> DENSE 16 -> z_3 (16)
    h_4: the same                                       64x4x4   -> 64x2x2     -> DENSE 8  -> z_4 (8)
    h_5: the same                                       64x2x2   -> 64x1x1     -> DENSE 4  -> z_5 (4)

The generative blocks mirror them with transposed convolutions: ``p(z_i|z_{i+1})`` maps ``z_{i+1}`` by a dense layer
onto the feature map of block ``i+1``, a 3x3 transposed convolution with stride 2 back to the map of block ``i``, a
3x3 convolution, then ``DENSE`` and the two heads. The decoder of ``x`` maps ``z_1`` onto the 64x14x14 map, a 5x5
transposed convolution with stride 2 (32 ch) gives 28x28 and a 3x3 convolution gives the 32-channel "reconstruction
data" ``d(z_1)`` that the PixelCNN head reads. Odd sizes are handled explicitly: a stride-2 transposed convolution
gives ``2 n - 1`` rows from ``n``, which is right where the bottom-up block rounded an odd size up; where it halved an
even size, one row and column are added at the bottom and right (``output_padding``). So 28 -> 14 -> 7 -> 4 -> 2 -> 1
goes back as 1 -> 2 -> 4 -> 7 -> 14 -> 28, with the extra row everywhere except 4 -> 7. Batch normalisation and ReLU
follow every hidden layer (E section 3), never the Gaussian heads or the PixelCNN (reproduction notes
rn-fame-library).

Bound: the ladder VAE's, ``E_q[log p(x|z_1)] - T sum_i KL_i`` with every ``KL_i`` analytic given the sampled parent;
the warm-up temperature ``T`` rises from 0.3 to 1 over the first 200 epochs (E section 3). Importance-weighted
bounds and ``L_5000`` use Monte Carlo log-density ratios, as in :class:`dgmlab.models.hvae.HierarchicalVAE`, whose
bounds, per-layer KL and evaluation FAME inherits.

Images: ``x`` is passed flat, ``(batch, H*W)`` in raster order, like every model of the package; FAME reshapes it to
``(batch, 1, H, W)``. MNIST must be loaded untrimmed (the 444-pixel trimmed vectors of chapter 4 are not images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal

from dgmlab import nn as dnn
from dgmlab import objectives
from dgmlab.models import register
from dgmlab.models.base import Model, Output
from dgmlab.models.hvae import HierarchicalVAE, Pass
from dgmlab.models.lvae import top_down
from dgmlab.models.pixelcnn import PixelCNN
from dgmlab.models.vae import evaluation

SMALL_CPU = {"channels": 16}
"""The small option set for CPU runs: a quarter of the paper's channels in every convolution and in the PixelCNN
(``--set channels=16``); latent sizes, depth and training scheme unchanged."""


# --------------------------------------------------------------------------------------------------- configuration
@dataclass
class FAMEConfig:
    """Options of FAME (E section 3 and Table 1). ``x_dim`` comes from the data via ``make_config``.

    Attributes:
        x_dim: number of pixels, ``H * W``.
        image_shape: ``(H, W)``; ``None`` reads a square image from ``x_dim`` (784 -> 28x28).
        z_dims: units of the dense latent layers, bottom (``z_1``) to top: 64-32-16-8-4. One convolutional block
            per layer; each halves the feature map (rounding up).
        channels: channels of the convolutions of E-Tab 1 (64) and of the PixelCNN layers; the first convolution
            and the decoder output have ``channels // 2`` (32). ``SMALL_CPU`` sets 16.
        first_kernel: kernel of the first bottom-up convolution and of the last transposed convolution (5).
        residual_blocks: residual blocks of the PixelCNN head (4).
        concat: ``True``: FAME, the PixelCNN reads the image concatenated with the decoder output; ``False``: FAME
            No Concatenation, it reads the decoder output only.
        warmup_epochs: the KL temperature rises linearly over this many epochs (200); 0 = off.
        warmup_start: temperature in the first epoch (0.3).
        iw: importance samples of the training bound (1 in the paper: the ELBO).
        eval_iw: importance samples of ``test_iw_bound`` in ``evaluate`` (0 or 1 = skip, the default: every
            importance sample costs one more pass of the PixelCNN over the test set, every epoch);
            ``log_likelihood`` (the CLI's ``eval``) gives ``L_5000``.
        likelihood: ``bernoulli`` only (binary images).
    """

    x_dim: int
    image_shape: tuple[int, int] | None = None
    z_dims: tuple[int, ...] = (64, 32, 16, 8, 4)
    channels: int = 64
    first_kernel: int = 5
    residual_blocks: int = 4
    concat: bool = True
    warmup_epochs: int = 200
    warmup_start: float = 0.3
    iw: int = 1
    eval_iw: int = 0
    likelihood: str = "bernoulli"

    def __post_init__(self):
        name = type(self).__name__
        for field in ("x_dim", "channels", "iw"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{field} must be a positive integer, got {value!r}")
        if self.channels < 2:
            raise ValueError(f"{name}.channels must be at least 2 (the first convolution has channels // 2), "
                             f"got {self.channels}")
        if isinstance(self.z_dims, int):
            self.z_dims = (self.z_dims,)
        self.z_dims = tuple(self.z_dims)  # lists come back from JSON checkpoints
        if not self.z_dims or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.z_dims):
            raise ValueError(f"{name}.z_dims must hold positive integers, one per latent layer, got {self.z_dims}")
        if self.image_shape is None:
            side = math.isqrt(self.x_dim)
            if side * side != self.x_dim:
                raise ValueError(
                    f"FAME models whole images, but x_dim={self.x_dim} pixels do not form a square image. For MNIST "
                    f"load all 784 pixels: load_data('mnist') without trim=True (on the command line: drop --trim); "
                    f"for a non-square image give image_shape=(height, width)")
            self.image_shape = (side, side)
        self.image_shape = tuple(self.image_shape)
        if (len(self.image_shape) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                                              for s in self.image_shape)
                or self.image_shape[0] * self.image_shape[1] != self.x_dim):
            raise ValueError(f"{name}.image_shape must be (height, width) with height * width = x_dim = {self.x_dim}, "
                             f"got {self.image_shape}")
        if self.first_kernel < 1 or self.first_kernel % 2 == 0:
            raise ValueError(f"{name}.first_kernel must be an odd positive integer, got {self.first_kernel}")
        if isinstance(self.residual_blocks, bool) or not isinstance(self.residual_blocks, int) \
                or self.residual_blocks < 0:
            raise ValueError(f"{name}.residual_blocks must be an integer >= 0, got {self.residual_blocks!r}")
        if not isinstance(self.warmup_epochs, (int, float)) or self.warmup_epochs < 0:
            raise ValueError(f"{name}.warmup_epochs must be >= 0 (0 switches warm-up off), got {self.warmup_epochs!r}")
        if not isinstance(self.warmup_start, (int, float)) or not 0.0 <= self.warmup_start <= 1.0:
            raise ValueError(f"{name}.warmup_start must lie in [0, 1], got {self.warmup_start!r}")
        if isinstance(self.eval_iw, bool) or not isinstance(self.eval_iw, int) or self.eval_iw < 0:
            raise ValueError(f"{name}.eval_iw must be an integer >= 0 (0 or 1 skips test_iw_bound), "
                             f"got {self.eval_iw!r}")
        if self.likelihood != "bernoulli":
            raise ValueError(f"FAME models binary images with a Bernoulli PixelCNN; likelihood={self.likelihood!r} "
                             f"is not supported")

    @property
    def sizes(self) -> tuple[int, ...]:
        """Latent sizes, bottom to top (the name :class:`HierarchicalVAE` reads)."""
        return self.z_dims

    @property
    def map_shapes(self) -> list[tuple[int, int]]:
        """``(height, width)`` of the feature maps of the bottom-up blocks ``h_1 .. h_L``: each stride-2 layer with
        'same' padding maps ``n`` to ``ceil(n / 2)`` (28 -> 14 -> 7 -> 4 -> 2 -> 1)."""
        shapes, (h, w) = [], self.image_shape
        for _ in self.z_dims:
            h, w = -(-h // 2), -(-w // 2)
            shapes.append((h, w))
        return shapes


@dataclass
class FAMENoConcatConfig(FAMEConfig):
    """The options of :class:`FAMEConfig` with ``concat=False``: the PixelCNN head does not read the image."""

    concat: bool = False


# --------------------------------------------------------------------------------------------------- building blocks
def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    """A 'same'-padded convolution followed by batch normalisation and ReLU."""
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2), nn.BatchNorm2d(c_out), nn.ReLU()]


def upsample_bn_relu(c_in: int, c_out: int, kernel: int, size_in: tuple[int, int],
                     size_out: tuple[int, int]) -> list[nn.Module]:
    """A stride-2 transposed convolution from a ``size_in`` map to a ``size_out`` map, then BN and ReLU.

    With padding ``kernel // 2`` it gives ``2 n - 1`` rows from ``n``. That is the right size where the bottom-up
    block rounded an odd ``2 n - 1`` up to ``n``; where it halved an even ``2 n`` exactly, ``output_padding`` adds the
    missing row (column) at the bottom (right). Any other pair of sizes is refused, so a mismatch cannot pass silently.
    """
    extra = tuple(o - (2 * i - 1) for i, o in zip(size_in, size_out))
    if any(e not in (0, 1) for e in extra):
        raise ValueError(f"a stride-2 transposed convolution cannot map {size_in} to {size_out}")
    return [nn.ConvTranspose2d(c_in, c_out, kernel, 2, padding=kernel // 2, output_padding=extra),
            nn.BatchNorm2d(c_out), nn.ReLU()]


class DenseGaussian(nn.Module):
    """``mu = Linear(DENSE(h))``, ``sigma = softplus(Linear(DENSE(h)))`` from a feature map ``h`` (E section 2.2):
    ``DENSE`` is a dense layer of ``z_dim`` units on the flattened map, with BN and ReLU."""

    def __init__(self, in_features: int, z_dim: int):
        super().__init__()
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(in_features, z_dim), nn.BatchNorm1d(z_dim), nn.ReLU())
        self.head = dnn.GaussianHead(z_dim, z_dim, "softplus_std")

    def params(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, sigma)``, each (N, z_dim)."""
        g = self.head(self.dense(h)).base_dist
        return g.loc, g.scale


class Reshape(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(len(t), *self.shape)


class TopDownBlock(nn.Module):
    """``p(z_i|z_{i+1})``: ``z_{i+1}`` -> dense onto the ``c x size_in`` map of block ``i+1`` -> 3x3 transposed
    convolution, stride 2, onto the map of block ``i`` -> 3x3 convolution -> ``DENSE`` -> ``(mu, sigma)``."""

    def __init__(self, z_in: int, z_out: int, channels: int, size_in: tuple[int, int], size_out: tuple[int, int]):
        super().__init__()
        self.maps = nn.Sequential(nn.Linear(z_in, channels * size_in[0] * size_in[1]),
                                  nn.BatchNorm1d(channels * size_in[0] * size_in[1]), nn.ReLU(),
                                  Reshape(channels, *size_in),
                                  *upsample_bn_relu(channels, channels, 3, size_in, size_out),
                                  *conv_bn_relu(channels, channels, 3))
        self.gaussian = DenseGaussian(channels * size_out[0] * size_out[1], z_out)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gaussian.params(self.maps(z))


def rowwise(fn: Callable, *tensors: torch.Tensor, rows: int | None = None):
    """``fn`` applied to ``tensors`` (all with the same first axis), in slices of at most ``rows`` rows whose outputs
    are concatenated (``rows=None``: one call). ``fn`` returns a tensor or a tuple of tensors."""
    n = len(tensors[0])
    if rows is None or n <= rows:
        return fn(*tensors)
    parts = [fn(*(t[i:i + rows] for t in tensors)) for i in range(0, n, rows)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts))
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------------- the model
@register
class FAME(HierarchicalVAE):
    """Feature map VAE (thesis 5.2): a convolutional ladder VAE with a PixelCNN head on image and decoder output."""

    name: ClassVar[str] = "fame"
    Config: ClassVar[type] = FAMEConfig
    trim_mnist: ClassVar[bool] = False
    train_defaults: ClassVar[dict] = {"lr": 3e-4, "batch_size": 128}
    eval_rows: ClassVar[int | None] = None
    """Images per forward pass in eval mode, which bounds the memory of ``log_likelihood`` and ``evaluate``;
    ``None``: 2000 on a GPU, 100 on a CPU (where slices of a few tens of MB are also faster: the allocator reuses
    them instead of mapping fresh memory for every layer)."""
    recipes: ClassVar[dict[str, dict]] = {"mnist": {
        "model": {"channels": 64, "warmup_epochs": 200, "warmup_start": 0.3, "iw": 1},
        "train": {"epochs": 1000},
        "source": "thesis 5.2 and Appendix E section 3 and Table 1: dynamically binarised MNIST, all 784 pixels "
                  "(untrimmed), 5 dense latent layers 64-32-16-8-4, convolutional blocks of Table 1 with BN + ReLU, "
                  "PixelCNN head (7x7 mask A, 4 residual 3x3 mask-B blocks, 3 mask-B output layers), Adam 3e-4 "
                  "constant, 1 importance sample, KL temperature 0.3 -> 1 over the first 200 epochs; batch 128 and "
                  "1000 epochs are our choice (the paper gives neither). Small CPU variant: add --set channels=16 "
                  "(a quarter of the channels everywhere; same latents and scheme)"}}

    def __init__(self, config: FAMEConfig):
        # The MLP networks that HierarchicalVAE builds are replaced by convolutional blocks, so only the base model's
        # constructor runs; the bounds, KL bookkeeping and evaluation of HierarchicalVAE are used unchanged.
        Model.__init__(self, config)
        c = config
        k, k_half = c.channels, c.channels // 2
        maps, sizes = c.map_shapes, c.sizes
        # bottom-up deterministic blocks h_i (E-Tab 1) and the Gaussian likelihood terms (mu_phi,i, sigma_phi,i)
        self.up = nn.ModuleList(
            [nn.Sequential(*conv_bn_relu(1, k_half, c.first_kernel, 2), *conv_bn_relu(k_half, k, 3))]
            + [nn.Sequential(*conv_bn_relu(k, k, 3, 2), *conv_bn_relu(k, k, 3)) for _ in sizes[1:]])
        self.q_hat = nn.ModuleList(DenseGaussian(k * h * w, d) for (h, w), d in zip(maps, sizes))
        # generative blocks p(z_i|z_{i+1}), i = 1..L-1 (index i-1), mirroring the bottom-up blocks
        self.p_z = nn.ModuleList(TopDownBlock(sizes[i + 1], sizes[i], k, maps[i + 1], maps[i])
                                 for i in range(len(sizes) - 1))
        # decoder d(z_1): dense onto the h_1 map, 5x5 transposed conv (stride 2) back to the image, 3x3 conv
        h1 = maps[0]
        self.decoder = nn.Sequential(nn.Linear(sizes[0], k * h1[0] * h1[1]), nn.BatchNorm1d(k * h1[0] * h1[1]),
                                     nn.ReLU(), Reshape(k, *h1),
                                     *upsample_bn_relu(k, k_half, c.first_kernel, h1, c.image_shape),
                                     *conv_bn_relu(k_half, k_half, 3))
        self.pixelcnn = PixelCNN(k_half, k, c.residual_blocks, autoregressive=c.concat)

    # ---------------------------------------------------------------------------------------------------- shapes
    @property
    def image_shape(self) -> tuple[int, int]:
        return self.config.image_shape

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """Flat images ``(..., H*W)`` -> ``(N, 1, H, W)`` with the leading axes folded into ``N``."""
        return x.reshape(-1, 1, *self.image_shape)

    def _rows(self) -> int | None:
        # Eval mode: batch norm uses its running averages, so rows are independent and can be processed in slices.
        if self.training:
            return None
        if self.eval_rows is not None:
            return self.eval_rows
        return 2000 if self.device.type == "cuda" else 100

    def _flat(self, net: Callable, t: torch.Tensor):
        """``net`` on ``t`` with its leading (sample) axes folded into the batch (batch norm shares the statistics
        across them), in slices of ``eval_rows`` in eval mode; outputs get the leading axes back."""
        lead = t.shape[:-1]
        out = rowwise(net, t.reshape(-1, t.shape[-1]), rows=self._rows())
        if isinstance(out, tuple):
            return tuple(o.reshape(*lead, *o.shape[1:]) for o in out)
        return out.reshape(*lead, *out.shape[1:])

    # ---------------------------------------------------------------------------------------------------- checks
    def check_observed(self, x: torch.Tensor) -> None:
        """A clear error for anything but a batch of flattened binary images of ``image_shape``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not torch.is_floating_point(x):
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}; convert with x.float()")
        (height, width), d = self.image_shape, self.config.x_dim
        if x.dim() != 2 or x.shape[1] != d:
            raise ValueError(
                f"FAME models whole {height}x{width} images: x must have shape (batch, {d}), the images flattened in "
                f"raster order, got {tuple(x.shape)}. Flatten images with x.view(len(x), -1); for MNIST load all 784 "
                f"pixels (load_data('mnist') without trim=True; on the command line drop --trim)")
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("the Bernoulli likelihood scores binary images, but x holds values other than 0 and 1; "
                             "binarise it first (dgmlab.data.mnist.binarize)")

    # ---------------------------------------------------------------------------------------------------- the model
    def analytic_layers(self) -> set[int]:
        """Every layer: ``q(z_i|z_{i+1}, x)`` and ``p(z_i|z_{i+1})`` are Gaussians at the same sampled parent."""
        return set(range(self.n_layers))

    def bottom_up(self, x: torch.Tensor) -> list[Independent]:
        """The Gaussian terms ``N(mu_phi,i(x), sigma^2_phi,i(x))`` of every layer, from the feature maps
        ``h_1 .. h_L`` of the flat images ``x`` (batch, H*W)."""

        def run(xb):
            out, h = [], self.to_images(xb)
            for block, head in zip(self.up, self.q_hat):
                h = block(h)
                out.extend(head.params(h))
            return tuple(out)

        params = rowwise(run, x, rows=self._rows())
        return [Independent(Normal(params[2 * i], params[2 * i + 1]), 1) for i in range(self.n_layers)]

    def prior(self, i: int, z_parent: torch.Tensor) -> Independent:
        """``p(z_i|z_{i+1})`` (``i`` counts from 0 for ``z_1``) at ``z_parent`` of shape (..., d_{i+1})."""
        mu, sigma = self._flat(self.p_z[i], z_parent)
        return Independent(Normal(mu, sigma), 1)

    def infer(self, x, sample_shape=(), noise=None):
        """Bottom-up convolutional pass, then the ladder's top-down pass (E eqs. 7-9): ``z_L ~ N(mu_phi,L,
        sigma^2_phi,L)``; for ``i = L-1 .. 1`` the prior ``p(z_i|z_{i+1})`` at the sampled ``z_{i+1}``,
        precision-weighted with the bottom-up term."""
        return top_down(self.bottom_up(x), self.prior_top(x), self.prior, sample_shape, noise)

    def decoder_output(self, z1: torch.Tensor) -> torch.Tensor:
        """The "reconstruction data" ``d(z_1)``: (N, channels // 2, H, W) for ``z_1`` of shape (..., d_1), leading
        axes folded into ``N``."""
        return self._flat(self.decoder, z1).reshape(-1, self.config.channels // 2, *self.image_shape)

    def logits(self, x: torch.Tensor | None, z1: torch.Tensor, mask: str | None = None) -> torch.Tensor:
        """Bernoulli logits ``f_j`` of every pixel, shape ``(*z1.shape[:-1], H*W)``: with the image ``x`` (its rows
        broadcast over the leading sample axes of ``z1``) and ``d(z_1)`` through the PixelCNN head.

        ``mask="latent"`` zeroes ``d(z_1)`` and ``mask="image"`` the image before the head (E-Fig. 3); the No
        Concatenation model ignores ``x``.
        """
        if mask not in (None, "latent", "image"):
            raise ValueError(f"mask must be None, 'latent' or 'image', got {mask!r}")
        lead = z1.shape[:-1]
        use_x = self.config.concat
        if use_x:
            if x is None:
                raise ValueError("FAME's PixelCNN reads the image: pass x (to draw new images use generate or sample)")
            x = x.expand(*lead, x.shape[-1]).reshape(-1, x.shape[-1])

        def run(zb, *xb):
            d = self.decoder_output(zb)
            if mask == "latent":
                d = torch.zeros_like(d)
            img = self.to_images(xb[0]) if use_x else None
            if use_x and mask == "image":
                img = torch.zeros_like(img)
            return self.pixelcnn(img, d).reshape(len(zb), -1)

        z_flat = z1.reshape(-1, z1.shape[-1])
        out = rowwise(run, z_flat, *([x] if use_x else []), rows=self._rows())
        return out.reshape(*lead, -1)

    def log_px(self, x: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """``log p(x|z_1) = sum_j log B(x_j | sigmoid(f_j))``, shape ``z1.shape[:-1]``."""
        logits = self.logits(x, z1)
        target = x.expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)

    def forward_pass(self, x, sample_shape=(), noise=None) -> Pass:
        """Inference pass and ``log p(x|z_1)``; ``noise`` (one ``eps`` per layer) fixes the draws."""
        self.check_observed(x)
        sample_shape = self._noise(noise, sample_shape, len(x))
        q, p, z = self.infer(x, sample_shape, noise)
        return Pass(q, p, z, self.log_px(x, z[0]))

    def decode(self, z1: torch.Tensor, x: torch.Tensor | None = None) -> Independent:
        """``p(x|z_1)`` as a factorised Bernoulli over the flat pixels. FAME needs the image ``x`` it scores (the
        head is autoregressive: the distribution of pixel ``j`` depends on ``x_<j``); No Concatenation does not."""
        return Independent(Bernoulli(logits=self.logits(x, z1)), 1)

    # ---------------------------------------------------------------------------------------------------- training
    def step(self, batch: dict[str, torch.Tensor], epoch: int) -> Output:
        """Loss ``-(bound)`` on one batch: ``E_q log p(x|z_1) - T sum_i KL_i`` with the temperature ``T`` from
        ``warmup_start`` to 1 over ``warmup_epochs`` (E section 3: 0.3 -> 1 over 200 epochs). With ``iw > 1`` the
        bound (3.31) with ``log w = log p(x|z_1) + T sum_i (log p(z_i|.) - log q(z_i|.))``. ``terms`` are the
        untempered pieces, averaged over the batch."""
        if "x" not in batch:
            raise KeyError("an unsupervised batch needs the key 'x' (build batches with "
                           "dgmlab.data.iterate_batches(data, 'unsupervised', ...))")
        x, c = batch["x"], self.config
        temp = objectives.kl_temperature(epoch, c.warmup_epochs, start=c.warmup_start)
        s = self.forward_pass(x, (c.iw,))  # shapes (iw, batch)
        layers = [u.sum(-1).mean(0) for u in self.unit_kl(s)]
        recon, kl = s.log_px.mean(0), sum(layers)
        terms = {"elbo": recon - kl, "recon": recon, "kl": kl, **{f"kl_layer{i + 1}": v for i, v in enumerate(layers)}}
        if c.iw == 1:
            bound = recon - temp * kl
        else:
            ratio = self.log_ratio(s)
            bound = objectives.iw_bound(s.log_px + temp * ratio, dim=0)
            terms["iw_bound"] = objectives.iw_bound(s.log_px + ratio, dim=0)
        terms = {k: v.mean().detach() for k, v in terms.items()}
        return Output(loss=-bound.mean(), terms=terms,
                      metrics={"temperature": temp, **terms})

    # ------------------------------------------------------------------------------------------------ using the model
    @torch.no_grad()
    def generate(self, z1: torch.Tensor, mean: bool = False, uniforms: torch.Tensor | None = None) -> torch.Tensor:
        """Images from a fixed ``z_1`` (n, d_1), all ``n`` at once: the decoder runs once, then FAME draws the pixels
        one at a time in raster order, the PixelCNN reading the pixels drawn so far (one pass per pixel); No
        Concatenation draws all pixels in one pass. Returns the binary images (n, H*W), or with ``mean=True`` the
        probabilities ``p(x_j = 1 | x_<j, z)`` along the drawn images. ``uniforms`` (n, H*W) fixes the draw."""
        if z1.dim() != 2 or z1.shape[1] != self.config.sizes[0]:
            raise ValueError(f"z1 must have shape (n, {self.config.sizes[0]}), got {tuple(z1.shape)}")
        n = len(z1)
        if uniforms is not None:
            uniforms = self.to_images(uniforms)
        with evaluation(self):
            d = self.decoder_output(z1)
            x, probs = self.pixelcnn.generate(d, uniforms)
        return (probs if mean else x).reshape(n, -1)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = False) -> torch.Tensor:
        """Ancestral samples: ``z_L ~ N(0, I)``, ``z_i ~ p(z_i|z_{i+1})``, then :meth:`generate` from ``z_1``;
        binary images (n, H*W), or with ``mean=True`` the pixel probabilities along them."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        like = next(self.parameters())
        with evaluation(self):
            z = dnn.standard_normal(self.config.sizes[-1], like, (n,)).sample()
            for i in reversed(range(self.n_layers - 1)):
                z = self.prior(i, z).sample()
            return self.generate(z, mean=mean)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True, mask: str | None = None) -> torch.Tensor:
        """One pass of the head at the posterior-mean ``z_1`` with the image itself as the autoregressive input (as
        in training): the probabilities ``p(x_j = 1 | x_<j, z_1)`` (or a draw from them), shape (batch, H*W).
        ``mask="latent"`` / ``"image"`` zeroes the decoder output / the image first (E-Fig. 3)."""
        z1 = self.posterior(x)["z1"]
        with evaluation(self):
            logits = self.logits(x, z1, mask=mask)
        probs = torch.sigmoid(logits)
        return probs if mean else torch.bernoulli(probs)


@register
class FAMENoConcat(FAME):
    """FAME No Concatenation: the PixelCNN head reads the decoder output only; one-pass generation (thesis 5.2)."""

    name: ClassVar[str] = "fame_noconcat"
    Config: ClassVar[type] = FAMENoConcatConfig
    recipes: ClassVar[dict[str, dict]] = {"mnist": {
        "model": {**FAME.recipes["mnist"]["model"], "concat": False},
        "train": dict(FAME.recipes["mnist"]["train"]),
        "source": "thesis 5.2 and Appendix E section 3: FAME's recipe with the image left out of the PixelCNN head "
                  "(the head is an unmasked CNN on the decoder output, p(x|z) factorises). Small CPU variant: add "
                  "--set channels=16"}}


__all__ = ["FAME", "FAMEConfig", "FAMENoConcat", "FAMENoConcatConfig", "SMALL_CPU", "DenseGaussian", "TopDownBlock",
           "rowwise"]
