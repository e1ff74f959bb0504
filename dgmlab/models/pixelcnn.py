"""The PixelCNN head of FAME (Maaløe and Winther 2018, thesis Appendix E, caption of Table 1; van den Oord et al. 2016,
"Pixel recurrent neural networks", section 3.5 and Table 1).

An autoregressive Bernoulli model of a binary image ``x`` with pixels ``x_1 .. x_D`` in raster order (row by row, left
to right), conditioned on a feature map ``d`` that the decoder of FAME computes from ``z_1``::

    p(x | d) = prod_j B(x_j | sigmoid(f_j(x_<j, d)))

Causality comes from *masked* convolutions: a kernel whose weights are zeroed at every position that lies at or after
the centre in raster order (mask A: the centre too; mask B: the centre kept). Stacking one mask-A layer on the image
and any number of mask-B layers on the hidden maps keeps the output at pixel ``j`` a function of ``x_<j`` only: mask A
removes ``x_j`` itself, and a mask-B layer at pixel ``j`` only reads hidden units at ``j`` and before, which by
induction have seen only ``x_<j``. With one image channel there are no colour groups, so mask B needs no channel
structure.

The head (the paper's caption): a 7x7 mask-A convolution with 64 channels, four residual blocks of 3x3 mask-B
convolutions with 64 channels, and three mask-B layers, the last the output layer with a sigmoid (here: the Bernoulli
logits). Choices the paper leaves open (reproduction notes rn-fame-library):

* the image and the decoder output are concatenated along the channel axis; the first layer is *one* convolution over
  the concatenation whose mask is A on the image channel and open on the decoder channels. The decoder output depends
  on ``z`` only, never on a pixel value, so it may be read everywhere, and the model conditions on all of it;
* a residual block is ``ReLU -> 3x3 mask-B conv -> ReLU -> 3x3 mask-B conv``, added to its input;
* the three final layers are ``ReLU -> 1x1 conv`` (64, 64 and 1 channels); a 1x1 kernel has nothing to mask besides
  its centre, which mask B keeps (van den Oord et al. Table 1 uses the same 1x1 mask-B output layers);
* no batch normalisation inside the head: statistics over a batch of images would let pixel ``j`` see, through the
  batch mean, the pixels after it.

"No concatenation" (``autoregressive=False``): the image is not an input; the same stack without masks maps the
decoder output to the logits, so ``p(x | d) = prod_j B(x_j | sigmoid(f_j(d)))`` factorises and a sample takes one pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(kernel: int, kind: str) -> torch.Tensor:
    """The ``(kernel, kernel)`` mask of a masked convolution: 1 on every kernel position strictly before the centre in
    raster order (the rows above, and the positions left of the centre in its row), plus the centre for ``kind="B"``.
    """
    if kind not in ("A", "B"):
        raise ValueError(f"a causal mask is of kind 'A' (centre hidden) or 'B' (centre kept), got {kind!r}")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"masked convolutions need an odd kernel size, got {kernel}")
    c = kernel // 2
    mask = torch.zeros(kernel, kernel)
    mask[:c] = 1.0
    mask[c, :c] = 1.0
    if kind == "B":
        mask[c, c] = 1.0
    return mask


class MaskedConv2d(nn.Conv2d):
    """A stride-1, 'same'-padded convolution whose kernel is multiplied by a fixed mask at every call.

    ``masks`` gives one mask kind per *input* channel group: e.g. ``[("A", 1), (None, 32)]`` hides the centre and
    the future of input channel 0 (the image) and leaves the next 32 channels (the decoder output) unmasked. A
    single kind ``"A"`` / ``"B"`` / ``None`` applies to every input channel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, masks="B", bias: bool = True):
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2, bias=bias)
        groups = [(masks, in_channels)] if masks is None or isinstance(masks, str) else list(masks)
        if sum(n for _, n in groups) != in_channels:
            raise ValueError(f"the mask groups {groups} do not cover the {in_channels} input channels")
        full = torch.ones(out_channels, in_channels, kernel, kernel)
        start = 0
        for kind, n in groups:
            if kind is not None:
                full[:, start:start + n] = causal_mask(kernel, kind)
            start += n
        self.register_buffer("mask", full, persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)


class ResidualBlock(nn.Module):
    """``h + conv_B(ReLU(conv_B(ReLU(h))))`` with two 3x3 mask-B convolutions (or unmasked ones)."""

    def __init__(self, channels: int, kernel: int = 3, masked: bool = True):
        super().__init__()
        kind = "B" if masked else None
        self.conv1 = MaskedConv2d(channels, channels, kernel, kind)
        self.conv2 = MaskedConv2d(channels, channels, kernel, kind)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(F.relu(self.conv1(F.relu(h))))


