"""Which positions fill a frame's budget: per-position error maps and the ranked keep-mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def position_error(x: Tensor, recon: Tensor, stride: int) -> Tensor:
    """Mean absolute error per latent cell, in [0, 1] units of the 0-255 range.

    Args:
        x, recon: [B, 3, H, W] in [-1, 1], H and W multiples of `stride`.
    Returns:
        [B, (H/stride) * (W/stride)] float, raster order.
    """
    e = (x - recon).abs().mean(dim=1, keepdim=True) * 0.5  # [-1, 1] -> [0, 1] scale
    return F.avg_pool2d(e, stride).flatten(1)


def keep_mask(scores: Tensor, k: Tensor) -> Tensor:
    """Keep the k highest-scoring positions of each row.

    Ties go to the lower index (a stable sort), so sender and receiver-side tools that recompute a
    mask from the same scores agree exactly.

    Args:
        scores: [B, N] float.
        k: [B] int, 0 <= k <= N.
    Returns:
        [B, N] bool with exactly k[b] True values in row b.
    """
    order = torch.argsort(-scores, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return rank < k.view(-1, 1)


def prefix_scores(batch: int, n: int, device: torch.device | None = None) -> Tensor:
    """ElasticTok-style order: the first k positions in raster order (no mask side information needed)."""
    return -torch.arange(n, device=device, dtype=torch.float32).expand(batch, n)
