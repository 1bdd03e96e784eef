"""The token heat-map: where a frame's tokens went (kept cells coloured by the router's error,
dropped cells dimmed), drawn over the reconstruction."""

from __future__ import annotations

import cv2
import numpy as np


def token_heatmap(
    frame: np.ndarray, mask: np.ndarray, grid: tuple[int, int], error: np.ndarray | None = None,
    error_scale: float = 0.08,
) -> np.ndarray:
    """Render the keep-mask of one frame.

    Args:
        frame: uint8 RGB [H, W, 3] (the reconstruction, usually).
        mask: bool [N] keep-mask, raster order over `grid`.
        grid: (h, w) latent grid; each cell covers 8x8 pixels of the padded frame.
        error: optional [N] full-rate error per cell (0-1 L1); colours kept cells by it.
        error_scale: error mapped to the top of the colour map.
    Returns:
        uint8 RGB [H, W, 3].
    """
    h, w = frame.shape[:2]
    gh, gw = grid
    keep = mask.reshape(gh, gw).astype(np.float32)
    if error is not None:
        level = np.clip(error.reshape(gh, gw) / error_scale, 0.0, 1.0) * 0.75 + 0.25
    else:
        level = np.ones((gh, gw), np.float32)
    heat = (keep * level * 255).astype(np.uint8)
    colour = cv2.applyColorMap(heat, cv2.COLORMAP_INFERNO)[..., ::-1]  # BGR -> RGB
    colour = cv2.resize(colour, (gw * 8, gh * 8), interpolation=cv2.INTER_NEAREST)[:h, :w]
    cells = cv2.resize(keep, (gw * 8, gh * 8), interpolation=cv2.INTER_NEAREST)[:h, :w, None]
    gray = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB).astype(np.float32)
    # kept cells: colour over a faint image; dropped cells: the image, dimmed
    out = cells * (0.7 * colour + 0.3 * gray) + (1 - cells) * 0.35 * gray
    return out.clip(0, 255).astype(np.uint8)
