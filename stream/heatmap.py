"""The token heat-map: where a frame's tokens went (kept cells coloured by the router's error,
dropped cells dimmed), drawn over the reconstruction, with its colour scale along the bottom edge."""

from __future__ import annotations

import cv2
import numpy as np

# kept cells span these levels of the colour map (0.25 at zero error: a kept cell never reads as black)
LEVEL_LO, LEVEL_HI = 0.25, 1.0
BAR_HEIGHT = 12  # pixels of the scale strip; frames smaller than MIN_BAR_SIZE get none
MIN_BAR_SIZE = (96, 48)  # (width, height)
_FONT, _FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.3
_TEXT = (255, 255, 255)


def _inferno(levels: np.ndarray) -> np.ndarray:
    """Levels in [0, 1] -> uint8 RGB through the map the cells use."""
    return cv2.applyColorMap((levels * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]  # BGR -> RGB


def token_heatmap(
    frame: np.ndarray, mask: np.ndarray, grid: tuple[int, int], error: np.ndarray | None = None,
    error_scale: float = 0.08, scale_bar: bool = True,
) -> np.ndarray:
    """Render the keep-mask of one frame.

    Args:
        frame: uint8 RGB [H, W, 3] (the reconstruction, usually).
        mask: bool [N] keep-mask, raster order over `grid`.
        grid: (h, w) latent grid; each cell covers 8x8 pixels of the padded frame.
        error: optional [N] full-rate error per cell (0-1 L1); colours kept cells by it.
        error_scale: error mapped to the top of the colour map.
        scale_bar: draw the colour scale over the bottom BAR_HEIGHT rows (frames of at least
            MIN_BAR_SIZE): with `error`, the gradient from "err 0" to the `error_scale` it saturates
            at; without, the two swatches "dropped" and "kept".
    Returns:
        uint8 RGB [H, W, 3].
    """
    h, w = frame.shape[:2]
    gh, gw = grid
    keep = mask.reshape(gh, gw).astype(np.float32)
    if error is not None:
        level = np.clip(error.reshape(gh, gw) / error_scale, 0.0, 1.0) * (LEVEL_HI - LEVEL_LO) + LEVEL_LO
    else:
        level = np.ones((gh, gw), np.float32)
    colour = _inferno(keep * level)
    colour = cv2.resize(colour, (gw * 8, gh * 8), interpolation=cv2.INTER_NEAREST)[:h, :w]
    cells = cv2.resize(keep, (gw * 8, gh * 8), interpolation=cv2.INTER_NEAREST)[:h, :w, None]
    gray = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB).astype(np.float32)
    # kept cells: colour over a faint image; dropped cells: the image, dimmed
    out = (cells * (0.7 * colour + 0.3 * gray) + (1 - cells) * 0.35 * gray).clip(0, 255).astype(np.uint8)
    if scale_bar and w >= MIN_BAR_SIZE[0] and h >= MIN_BAR_SIZE[1]:
        out[h - BAR_HEIGHT:] = colour_scale(w, error_scale if error is not None else None)
    return out


def colour_scale(width: int, error_scale: float | None) -> np.ndarray:
    """The scale strip, uint8 RGB [BAR_HEIGHT, width, 3] on black.

    With an `error_scale`: "err 0", the gradient of the levels kept cells take (its left end is a
    kept cell with zero error, its right end one at `error_scale` or more), then "<error_scale>+".
    Without (a packet's mask alone, no error): a dimmed swatch "dropped" and a full one "kept".
    """
    bar = np.zeros((BAR_HEIGHT, width, 3), np.uint8)
    y = BAR_HEIGHT - 3  # text baseline
    pad = 3
    if error_scale is None:
        x = pad
        for label, rgb in (("dropped", np.full(3, 0.35 * 128)), ("kept", _inferno(np.array([[LEVEL_HI]]))[0, 0])):
            bar[2:-2, x:x + 12] = rgb
            x += 12 + pad
            cv2.putText(bar, label, (x, y), _FONT, _FONT_SCALE, _TEXT, 1, cv2.LINE_AA)
            x += cv2.getTextSize(label, _FONT, _FONT_SCALE, 1)[0][0] + 3 * pad
        return bar
    left, right = "err 0", f"{error_scale:g}+"
    lw = cv2.getTextSize(left, _FONT, _FONT_SCALE, 1)[0][0]
    rw = cv2.getTextSize(right, _FONT, _FONT_SCALE, 1)[0][0]
    x0, x1 = pad + lw + pad, width - pad - rw - pad  # the gradient spans [x0, x1)
    ramp = np.linspace(LEVEL_LO, LEVEL_HI, x1 - x0, dtype=np.float32)[None, :]
    bar[2:-2, x0:x1] = _inferno(ramp)[0]
    cv2.putText(bar, left, (pad, y), _FONT, _FONT_SCALE, _TEXT, 1, cv2.LINE_AA)
    cv2.putText(bar, right, (x1 + pad, y), _FONT, _FONT_SCALE, _TEXT, 1, cv2.LINE_AA)
    return bar
