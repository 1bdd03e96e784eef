"""Building blocks of the encoder and the decoder (DCVC-RT's shape, Jia et al. CVPR 2025): few, large
operations on one stride-8 latent. A block is a depthwise-separable residual (1x1 -> depthwise k x k ->
1x1) and a gated feed-forward (1x1 to two halves, one gates the other, 1x1 back), both residual, no
normalisation: every operator is a convolution, a LeakyReLU, a product or a sum (cheap, exportable,
fusable). Plus the decoder's masked token input and the padding of frames to the stride.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SLOPE = 0.1  # LeakyReLU negative slope


def _shrink(conv: nn.Conv2d, scale: float) -> None:
    """Scale a residual branch's last convolution down at init, so a deep stack starts near identity
    (free at inference, unlike a layer-scale multiply)."""
    with torch.no_grad():
        conv.weight.mul_(scale)
        if conv.bias is not None:
            conv.bias.zero_()


class DepthConv(nn.Module):
    """1x1 -> LeakyReLU -> depthwise k x k -> 1x1, residual."""

    def __init__(self, channels: int, kernel: int = 3, init_scale: float = 0.1) -> None:
        super().__init__()
        self.pw1 = nn.Conv2d(channels, channels, 1)
        self.dw = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.pw2 = nn.Conv2d(channels, channels, 1)
        _shrink(self.pw2, init_scale)

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.pw2(self.dw(F.leaky_relu(self.pw1(x), SLOPE)))
        return x + y


class GatedFFN(nn.Module):
    """1x1 to 2 x (ratio * C), one half gates the other (x1 * LeakyReLU(x2)), 1x1 back; residual."""

    def __init__(self, channels: int, ratio: int = 2, init_scale: float = 0.1) -> None:
        super().__init__()
        hidden = channels * ratio
        self.inp = nn.Conv2d(channels, 2 * hidden, 1)
        self.out = nn.Conv2d(hidden, channels, 1)
        _shrink(self.out, init_scale)

    def forward(self, x: Tensor) -> Tensor:
        a, g = self.inp(x).chunk(2, dim=1)
        y: Tensor = self.out(a * F.leaky_relu(g, SLOPE))
        return x + y


class DepthConvBlock(nn.Module):
    """DCVC-RT's DepthConvBlock: a DepthConv then a GatedFFN at one width."""

    def __init__(self, channels: int, kernel: int = 3, ratio: int = 2) -> None:
        super().__init__()
        self.conv = DepthConv(channels, kernel)
        self.ffn = GatedFFN(channels, ratio)

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.ffn(self.conv(x))
        return y


def masked_embedding(embedded: Tensor, mask_embedding: Tensor, mask: Tensor) -> Tensor:
    """The decoder's token input: the embedded codes [B, C, h, w] where the keep-mask [B, h*w] is True, a
    learned "masked" embedding [C] elsewhere (never a zero code, which is a valid FSQ code)."""
    b, _, h, w = embedded.shape
    keep = mask.view(b, 1, h, w).to(embedded.dtype)
    return embedded * keep + mask_embedding.view(1, -1, 1, 1) * (1 - keep)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad the bottom/right of [B, C, H, W] so H and W are multiples of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")
