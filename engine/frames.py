"""Conversions between captured frames (OpenCV BGR), uint8 RGB frames and model tensors."""

from __future__ import annotations

from typing import Any, cast

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from .errors import TokenizerError


def to_tensor(frames: NDArray[np.uint8], device: torch.device | str | None = None) -> Tensor:
    """uint8 RGB [H, W, 3] or [T, H, W, 3] -> float32 [T, 3, H, W] in [-1, 1] (T = 1 for one frame)."""
    if frames.dtype != np.uint8:
        raise TokenizerError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise TokenizerError(f"frames must be [H, W, 3] or [T, H, W, 3] RGB, got shape {frames.shape}")
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8(x: Tensor) -> NDArray[np.uint8]:
    """float [T, 3, H, W] (or [3, H, W]) in [-1, 1] -> uint8 RGB [T, H, W, 3] (or [H, W, 3])."""
    y = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    y = y.movedim(-3, -1)
    return y.cpu().numpy()


def bgr_to_rgb(frame: NDArray[np.integer[Any] | np.floating[Any]]) -> NDArray[np.uint8]:
    """Any OpenCV frame (BGR, gray, BGRA, 16-bit) -> uint8 RGB [H, W, 3]."""
    if frame.dtype == np.uint16:
        frame = (cast(NDArray[np.uint16], frame) >> 8).astype(np.uint8)  # keep the 8 most significant bits
    elif frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2 or frame.shape[-1] == 1:
        rgb = cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2RGB)
    elif frame.shape[-1] == 4:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return cast(NDArray[np.uint8], rgb)  # cv2's stubs do not track dtypes; the input is uint8 here
