"""The decoder D(tokens_t, mask_t, S_{t-1}) -> (x_hat_t, S_t).

Sparse tokens (dropped positions carry a learned "masked" embedding, never a zero code, which
would be a valid FSQ code) are fused with the hidden state and the previous reconstruction at
stride 8, then upsampled; the output is a correction added to the previous reconstruction, so a
static scene is reproduced by predicting zero. The sender runs this same module (closed loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TokenizerConfig
from .layers import ConvNeXtBlock, UpStage, masked_embedding


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        d = cfg.decoder
        self.embed = nn.Conv2d(cfg.fsq.dim, d.width, 1)
        self.mask_embedding = nn.Parameter(torch.randn(d.width) * 0.02)
        s = cfg.stride
        # the previous reconstruction enters as a space-to-depth map: every pixel of the 8x8 cell
        self.fuse = nn.Conv2d(d.width + d.state_channels + 3 * s * s, d.width, 1)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(d.width, d.kernel, d.mlp_ratio) for _ in range(d.blocks)])
        self.to_hidden = nn.Conv2d(d.width, d.state_channels, 1)
        u4, u2 = d.up_channels
        self.up4 = UpStage(d.width, u4)
        self.up2 = UpStage(u4, u2)
        # last x2 by pixel shuffle straight to RGB: no convolution at full resolution (the costliest
        # layer of a CNN decoder on a CPU); full-resolution detail of the past comes in via the skip
        self.to_rgb = nn.Conv2d(u2, 3 * 4, 3, padding=1)
        self.stride = s

    def forward(
        self, codes: Tensor, mask: Tensor, prev_recon: Tensor, prev_hidden: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Decode one frame.

        Args:
            codes: [B, fsq_dim, h, w] FSQ codes in [-1, 1] (values at dropped positions are ignored).
            mask: [B, h*w] bool keep-mask (True = token sent).
            prev_recon: [B, 3, 8h, 8w] previous reconstruction in [-1, 1] (zeros after a reset).
            prev_hidden: [B, Cs, h, w] previous hidden state (zeros after a reset).
        Returns:
            recon: [B, 3, 8h, 8w] in [-1, 1].
            hidden: [B, Cs, h, w] in [-1, 1].
        """
        e = masked_embedding(self.embed(codes), self.mask_embedding, mask)
        ctx = F.pixel_unshuffle(prev_recon, self.stride)
        f = self.blocks(self.fuse(torch.cat([e, prev_hidden, ctx], dim=1)))
        hidden = torch.tanh(self.to_hidden(f))
        # the previous reconstruction at strides 4, 2, 1 lets each stage copy detail it already has
        p2 = F.avg_pool2d(prev_recon, 2)
        p4 = F.avg_pool2d(p2, 2)
        y = self.up2(self.up4(f, p4), p2)
        recon = (prev_recon + F.pixel_shuffle(self.to_rgb(y), 2)).clamp(-1.0, 1.0)
        return recon, hidden
