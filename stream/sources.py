"""Frame sources by name: a file path, `webcam:N`, or `synthetic` (optionally `synthetic:PRESET`).

Synchronous iterators of uint8 RGB frames; the asyncio pipeline wraps these.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .errors import VideoError
from .video_io import VideoReader, bgr_to_rgb


@dataclass
class Source:
    """An opened source: frames, frame rate and a human-readable name."""

    frames: Iterator[np.ndarray]
    fps: float
    name: str
    live: bool  # webcam/synthetic: endless unless a frame limit is given


def open_source(spec: str, max_frames: int | None = None, size: tuple[int, int] | None = None) -> Source:
    """Open `spec`; `size` (width, height) applies to synthetic frames only."""
    if spec.startswith("webcam:"):
        try:
            index = int(spec.split(":", 1)[1])
        except ValueError:
            raise VideoError(f"bad webcam source {spec!r}: use webcam:N with N a camera index, e.g. webcam:0") from None
        return Source(_limit(_webcam(index), max_frames), 30.0, f"webcam {index}", True)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from livetok.engine.synthetic import PRESETS, synthetic_frames

        preset = spec.split(":", 1)[1] if ":" in spec else "mixed"
        if preset not in PRESETS:
            raise VideoError(f"unknown synthetic preset {preset!r}; choose one of {', '.join(PRESETS)}")
        cfg = PRESETS[preset]
        if size is not None:
            cfg = replace(cfg, width=size[0], height=size[1])
        return Source(_limit(synthetic_frames(cfg, seed=0), max_frames), 30.0, f"synthetic:{preset}", True)
    reader = VideoReader(spec)
    return Source(_limit(iter(reader), max_frames), reader.fps, str(reader.path.name), False)


def _webcam(index: int) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise VideoError(f"no camera at index {index} (is one connected, and is it free?)")
    try:
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                return  # unplugged or closed: the stream ends
            yield bgr_to_rgb(bgr)
    finally:
        cap.release()


def _limit(frames: Iterator[np.ndarray], n: int | None) -> Iterator[np.ndarray]:
    for i, f in enumerate(frames):
        if n is not None and i >= n:
            return
        yield f
