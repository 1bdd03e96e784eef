"""The budget head: a small conv head on the encoder's features that predicts, per position, the
full-rate error and the gain of sending the token (what the router otherwise measures with extra
decoder passes). Policies `learned`, `rdo` and `prior` route on it with zero extra decodes (the
paper's stated future work; AdapTok's scorer, made causal and per frame)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .config import TokenizerConfig


class BudgetHead(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        w, h = cfg.encoder.width, cfg.head_width
        self.inp = nn.Conv2d(w, h, 1)
        self.mix = nn.Conv2d(h, h, 3, padding=1)
        self.out = nn.Conv2d(h, 2, 1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Predict the router's maps.

        Args:
            features: [B, width, h, w] the encoder's features (which already see the receiver's state).
        Returns:
            (error, gain): each [B, h*w], >= 0, in the units of `position_error` (0-1 L1).
        """
        y = self.out(F.gelu(self.mix(F.gelu(self.inp(features)))))
        y = F.softplus(y) * 0.05  # the maps live around 0.01-0.1: start the head in that range
        return y[:, 0].flatten(1), y[:, 1].flatten(1)
