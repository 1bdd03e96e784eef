"""A fake camera for Chromium (`--use-file-for-fake-video-capture`): a .y4m written from a real clip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from livetok.stream.video_io import read_video


def write_y4m(clip: Path, out: Path, frames: int = 60, size: tuple[int, int] | None = None, fps: int = 30) -> Path:
    """Write `frames` frames of `clip` as YUV4MPEG2 4:2:0 (Chromium loops it), resized to `size` (w, h)."""
    video, _ = read_video(clip, max_frames=frames)
    if size is not None:
        video = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in video])
    h, w = video.shape[1:3]
    with out.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in video:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return out
