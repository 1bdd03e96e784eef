"""Building blocks shared by the encoder and the decoder (all plain convolutions: cheap on a CPU,
exportable to ONNX, and independent of the frame size)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masked_embedding(embedded: Tensor, mask_embedding: Tensor, mask: Tensor) -> Tensor:
    """The decoder's token input: the embedded codes [B, C, h, w] where the keep-mask [B, h*w] is True, a
    learned "masked" embedding [C] elsewhere (never a zero code, which is a valid FSQ code). Both
    decoder architectures use it."""
    b, _, h, w = embedded.shape
    keep = mask.view(b, 1, h, w).to(embedded.dtype)
    return embedded * keep + mask_embedding.view(1, -1, 1, 1) * (1 - keep)


class LayerNorm2d(nn.Module):
    """LayerNorm over channels at every position of a [B, C, H, W] map.

    Written out by hand (not via permute + nn.LayerNorm) so the exported graph is plain arithmetic,
    and per-position so a crop in training behaves like the full frame in use (GroupNorm would not).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(dim=1, keepdim=True)
        var = (x - mu).pow(2).mean(dim=1, keepdim=True)
        x = (x - mu) * torch.rsqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ConvNeXtBlock(nn.Module):
    """Depthwise k x k conv -> LayerNorm -> pointwise MLP, residual with a learned layer scale
    (ConvNeXt, Liu et al. 2022): a large receptive field at stride 8 for few FLOPs."""

    def __init__(self, channels: int, kernel: int, mlp_ratio: int, layer_scale: float = 0.1) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.norm = LayerNorm2d(channels)
        self.pw1 = nn.Conv2d(channels, channels * mlp_ratio, 1)
        self.pw2 = nn.Conv2d(channels * mlp_ratio, channels, 1)
        self.gamma = nn.Parameter(torch.full((channels,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.pw2(F.gelu(self.pw1(self.norm(self.dw(x)))))
        return x + y * self.gamma.view(1, -1, 1, 1)


class UpStage(nn.Module):
    """x2 upsampling by pixel shuffle, then a 3x3 conv that also sees the previous reconstruction
    at this scale (so fine detail can be copied from the past instead of re-sent)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(c_in, 4 * c_out, 1)
        self.conv = nn.Conv2d(c_out + 3, c_out, 3, padding=1)

    def forward(self, x: Tensor, prev_rgb: Tensor) -> Tensor:
        x = F.pixel_shuffle(self.expand(x), 2)
        return F.gelu(self.conv(torch.cat([x, prev_rgb], dim=1)))


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad the bottom/right of [B, C, H, W] so H and W are multiples of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")
