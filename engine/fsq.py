"""Finite scalar quantization (Mentzer et al. 2023, arXiv 2309.15505) with an exact codes<->indices inverse.

Each latent position carries `dim` scalars; scalar i is bounded and rounded to `levels[i]` values, and
the tuple of rounded values is one of `prod(levels)` codes, i.e. one token index (the digits of a
mixed-radix number: engine/fsq_index.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import FSQConfig
from .fsq_index import digits_to_index, index_to_digits


def round_ste(z: Tensor) -> Tensor:
    """Round with a straight-through gradient."""
    return z + (z.round() - z).detach()


class FSQ(nn.Module):
    """Quantizer over the channel axis of a [B, dim, H, W] latent."""

    levels: Tensor

    def __init__(self, cfg: FSQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        levels = torch.tensor(cfg.levels, dtype=torch.int64)
        # non-persistent: derived from the config, never stored with the weights
        self.register_buffer("levels", levels, persistent=False)

    @property
    def dim(self) -> int:
        return self.cfg.dim

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    def _shape(self, like: Tensor) -> tuple[int, ...]:
        return (1, self.dim) + (1,) * (like.ndim - 2)

    def bound(self, z: Tensor, eps: float = 1e-3) -> Tensor:
        """Squash each channel into (-L/2, L/2) so that rounding gives exactly L values."""
        lv = self.levels.to(z.dtype).view(self._shape(z))
        half_l = (lv - 1) * (1 + eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(z.dtype).view(self._shape(z))
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Quantize.

        Args:
            z: [B, dim, H, W] float latent.
        Returns:
            codes: [B, dim, H, W] in [-1, 1] (straight-through gradient).
            indices: [B, H*W] int64 in [0, codebook_size).
        """
        if z.shape[1] != self.dim:
            raise ValueError(f"FSQ expects {self.dim} channels, got shape {tuple(z.shape)}")
        # quantize in fp32 whatever the autocast dtype (FSQ paper / vector-quantize-pytorch do too)
        z = z.float()
        half_width = (self.levels // 2).to(z.dtype).view(self._shape(z))
        codes = round_ste(self.bound(z)) / half_width
        return codes, self.codes_to_indices(codes.detach())

    def digits_to_indices(self, digits: Tensor) -> Tensor:
        """[B, dim, H, W] int64 digits (channel i in 0..levels[i]-1) -> [B, H*W] int64 indices."""
        return digits_to_index(digits.unbind(1), self.cfg.levels).flatten(1)

    def indices_to_digits(self, indices: Tensor, grid: tuple[int, int]) -> Tensor:
        """[B, H*W] indices -> [B, dim, H, W] int64 digits; the exact inverse of `digits_to_indices`."""
        idx = indices.long().view(indices.shape[0], *grid)
        return torch.stack(index_to_digits(idx, self.cfg.levels), dim=1)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """[B, dim, H, W] codes in [-1, 1] -> [B, H*W] int64 indices."""
        half_width = (self.levels // 2).view(self._shape(codes))
        return self.digits_to_indices((codes * half_width).round().long() + half_width)

    def indices_to_codes(self, indices: Tensor, grid: tuple[int, int]) -> Tensor:
        """[B, H*W] indices -> [B, dim, H, W] codes; the exact inverse of `codes_to_indices`."""
        half_width = (self.levels // 2).view(1, -1, 1, 1)
        return (self.indices_to_digits(indices, grid) - half_width).float() / half_width.float()
