"""The explicit stream state and the per-frame token record (no hidden buffers anywhere)."""

from __future__ import annotations

from collections.abc import Sequence
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
        frame_indices: per stream row, the index of that stream's next frame (rows of a batch are
            independent streams: each keeps its own count and keyframe schedule).
        budget: one router state per stream of the batch (sender only; a receiver ignores it).
    """

    recon: Tensor
    hidden: Tensor
    frame_indices: tuple[int, ...]
    budget: tuple[BudgetState, ...] = ()

    def __post_init__(self) -> None:
        if len(self.frame_indices) != self.recon.shape[0]:
            raise ValueError(f"{len(self.frame_indices)} frame indices for a batch of {self.recon.shape[0]} streams")
        if self.budget and len(self.budget) != self.recon.shape[0]:
            raise ValueError(f"{len(self.budget)} router states for a batch of {self.recon.shape[0]} streams")

    @property
    def frame_index(self) -> int:
        """The next frame's index when every row agrees (always so for one stream)."""
        return _common(self.frame_indices)

    def row(self, i: int) -> StreamState:
        """Row `i` as a one-stream state."""
        return StreamState(self.recon[i:i + 1], self.hidden[i:i + 1], (self.frame_indices[i],),
                           (self.budget[i],) if self.budget else ())

    @staticmethod
    def stack(states: Sequence[StreamState]) -> StreamState:
        """States of one padded size -> one batched state (rows in order)."""
        return StreamState(torch.cat([s.recon for s in states]), torch.cat([s.hidden for s in states]),
                           tuple(i for s in states for i in s.frame_indices),
                           tuple(b for s in states for b in s.budget))

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
        frame_indices: per row, the position of the frame in its stream.
        error: [B, N] full-rate per-position error (sender diagnostics: heat maps), or None.
        decodes: decoder passes the sender ran for this frame (1 = no router pass).
        gain: [B, N] zero-token error minus full-rate error (when the sender computed it), or None.
    """

    indices: Tensor
    mask: Tensor
    keyframe: Tensor
    grid: tuple[int, int]
    size: tuple[int, int]
    frame_indices: tuple[int, ...]
    error: Tensor | None = None
    decodes: int = 1
    gain: Tensor | None = None

    @property
    def n(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def k(self) -> Tensor:
        return self.mask.sum(dim=1)

    @property
    def frame_index(self) -> int:
        """The frame's index when every row agrees (always so for one stream)."""
        return _common(self.frame_indices)

    def row(self, i: int) -> FrameTokens:
        """Row `i` as one stream's tokens."""
        sl = slice(i, i + 1)
        return FrameTokens(self.indices[sl], self.mask[sl], self.keyframe[sl], self.grid, self.size,
                           (self.frame_indices[i],), None if self.error is None else self.error[sl], self.decodes,
                           None if self.gain is None else self.gain[sl])

    @staticmethod
    def stack(tokens: Sequence[FrameTokens]) -> FrameTokens:
        """One-stream tokens of one grid and size -> one batch (router diagnostics dropped)."""
        t0 = tokens[0]
        dev = t0.indices.device
        return FrameTokens(torch.cat([t.indices.to(dev) for t in tokens]), torch.cat([t.mask.to(dev) for t in tokens]),
                           torch.cat([t.keyframe.to(dev) for t in tokens]), t0.grid, t0.size,
                           tuple(i for t in tokens for i in t.frame_indices))

    def __post_init__(self) -> None:
        b, n = self.indices.shape
        if self.mask.shape != (b, n) or self.mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool [{b}, {n}], got {self.mask.dtype} {tuple(self.mask.shape)}")
        if n != self.grid[0] * self.grid[1]:
            raise ValueError(f"indices have {n} positions but grid {self.grid} has {self.grid[0] * self.grid[1]}")
        if self.keyframe.shape != (b,):
            raise ValueError(f"keyframe must be [{b}] bool, got {tuple(self.keyframe.shape)}")
        if len(self.frame_indices) != b:
            raise ValueError(f"{len(self.frame_indices)} frame indices for a batch of {b} streams")


def _common(indices: tuple[int, ...]) -> int:
    if not indices or any(i != indices[0] for i in indices):
        raise ValueError(f"the rows are at different frames {indices}: read frame_indices")
    return indices[0]
