"""The frame-conditioned encoder E(x_t, S_{t-1}) -> z_t.

It sees the new frame next to the receiver's previous reconstruction (so the difference, the
innovation, is one convolution away) and the receiver's hidden state, so a frame the receiver can
already predict needs few or no tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TokenizerConfig
from .layers import ConvNeXtBlock


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        e = cfg.encoder
        c1, c2, c3 = e.stem_channels
        # input: frame and previous reconstruction (6 channels), space-to-depth by 2 first: the
        # full-resolution conv is the most expensive layer of a CNN stem on a CPU
        self.stem1 = nn.Conv2d(6 * 4, c1, 3, padding=1)  # stride 2
        self.stem2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)  # stride 4
        self.stem3 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)  # stride 8
        self.fuse = nn.Conv2d(c3 + cfg.decoder.state_channels, e.width, 1)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(e.width, e.kernel, e.mlp_ratio) for _ in range(e.blocks)])
        self.head = nn.Conv2d(e.width, cfg.fsq.dim, 1)

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
        y = F.pixel_unshuffle(torch.cat([x, prev_recon], dim=1), 2)
        y = F.gelu(self.stem1(y))
        y = F.gelu(self.stem2(y))
        y = self.stem3(y)
        f = self.blocks(self.fuse(torch.cat([y, prev_hidden], dim=1)))
        return self.head(f), f
