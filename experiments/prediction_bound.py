"""How much of each eval frame the receiver already has (issue 23, fourteenth session): the PSNR of predicting
frame t from the true frame t-1, unmoved and with the best integer shift (within ±R px) per 8×8 block, per clip.
A bound on what temporal prediction alone can give, beside what the model reconstructs.

usage: python experiments/prediction_bound.py ../shared/data/eval/*.mkv [--radius 6]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from livetok.engine.metrics import psnr
from livetok.stream.video_io import read_video

CELL = 8  # the model's stride


def block_matched(prev: np.ndarray, cur: np.ndarray, radius: int) -> np.ndarray:
    """prev with each 8×8 block of cur replaced by the shifted block of prev that matches it best (MSE)."""
    h, w, _ = cur.shape
    pad = np.pad(prev.astype(np.float32), ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    target = cur.astype(np.float32)
    best = np.full((h // CELL, w // CELL), np.inf)
    out = np.zeros_like(target)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = pad[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
            err = ((shifted - target) ** 2).reshape(h // CELL, CELL, w // CELL, CELL, 3).mean(axis=(1, 3, 4))
            better = err < best
            best = np.where(better, err, best)
            out = np.where(np.kron(better, np.ones((CELL, CELL)))[..., None].astype(bool), shifted, out)
    return out.round().astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clips", nargs="+")
    p.add_argument("--radius", type=int, default=6)
    a = p.parse_args()
    for clip in a.clips:
        frames, _ = read_video(clip)
        still = [psnr(frames[t - 1], frames[t]) for t in range(1, len(frames))]
        moved = [psnr(block_matched(frames[t - 1], frames[t], a.radius), frames[t]) for t in range(1, len(frames))]
        print(f"{Path(clip).name}: unmoved {np.mean(still):.2f} dB, "
              f"block-matched ±{a.radius} px {np.mean(moved):.2f} dB")


if __name__ == "__main__":
    main()
