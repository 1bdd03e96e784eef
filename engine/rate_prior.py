"""The rate term of training: a differentiable stand-in for packet v2's code length (issue 13).

The wire (stream/wire/entropy.py, docs/PACKET.md §6.3) codes FSQ digit d of a kept token under an
adaptive count table whose context is ``(last digit d sent at this position + 1, digit d-1 of this
token)``. `DigitPrior` is the same model with learned logits instead of per-stream counts: a table of
``contexts x levels[d]`` logits per digit. Training adds ``rate_weight * bits/pixel`` under it, so the
encoder learns tokens that the wire's contexts find predictable (a static position repeating its
last code costs almost nothing), while the wire itself stays integer-only and needs no network.

The bits are exact under the prior (cross-entropy of the hard digits: this trains the prior); the
gradient reaches the encoder through soft digit assignments (a softmax over the distance of the
bounded latent to each level), as a straight-through estimate with the hard value in the forward
pass. The prior lives beside the model in training only: it is not part of the weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LN2 = math.log(2.0)


def context_sizes(levels: tuple[int, ...]) -> list[int]:
    """Contexts of digit d: ``(levels[d] + 1) * levels[d-1]`` (digit 0: ``levels[0] + 1``), as on the wire."""
    return [(lv + 1) * (levels[d - 1] if d else 1) for d, lv in enumerate(levels)]


def digit_context(levels: tuple[int, ...], d: int, last_d: Tensor, prev_digit: Tensor | None) -> Tensor:
    """The wire's context of digit d (docs/PACKET.md §6.3): ``(last digit d + 1) * levels[d-1] + digit
    d-1 of this token``; digit 0: ``last digit 0 + 1``."""
    ctx = last_d + 1
    if d == 0 or prev_digit is None:
        return ctx
    return ctx * levels[d - 1] + prev_digit


class DigitPrior(nn.Module):
    """Per-digit categorical logits conditioned on the wire's contexts (starts uniform)."""

    def __init__(self, levels: tuple[int, ...], temperature: float = 0.5) -> None:
        super().__init__()
        self.levels = tuple(int(x) for x in levels)
        self.temperature = temperature
        self.logits = nn.ParameterList(
            [nn.Parameter(torch.zeros(c, lv)) for c, lv in zip(context_sizes(self.levels), self.levels, strict=True)])

    def forward(self, bounded: Tensor, keep: Tensor, last: Tensor) -> tuple[Tensor, Tensor]:
        """Bits of one frame's kept tokens, and the updated last-sent digits.

        Args:
            bounded: [B, D, h, w] the FSQ's bounded latent (`FSQ.bound`, before rounding), fp32.
            keep: [B, h*w] bool keep-mask.
            last: [B, D, h*w] int64 last digit sent per position, -1 where none since the reset.
        Returns:
            bits: [B] code length of the kept tokens under the prior (straight-through: the forward
                value is the hard code length, the gradient flows through soft assignments).
            last: the updated last-sent digits (detached).
        """
        b = bounded.shape[0]
        v = bounded.flatten(2)  # [B, D, N]
        keep_f = keep.to(v.dtype)
        digits = []
        bits = v.new_zeros(b)
        for d, lv in enumerate(self.levels):
            centres = torch.arange(lv, device=v.device, dtype=v.dtype) - lv // 2  # digit j sits at j - L//2
            dist = v[:, d, :, None] - centres  # [B, N, L]
            hard = (v[:, d].detach().round() + lv // 2).long().clamp(0, lv - 1)
            digits.append(hard)
            ctx = digit_context(self.levels, d, last[:, d], digits[d - 1] if d else None)
            nll = -torch.log_softmax(self.logits[d], dim=-1)[ctx] / LN2  # [B, N, L] bits of each level
            hard_bits = nll.gather(-1, hard[..., None])[..., 0]
            soft = torch.softmax(-dist.pow(2) / self.temperature, dim=-1)
            soft_bits = (soft * nll.detach()).sum(-1)
            per_pos = hard_bits + soft_bits - soft_bits.detach()
            bits = bits + (per_pos * keep_f).sum(-1)
        new = torch.stack(digits, dim=1)
        last = torch.where(keep[:, None, :], new, last)
        return bits, last.detach()


def empty_last(batch: int, levels: tuple[int, ...], positions: int, device: torch.device) -> Tensor:
    """The last-sent digits after a reset: none (-1 everywhere)."""
    return torch.full((batch, len(levels), positions), -1, dtype=torch.long, device=device)
