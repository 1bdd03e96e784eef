"""What the decoder's output layer can draw at all (issue 23, fifteenth session).

The decoder adds `pixel_shuffle(to_rgb(f))` to the previous reconstruction, and `to_rgb` is one 1×1 convolution
from the stride-8 feature (width 96) to an 8×8 RGB cell (192 values). Every reconstruction since a keyframe is
therefore a sum of vectors in the same column space of `to_rgb` (plus its bias), clamped: the part of a cell
outside that space is never drawn, however many tokens a still scene receives. This prints, per clip, the PSNR
of the eval frames projected onto the span of `to_rgb`'s top-k singular directions (the weak directions need
features thousands of times larger to be used), beside the best k-dimensional subspace of the clip itself
(its PCA), and `to_rgb`'s singular values.

usage: python experiments/output_span.py ../shared/data/eval/*.mkv [--weights W] [--frames 48]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from livetok.engine.metrics import psnr_from_mse
from livetok.stream.video_io import read_video

CELL = 8  # the model's stride
KS = (96, 64, 48, 32, 16)


def cells(frames: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T*h*w, 192] cells in [-1, 1], in pixel_unshuffle's channel order (c, dy, dx)."""
    t, h, w, _ = frames.shape
    x = frames.astype(np.float64) / 127.5 - 1.0
    x = x.reshape(t, h // CELL, CELL, w // CELL, CELL, 3).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(-1, 3 * CELL * CELL)


def projected_psnr(c: np.ndarray, basis: np.ndarray) -> float:
    """PSNR (8-bit scale) of the cells c projected onto the orthonormal columns of basis."""
    err = c - (c @ basis) @ basis.T
    return psnr_from_mse(float((err**2).mean()), peak=2.0)  # cells span [-1, 1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clips", nargs="+")
    p.add_argument("--weights", default="engine/weights/default.safetensors")
    p.add_argument("--frames", type=int, default=48)
    a = p.parse_args()
    w = load_file(a.weights)["decoder.to_rgb.weight"][:, :, 0, 0].astype(np.float64)  # [192, width]
    u, s, _ = np.linalg.svd(w, full_matrices=False)
    print("to_rgb singular values at 0, 16, 32, 48, 64, 80, last:",
          " ".join(f"{s[i]:.2g}" for i in (0, 16, 32, 48, 64, 80, len(s) - 1)))
    print("clip: to_rgb span top-k " + "/".join(map(str, KS)) + " | the clip's own PCA " + "/".join(map(str, KS)))
    for clip in a.clips:
        frames, _ = read_video(clip, a.frames)
        c = cells(frames)
        own = np.linalg.svd(c.T @ c)[0]
        span = [projected_psnr(c, u[:, :k]) for k in KS]
        pca = [projected_psnr(c, own[:, :k]) for k in KS]
        print(f"{Path(clip).name}: " + " ".join(f"{v:.2f}" for v in span) + " | " + " ".join(f"{v:.2f}" for v in pca))


if __name__ == "__main__":
    main()
