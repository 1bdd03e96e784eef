"""Frame pre-processing: a captured OpenCV frame (BGR uint8 [H, W, 3], or gray/BGRA/16-bit) -> the
model's float tensor [1, 3, h, w] in [-1, 1], resized to the stream's size.

Two paths, picked at run time (never at import; cupy is imported only when asked for):
- `numpy`: exactly the CPU pipeline's own steps (engine/frames.bgr_to_rgb, cv2.resize INTER_AREA,
  engine/frames.to_tensor), so the fallback changes nothing.
- `cupy`: the same maths on the GPU, written against the numpy API (`xp`): channel reorder, resize
  as two matrix products with OpenCV's INTER_AREA weights, rounding to 8 bits as OpenCV does, then
  normalisation; the result reaches torch through DLPack without a copy. Run with numpy as `xp` it
  is tested on any machine against the OpenCV path (equal within one 8-bit step).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from torch import Tensor

from livetok.engine.errors import TokenizerError
from livetok.engine.frames import bgr_to_rgb, to_tensor

BACKENDS = ("auto", "numpy", "cupy")


@functools.lru_cache(maxsize=1)
def cupy_usable() -> bool:
    """Whether cupy is installed *and* sees a CUDA device (cupy imports fine without one and only
    fails on first use, so `cuda.is_available()` is what decides)."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # a broken CUDA install raises cupy's own runtime errors here
        return False


@dataclass(frozen=True)
class PreprocessConfig:
    """size: (width, height) to resize to, or None to keep the capture size; backend: where it runs;
    order: the colour order of the frames handed in ("bgr" as OpenCV captures them, or "rgb" as the
    stream library's sources already deliver them)."""

    size: tuple[int, int] | None = None
    backend: str = "auto"  # auto = cupy when usable, else numpy
    order: str = "bgr"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown pre-processing backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.order not in ("bgr", "rgb"):
            raise ValueError(f"unknown colour order {self.order!r}; choose bgr or rgb")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be (width, height) with both >= 1, got {self.size}")


# ---------------------------------------------------------------------------------------------
# OpenCV's INTER_AREA as weight matrices


def area_weights(src: int, dst: int, shrink: bool) -> np.ndarray:
    """[dst, src] float64 matrix M with resized = M @ line: OpenCV's INTER_AREA along one axis.

    shrink (both axes get smaller or stay): each output pixel averages the source interval it
    covers, partial pixels weighted by their overlap (OpenCV's computeResizeAreaTab). Otherwise
    OpenCV uses two-tap INTER_AREA coefficients on both axes (cv::resize's `area_mode`).
    """
    if src < 1 or dst < 1:
        raise ValueError(f"sizes must be >= 1, got {src} -> {dst}")
    m = np.zeros((dst, src), np.float64)
    scale = src / dst
    if shrink:
        if dst > src:
            raise ValueError(f"cannot shrink {src} pixels to {dst}")
        for i in range(dst):
            lo, hi = i * scale, min((i + 1) * scale, float(src))
            cell = hi - lo
            for j in range(math.floor(lo), math.ceil(hi)):
                overlap = min(hi, j + 1.0) - max(lo, float(j))
                if overlap > 1e-3:  # OpenCV's own threshold for a partial pixel
                    m[i, j] = overlap / cell
        return m
    inv = 1.0 / scale
    for i in range(dst):
        sx = math.floor(i * scale)
        fx = (i + 1) - (sx + 1) * inv
        fx = 0.0 if fx <= 0 else fx - math.floor(fx)
        if sx >= src - 1:
            sx, fx = src - 1, 0.0
        m[i, sx] += 1.0 - fx
        if fx > 0:
            m[i, sx + 1] += fx
    return m


