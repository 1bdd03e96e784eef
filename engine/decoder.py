"""The decoder D(tokens_t, mask_t, S_{t-1}) -> (x_hat_t, S_t), DCVC-RT's shape: everything at stride 8,
pixel-shuffle out.

The token embedding (a learned "masked" embedding where the mask is False, never a zero code, which
would be a valid FSQ code) is fused with the hidden state (the previous frame's stride-8 feature: the
temporal context) and the pixel-unshuffled previous reconstruction by one 1x1 convolution, then
depthwise-separable blocks. The new hidden state is read off the last feature; the reconstruction is
a 1x1 to 3 x 64 channels pixel-shuffled to full size and added to the previous reconstruction (a
cheap P-frame accumulation: a static scene is held by predicting zero). With `refine_width` set, a
stride-4 refinement follows: the stride-8 feature pixel-shuffled to stride 4 and the coarse
reconstruction pixel-unshuffled to stride 4 go through a 1x1 and a few narrow blocks to a residual
correction (it starts at zero, so a model grows from one without it). The sender runs this same
module (closed loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TokenizerConfig
from .layers import SLOPE, DepthConvBlock, masked_embedding


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        d, s = cfg.decoder, cfg.stride
        self.stride = s
        self.embed = nn.Conv2d(cfg.fsq.dim, d.width, 1)
        self.mask_embedding = nn.Parameter(torch.randn(d.width) * 0.02)
        # depth 2: the second stage's codes add their own embedding where a position carries two tokens;
        # zero at init, so a model grown from one stage decodes exactly as it did
        self.embed2: nn.Conv2d | None = None
        if cfg.depth == 2:
            self.embed2 = nn.Conv2d(cfg.fsq.dim, d.width, 1)
            with torch.no_grad():
                self.embed2.weight.zero_()
                self.embed2.bias.zero_()  # type: ignore[union-attr]  # built with bias=True
        self.fuse = nn.Conv2d(d.width + d.state_channels + 3 * s * s, d.width, 1)
        self.blocks = nn.Sequential(*[DepthConvBlock(d.width, d.kernel, d.mlp_ratio) for _ in range(d.blocks)])
        self.to_hidden = nn.Conv2d(d.width, d.state_channels, 1)
        self.to_rgb = nn.Conv2d(d.width, 3 * s * s, 1)
        with torch.no_grad():  # start as "hold the previous frame": small corrections
            self.to_rgb.weight.mul_(0.1)
            if self.to_rgb.bias is not None:
                self.to_rgb.bias.zero_()
        self.refine: nn.Sequential | None = None
        if d.refine_width:
            r, half = d.refine_width, s // 2
            self.refine = nn.Sequential(
                nn.Conv2d(d.width // 4 + 3 * half * half, r, 1),
                nn.LeakyReLU(SLOPE),
                *[DepthConvBlock(r, d.kernel, d.mlp_ratio) for _ in range(d.refine_blocks)],
                nn.Conv2d(r, 3 * half * half, 1),
            )
            last = self.refine[-1]
            assert isinstance(last, nn.Conv2d)
            with torch.no_grad():  # exactly the identity at init: grown weights decode as before
                last.weight.zero_()
                if last.bias is not None:
                    last.bias.zero_()

    def forward(
        self, codes: Tensor, mask: Tensor, prev_recon: Tensor, prev_hidden: Tensor,
        codes2: Tensor | None = None, mask2: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Decode one frame.

        Args:
            codes: [B, fsq_dim, h, w] FSQ codes in [-1, 1] (values at dropped positions are ignored).
            mask: [B, h*w] bool keep-mask (True = token sent).
            prev_recon: [B, 3, 8h, 8w] previous reconstruction in [-1, 1] (zeros after a reset).
            prev_hidden: [B, Cs, h, w] previous hidden state (zeros after a reset).
            codes2, mask2: depth 2 only: the second stage's codes [B, fsq_dim, h, w] where `mask2`
                [B, h*w] (a subset of `mask`) is True.
        Returns:
            recon: [B, 3, 8h, 8w] in [-1, 1].
            hidden: [B, Cs, h, w] in [-1, 1].
        """
        e = masked_embedding(self.embed(codes), self.mask_embedding, mask)
        if self.embed2 is not None and codes2 is not None and mask2 is not None:
            b, _, h, w = e.shape
            e = e + self.embed2(codes2) * mask2.view(b, 1, h, w).to(e.dtype)
        ctx = F.pixel_unshuffle(prev_recon, self.stride)
        f = self.blocks(F.leaky_relu(self.fuse(torch.cat([e, prev_hidden, ctx], dim=1)), SLOPE))
        hidden = torch.tanh(self.to_hidden(f))
        recon = prev_recon + F.pixel_shuffle(self.to_rgb(f), self.stride)
        if self.refine is not None:
            half = self.stride // 2
            g = torch.cat([F.pixel_shuffle(f, 2), F.pixel_unshuffle(recon, half)], dim=1)
            recon = recon + F.pixel_shuffle(self.refine(g), half)
        return recon.clamp(-1.0, 1.0), hidden
