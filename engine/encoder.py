"""The frame-conditioned encoder E(x_t, S_{t-1}) -> z_t, DCVC-RT's shape: no convolution above stride 8.

The frame and the receiver's previous reconstruction are pixel-unshuffled straight to stride 8 (each
3 x 64 = 192 channels: every pixel of the 8x8 cell) and mixed by one 1x1 convolution, so the
innovation x - prev_recon is one linear map away; the receiver's hidden state (the decoder's stride-8
feature of the previous frame, the temporal context) joins at the first block. A frame the receiver
can already predict therefore needs few or no tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TokenizerConfig
from .layers import SLOPE, DepthConvBlock


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        e, s = cfg.encoder, cfg.stride
        self.stride = s
        # frame and previous reconstruction as space-to-depth maps (2 x 3s^2 channels) + the hidden state
        self.fuse = nn.Conv2d(2 * 3 * s * s + cfg.decoder.state_channels, e.width, 1)
        self.blocks = nn.Sequential(*[DepthConvBlock(e.width, e.kernel, e.mlp_ratio) for _ in range(e.blocks)])
        self.head = nn.Conv2d(e.width, cfg.fsq.dim, 1)
        # depth 2: the second stage's latent from the features, the first stage's codes and what their
        # rounding left (the bounded latent minus its rounding): residual coding is one linear map away
        self.head2: nn.Conv2d | None = nn.Conv2d(e.width + 2 * cfg.fsq.dim, cfg.fsq.dim, 1) if cfg.depth == 2 else None

    def forward(self, x: Tensor, prev_recon: Tensor, prev_hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Encode one frame.

        Args:
            x: [B, 3, H, W] frame in [-1, 1], H and W multiples of 8.
            prev_recon: [B, 3, H, W] the receiver's previous reconstruction (zeros after a keyframe reset).
            prev_hidden: [B, Cs, H/8, W/8] the receiver's hidden state.
        Returns:
            z: [B, fsq_dim, H/8, W/8] pre-quantization latent.
            features: [B, width, H/8, W/8] (for heads that predict budgets from the encoder side).
        """
        y = torch.cat([F.pixel_unshuffle(x, self.stride), F.pixel_unshuffle(prev_recon, self.stride), prev_hidden],
                      dim=1)
        f = self.blocks(F.leaky_relu(self.fuse(y), SLOPE))
        return self.head(f), f

    def second(self, f: Tensor, codes: Tensor, residual: Tensor) -> Tensor:
        """The second stage's latent z2 [B, D, h, w] from the features f, the first stage's codes in
        [-1, 1] and its rounding residual (bounded latent minus rounded, in digit units)."""
        if self.head2 is None:
            raise RuntimeError("this model has one token stage (depth 1)")
        z2: Tensor = self.head2(torch.cat([f, codes.to(f.dtype), residual.to(f.dtype)], dim=1))
        return z2
