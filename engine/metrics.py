"""Quality metrics on uint8 RGB frames: PSNR (0-255 peak) and SSIM (Wang et al. 2004, Gaussian
window sigma 1.5 as in scikit-image's `gaussian_weights=True`), per frame, averaged over channels.
The only PSNR formula of the project: everything that reports a PSNR calls these."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

PSNR_CAP = 100.0  # identical frames have infinite PSNR; cap it so means stay finite


def _pair(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> None:
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"metrics take uint8 frames, got {a.dtype} and {b.dtype}")


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """PSNR in dB of a mean squared error at a peak-to-peak `peak`, capped at PSNR_CAP (0 gives the cap)."""
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, float(10.0 * np.log10(peak**2 / mse)))


def psnr(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    """PSNR in dB of one uint8 frame pair [H, W, 3] (peak 255)."""
    _pair(a, b)
    return psnr_from_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def mean_psnr(a: Iterable[NDArray[np.uint8]], b: Iterable[NDArray[np.uint8]]) -> float:
    """Mean of the per-frame PSNRs of two equally long frame sequences ([T, H, W, 3] arrays or lists of frames)."""
    return float(np.mean([psnr(x, y) for x, y in zip(a, b, strict=True)]))


def ssim(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    """Mean SSIM of one uint8 frame pair [H, W, C], averaged over channels.

    Matches `skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=255,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)` to about 1e-4.
    """
    _pair(a, b)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    pad = 5  # (11 - 1) // 2: skimage drops this border where the window leaves the image
    vals = []
    for ch in range(a.shape[-1]):
        x = a[..., ch].astype(np.float64)
        y = b[..., ch].astype(np.float64)

        def blur(im: NDArray[np.float64]) -> NDArray[np.float64]:
            out = cv2.GaussianBlur(im, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)
            return cast(NDArray[np.float64], out)  # cv2's stubs do not track dtypes; float64 in, float64 out

        mx, my = blur(x), blur(y)
        vx = blur(x * x) - mx * mx
        vy = blur(y * y) - my * my
        cxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        if s.shape[0] > 2 * pad and s.shape[1] > 2 * pad:
            s = s[pad:-pad, pad:-pad]
        vals.append(float(s.mean()))
    return float(np.mean(vals))
