"""Frame sources by name: a file path, an RTSP/HTTP URL, `webcam:N`, or `synthetic`
(optionally `synthetic:PRESET`).

Synchronous iterators of uint8 RGB frames; `stream/capture.py` turns them into paced async ones.
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
    live: bool  # webcam/URL/synthetic: endless unless a frame limit is given
    self_paced: bool = False  # cameras and network streams deliver frames at their own rate


def public_source(spec: str) -> str:
    """`spec` as it may be shared with others (a stream's info on the broker, Zenoh and Foxglove, the metadata of
    `.ltk` and MCAP files): a URL's user name and password become `***` (`rtsp://user:pass@cam/live` ->
    `rtsp://***@cam/live`; scheme, host, port and path kept); anything else is returned as it is."""
    if "://" not in spec:
        return spec
    scheme, rest = spec.split("://", 1)
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" in rest[:end]:  # user[:password]@host
        return f"{scheme}://***@{rest[:end].rpartition('@')[2]}{rest[end:]}"
    if "@" in rest:  # an '@' after a '/', '?' or '#' (a password with one of them in it?): all before it goes
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return spec


def open_source(spec: str, max_frames: int | None = None, size: tuple[int, int] | None = None) -> Source:
    """Open `spec`; `size` (width, height) applies to synthetic frames only."""
    if spec.startswith("webcam:"):
        index = _webcam_index(spec)
        return Source(_limit(_webcam(index), max_frames), 30.0, f"webcam {index}", True, True)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from livetok.engine.synthetic import PRESETS, synthetic_frames

        preset = _synthetic_preset(spec)
        cfg = PRESETS[preset]
        if size is not None:
            cfg = replace(cfg, width=size[0], height=size[1])
        return Source(_limit(synthetic_frames(cfg, seed=0), max_frames), 30.0, f"synthetic:{preset}", True)
    if "://" in spec:
        return Source(_limit(_url(spec), max_frames), 30.0, public_source(spec), True, True)
    reader = VideoReader(spec)
    return Source(_limit(iter(reader), max_frames), reader.fps, str(reader.path.name), False)


def frame_total(spec: str, max_frames: int | None = None) -> int | None:
    """How many frames `open_source(spec, max_frames)` will give, when that is known before reading
    (for progress bars): a file's frame count from its container (capped at `max_frames`), or
    `max_frames` for a live source; None when unknown. A file that cannot be opened raises the
    same one-line VideoError `open_source` would, and so does a malformed `webcam:N` or an unknown
    synthetic preset. Cameras and URLs are not opened here."""
    if spec.startswith("webcam:"):
        _webcam_index(spec)
        return max_frames
    if spec == "synthetic" or spec.startswith("synthetic:"):
        _synthetic_preset(spec)
        return max_frames
    if "://" in spec:
        return max_frames
    with VideoReader(spec) as reader:
        count = reader.frame_count or None  # some containers do not say
    if count is None or max_frames is None:
        return max_frames if count is None else count
    return min(count, max_frames)


def _webcam_index(spec: str) -> int:
    try:
        return int(spec.split(":", 1)[1])
    except ValueError:
        raise VideoError(f"bad webcam source {spec!r}: use webcam:N with N a camera index, e.g. webcam:0") from None


def _synthetic_preset(spec: str) -> str:
    from livetok.engine.synthetic import PRESETS

    preset = spec.split(":", 1)[1] if ":" in spec else "mixed"
    if preset not in PRESETS:
        raise VideoError(f"unknown synthetic preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return preset


def _url(url: str) -> Iterator[np.ndarray]:
    """An RTSP/HTTP(S) stream through OpenCV's FFmpeg backend (a live source: no pacing)."""
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise VideoError(f"cannot open stream {public_source(url)} (unreachable, or not a video stream)")
    yield from _read(cap, f"stream {public_source(url)}")


def _webcam(index: int) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise VideoError(f"no camera at index {index} (is one connected, and is it free?)")
    yield from _read(cap, f"camera {index}")


def _read(cap: cv2.VideoCapture, what: str) -> Iterator[np.ndarray]:
    """Frames until the device ends (unplugged, closed: the stream ends), released in every case;
    a driver error mid-stream is one VideoError line, after the frames already delivered."""
    count = 0
    try:
        while True:
            try:
                ok, bgr = cap.read()
                frame = bgr_to_rgb(bgr) if ok and bgr is not None else None
            except cv2.error as e:
                reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise VideoError(f"{what} failed after {count} frames: {reason}") from None
            if frame is None:
                return
            count += 1
            yield frame
    finally:
        cap.release()


def _limit(frames: Iterator[np.ndarray], n: int | None) -> Iterator[np.ndarray]:
    for i, f in enumerate(frames):
        if n is not None and i >= n:
            return
        yield f