class PixelCNN(nn.Module):
    """Bernoulli logits ``f_j`` of every pixel from the image ``x`` (N, 1, H, W) and the decoder output ``d``
    (N, cond_channels, H, W); see the module text.

    Args:
        cond_channels: channels of the decoder output ``d``.
        channels: width of every hidden layer (64 in the paper).
        residual_blocks: number of residual blocks (4 in the paper).
        first_kernel, kernel: kernel sizes of the first layer (7) and of the residual blocks (3).
        out_layers: the final non-residual layers, the last of which gives the logits (3 in the paper).
        autoregressive: ``True``: FAME, the image enters through the mask-A first layer; ``False``: FAME No
            Concatenation, the image is not an input and no layer is masked.
    """

    def __init__(self, cond_channels: int, channels: int = 64, residual_blocks: int = 4, first_kernel: int = 7,
                 kernel: int = 3, out_layers: int = 3, autoregressive: bool = True):
        super().__init__()
        if out_layers < 1:
            raise ValueError(f"the head needs at least its output layer, got out_layers={out_layers}")
        self.autoregressive = autoregressive
        self.image_channels = 1 if autoregressive else 0
        groups = [("A", 1), (None, cond_channels)] if autoregressive else None
        self.first = MaskedConv2d(self.image_channels + cond_channels, channels, first_kernel, groups)
        kind = "B" if autoregressive else None
        self.blocks = nn.Sequential(*(ResidualBlock(channels, kernel, autoregressive) for _ in range(residual_blocks)))
        widths = [channels] * (out_layers - 1) + [1]
        self.out = nn.ModuleList(MaskedConv2d(w_in, w_out, 1, kind)
                                 for w_in, w_out in zip([channels] + widths[:-1], widths))
        # rows above a pixel that its logit can depend on: the half-heights of all kernels stacked
        self.receptive_rows = first_kernel // 2 + 2 * residual_blocks * (kernel // 2)

    def condition(self, d: torch.Tensor) -> torch.Tensor:
        """The first layer's contribution from the decoder output (with the bias): computed once per ``d``."""
        w = self.first.masked_weight()[:, self.image_channels:]
        return F.conv2d(d, w, self.first.bias, padding=self.first.padding)

    def from_first(self, h: torch.Tensor) -> torch.Tensor:
        """Everything after the first layer: residual blocks, then the output layers; logits (N, 1, H, W)."""
        h = self.blocks(h)
        for layer in self.out:
            h = layer(F.relu(h))
        return h

    def image_term(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer's mask-A contribution from the image (no bias)."""
        w = self.first.masked_weight()[:, :self.image_channels]
        return F.conv2d(x, w, None, padding=self.first.padding)

    def forward(self, x: torch.Tensor | None, d: torch.Tensor) -> torch.Tensor:
        """Logits ``f_j(x_<j, d)`` (FAME) or ``f_j(d)`` (no concatenation, ``x`` ignored), shape (N, 1, H, W).

        Equal to one masked convolution of the channel concatenation ``[x, d]`` followed by the rest of the stack.
        """
        h = self.condition(d)
        if self.autoregressive:
            if x is None:
                raise ValueError("the autoregressive head reads the image: pass x (use generate() to sample one)")
            h = h + self.image_term(x)
        return self.from_first(h)

    @torch.no_grad()
    def generate(self, d: torch.Tensor, uniforms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw images ``x ~ p(x | d)``, all images of the batch at once; returns ``(x, probs)``, both (N, 1, H, W),
        where ``probs[j] = p(x_j = 1 | x_<j, d)`` at the drawn ``x_<j``.

        Pixel ``j`` is set to ``1`` where ``uniforms[j] < probs[j]`` (fresh uniforms unless given, so a fixed
        ``uniforms`` makes the draw deterministic). Autoregressive: one pass of the head per pixel, in raster order;
        each pass runs only on the rows the current pixel can depend on (``receptive_rows`` above it, none below),
        and the decoder's contribution to the first layer is computed once. No concatenation: one pass.
        """
        n, _, height, width = d.shape
        if uniforms is None:
            uniforms = torch.rand(n, 1, height, width, dtype=d.dtype, device=d.device)
        if uniforms.shape != (n, 1, height, width):
            raise ValueError(f"uniforms must have shape {(n, 1, height, width)}, got {tuple(uniforms.shape)}")
        if not self.autoregressive:
            probs = torch.sigmoid(self.forward(None, d))
            return (uniforms < probs).to(d.dtype), probs
        cond = self.condition(d)
        x = torch.zeros(n, 1, height, width, dtype=d.dtype, device=d.device)
        probs = torch.zeros_like(x)
        for r in range(height):
            top = max(0, r - self.receptive_rows)
            for c in range(width):
                # rows top..r: masked kernels never read below a pixel; the rows above ``top`` are out of reach
                h = cond[:, :, top:r + 1] + self.image_term(x[:, :, top:r + 1])
                p = torch.sigmoid(self.from_first(h)[:, 0, r - top, c])
                probs[:, 0, r, c] = p
                x[:, 0, r, c] = (uniforms[:, 0, r, c] < p).to(d.dtype)
        return x, probs


__all__ = ["MaskedConv2d", "PixelCNN", "ResidualBlock", "causal_mask"]
