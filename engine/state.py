"""The explicit stream state and the per-frame token record (no hidden buffers anywhere)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .budget import BudgetState


@dataclass(frozen=True)
class StreamState:
    """What the receiver knows after a frame, plus the sender's router memory.

    Attributes:
        recon: [B, 3, Hp, Wp] last reconstruction in [-1, 1] (padded size, multiples of the stride).
        hidden: [B, Cs, Hp/8, Wp/8] decoder hidden state.
        frame_index: index of the next frame of the stream.
        budget: one router state per stream of the batch (sender only; a receiver ignores it).
    """

    recon: Tensor
    hidden: Tensor
    frame_index: int
    budget: tuple[BudgetState, ...] = ()

    @property
    def batch(self) -> int:
        return int(self.recon.shape[0])

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.recon.shape[-2]), int(self.recon.shape[-1])

    def tensors(self) -> dict[str, Tensor]:
        """The tensor part, by name: what an exported graph takes and returns."""
        return {"recon": self.recon, "hidden": self.hidden}


@dataclass(frozen=True)
class FrameTokens:
    """One frame's tokens for B streams in lockstep (fixed shapes: indices for all N positions).

    Attributes:
        indices: [B, N] int64 token index of every position (only kept ones are transmitted).
        mask: [B, N] bool keep-mask; row b has k[b] True values.
        keyframe: [B] bool; a keyframe resets the state before decoding.
        grid: (h, w) latent grid, N = h * w.
        size: (H, W) frame size in pixels before padding.
        frame_index: position of the frame in its stream.
        error: [B, N] full-rate per-position error (sender diagnostics: heat maps), or None.
        decodes: decoder passes the sender ran for this frame (1 = no router pass).
        gain: [B, N] zero-token error minus full-rate error (when the sender computed it), or None.
    """

    indices: Tensor
    mask: Tensor
    keyframe: Tensor
    grid: tuple[int, int]
    size: tuple[int, int]
    frame_index: int
    error: Tensor | None = None
    decodes: int = 1
    gain: Tensor | None = None

    @property
    def n(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def k(self) -> Tensor:
        return self.mask.sum(dim=1)

    def __post_init__(self) -> None:
        b, n = self.indices.shape
        if self.mask.shape != (b, n) or self.mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool [{b}, {n}], got {self.mask.dtype} {tuple(self.mask.shape)}")
        if n != self.grid[0] * self.grid[1]:
            raise ValueError(f"indices have {n} positions but grid {self.grid} has {self.grid[0] * self.grid[1]}")
        if self.keyframe.shape != (b,):
            raise ValueError(f"keyframe must be [{b}] bool, got {tuple(self.keyframe.shape)}")