def resize_weights(src_hw: tuple[int, int], dst_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(rows [h, H], cols [w, W]) float32 weights of cv2.resize(INTER_AREA) from H x W to w x h."""
    (h0, w0), (w, h) = src_hw, dst_wh
    shrink = h <= h0 and w <= w0
    return (area_weights(h0, h, shrink).astype(np.float32), area_weights(w0, w, shrink).astype(np.float32))


def _to_rgb_xp(xp: Any, frame: Any, order: str = "bgr") -> Any:
    """bgr_to_rgb (or, for order "rgb", the same without the swap) on any array module: uint8 RGB
    [H, W, 3] (a view where possible)."""
    if frame.dtype == xp.uint16:
        frame = (frame >> 8).astype(xp.uint8)
    elif frame.dtype != xp.uint8:
        frame = xp.clip(frame, 0, 255).astype(xp.uint8)
    if frame.ndim == 2 or frame.shape[-1] == 1:
        g = frame.reshape(frame.shape[:2])
        return xp.stack([g, g, g], axis=-1)
    if order == "rgb":
        return frame[..., :3]  # RGB or RGBA -> RGB (alpha dropped)
    return frame[..., 2::-1]  # BGR or BGRA -> RGB (alpha dropped)


def preprocess_xp(xp: Any, frame: Any, size: tuple[int, int] | None,
                  weights: tuple[Any, Any] | None = None, order: str = "bgr") -> Any:
    """The cupy path's maths on array module `xp`: -> float32 [1, 3, h, w] in [-1, 1] (an xp array).

    `weights`: (rows [h, H], cols [w, W]) from `resize_weights`, already on the device (cached by the caller).
    """
    rgb = _to_rgb_xp(xp, frame, order)
    h0, w0 = rgb.shape[:2]
    if size is not None and (size[0], size[1]) != (w0, h0):
        w, h = size
        if weights is None:
            wy_np, wx_np = resize_weights((h0, w0), (w, h))
            weights = (xp.asarray(wy_np), xp.asarray(wx_np))
        wy, wx = weights
        x = rgb.astype(xp.float32).transpose(2, 0, 1)  # [3, H, W]
        x = xp.matmul(xp.matmul(wy, x), wx.T)  # [3, h, w]: rows, then columns
        # OpenCV writes 8-bit pixels after resizing: round (half up, as its fixed-point averages do)
        x = xp.clip(xp.floor(x + 0.5), 0, 255)
    else:
        x = rgb.transpose(2, 0, 1).astype(xp.float32)
    return (x / xp.float32(127.5) - xp.float32(1.0))[None]


# ---------------------------------------------------------------------------------------------
# the pre-processor


class Preprocessor:
    """Captured frame -> model tensor, on the GPU (cupy) when one is usable, else numpy/OpenCV.

    Attributes:
        backend: "cupy" or "numpy", decided when the object is built (not at import).
    """

    def __init__(self, cfg: PreprocessConfig | None = None) -> None:
        self.cfg = cfg or PreprocessConfig()
        want = self.cfg.backend
        if want == "cupy" and not cupy_usable():
            raise TokenizerError("cupy pre-processing needs cupy and a CUDA device "
                                 "(pip install 'livetok[gpu]' on a GPU machine, or use the numpy backend)")
        self.backend = "cupy" if want == "cupy" or (want == "auto" and cupy_usable()) else "numpy"
        self._weights: dict[tuple[int, int, int, int], tuple[Any, Any]] = {}

    def rgb(self, frame: np.ndarray) -> np.ndarray:
        """The CPU path's uint8 RGB frame at the configured size (what the numpy backend normalises)."""
        rgb = bgr_to_rgb(frame) if self.cfg.order == "bgr" else np.asarray(_to_rgb_xp(np, frame, "rgb"))
        size = self.cfg.size
        if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb)

    def __call__(self, frame: Any) -> Tensor:
        """A captured frame (numpy, or a cupy array on the cupy backend) -> float32 [1, 3, h, w] in
        [-1, 1]: a CPU tensor (numpy backend) or a CUDA tensor sharing the cupy buffer."""
        if frame.ndim not in (2, 3):
            raise TokenizerError(f"a frame must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {frame.shape}")
        if self.backend == "numpy":
            return to_tensor(self.rgb(np.asarray(frame)))
        import cupy as cp
        from torch.utils.dlpack import from_dlpack

        x = cp.asarray(frame)
        size = self.cfg.size
        weights = None
        if size is not None:
            key = (int(x.shape[0]), int(x.shape[1]), size[1], size[0])
            weights = self._weights.get(key)
            if weights is None:
                wy, wx = resize_weights((key[0], key[1]), size)
                weights = (cp.asarray(wy), cp.asarray(wx))
                self._weights[key] = weights
        y = cp.ascontiguousarray(preprocess_xp(cp, x, size, weights, self.cfg.order))
        out: Tensor = from_dlpack(y)  # zero-copy: torch reads cupy's buffer
        return out
