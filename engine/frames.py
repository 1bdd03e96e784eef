"""Conversions between uint8 RGB frames (what video I/O produces) and model tensors."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .errors import TokenizerError


def to_tensor(frames: np.ndarray, device: torch.device | str | None = None) -> Tensor:
    """uint8 RGB [H, W, 3] or [T, H, W, 3] -> float32 [T, 3, H, W] in [-1, 1] (T = 1 for one frame)."""
    if frames.dtype != np.uint8:
        raise TokenizerError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise TokenizerError(f"frames must be [H, W, 3] or [T, H, W, 3] RGB, got shape {frames.shape}")
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8(x: Tensor) -> np.ndarray:
    """float [T, 3, H, W] (or [3, H, W]) in [-1, 1] -> uint8 RGB [T, H, W, 3] (or [H, W, 3])."""
    y = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    y = y.movedim(-3, -1)
    return y.cpu().numpy()
