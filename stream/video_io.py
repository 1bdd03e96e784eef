"""Reading video (OpenCV) and writing H.264 MP4 (PyAV: the headless OpenCV wheel has no x264).

Frames everywhere in livetok are uint8 RGB [H, W, 3].
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import cv2
import numpy as np

from livetok.engine.frames import bgr_to_rgb

from .errors import VideoError

__all__ = ["STDOUT", "Mp4Writer", "VideoReader", "as_rgb8", "bgr_to_rgb", "read_video"]

log = logging.getLogger(__name__)


# FFmpeg's "tty" demuxer plays files with these suffixes as ANSI-art video: a text file given by
# mistake would be encoded as 4 frames of pictures of its characters rather than refused
TEXT_SUFFIXES = frozenset({".ans", ".art", ".asc", ".diz", ".ice", ".nfo", ".txt", ".vt"})


class VideoReader:
    """Frames of a video file as uint8 RGB, with its frame rate.

    Raises VideoError (one clear line) for a missing file, a file that is not a video, or a video
    with no decodable frames.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise VideoError(f"no such file: {self.path}")
        if self.path.is_dir():
            raise VideoError(f"{self.path} is a folder, not a video file")
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.path} is empty (0 bytes)")
        if self.path.suffix.lower() in TEXT_SUFFIXES:
            raise VideoError(f"{self.path} is a text file, not a video")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise VideoError(f"cannot open {self.path} as a video (not a video file, or an unsupported codec)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.5 <= fps <= 1000 else 30.0  # broken containers report 0 or absurd rates
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._read_any = False

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                break
            self._read_any = True
            yield bgr_to_rgb(bgr)
        if not self._read_any:
            raise VideoError(f"{self.path} has no decodable video frames")

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def as_rgb8(frame: np.ndarray) -> np.ndarray:
    """A frame handed to the library in RGB order -> uint8 RGB [H, W, 3].

    Accepts gray [H, W] or [H, W, 1], RGB, RGBA (alpha dropped), uint8 or uint16 (the 8 most
    significant bits kept); uint8 RGB is returned as is. Anything else is a one-line VideoError.
    """
    if not isinstance(frame, np.ndarray):
        raise VideoError(f"a frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise VideoError(f"frames must be uint8 or uint16, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return np.repeat(frame.reshape(frame.shape[0], frame.shape[1], 1), 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return frame[..., :3]
    raise VideoError(f"a frame must be [H, W] gray, [H, W, 3] RGB or [H, W, 4] RGBA, got shape {frame.shape}")


def read_video(path: str | os.PathLike[str], max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """The whole video (or its first `max_frames`) as uint8 RGB [T, H, W, 3], and its fps."""
    with VideoReader(path) as r:
        frames = []
        for f in r:
            frames.append(f)
            if max_frames is not None and len(frames) >= max_frames:
                break
        return np.stack(frames), r.fps


# The MPEG clock. Frames are stamped in it, so a frame written with its capture time (a live stream's
# timestamp_us) keeps that time to 11 µs, and the usual rates are whole ticks (30 fps: 3000; 29.97: 3003).
TIME_BASE = Fraction(1, 90_000)


# `--out -`: the video on stdout, for a player (`| ffplay -`, `| mpv -`). MP4 needs a seekable file;
# Matroska streams: one cluster per frame, flushed at once, so a player shows each frame as it comes
STDOUT = "-"


class Mp4Writer:
    """H.264 (libx264, yuv420p) MP4 writer for uint8 RGB frames; odd sizes are padded to even, and
    frames after a size change are scaled to the first frame's size. The path ``-`` (STDOUT) writes
    a live Matroska stream to stdout instead, encoded for low latency (x264's zerolatency tune).

    A frame written without a timestamp follows the previous one by 1/fps (constant frame rate).
    A frame written with `timestamp_us` (its capture time, any origin) is placed at that time
    relative to the first timestamped frame: variable frame rate, where a frame lasts until the
    next one. A live stream whose sender dropped frames (an encoder slower than the camera), lost
    them, or skipped them therefore records as long as it ran, with no frame duplicated (nothing
    to encode on a receiver that is already busy decoding, however long the gap). The last frame
    lasts 1/fps.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, crf: int = 18) -> None:
        self.path = Path(path)
        self.to_stdout = str(path) == STDOUT
        if not self.to_stdout:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self._ticks = max(1, round(1 / (self.fps * TIME_BASE)))  # one frame at the nominal rate
        self._pts = -1  # of the last frame written
        self._origin: int | None = None  # timestamp (in ticks) that maps to pts 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._size = (0, 0)  # (width, height) of the first frame
        self._resized = False
        self.frames = 0
        self.frames_resized = 0  # frames scaled to the first frame's size

    def _open(self, h: int, w: int, timestamped: bool) -> None:
        try:
            if self.to_stdout:
                self._container = av.open(sys.stdout.buffer, mode="w", format="matroska",
                                          options={"live": "1", "cluster_size_limit": "1", "flush_packets": "1"})
            else:
                self._container = av.open(str(self.path), mode="w")
        except (OSError, av.error.FFmpegError) as e:
            raise VideoError(f"cannot write {self.path}: {e}") from e
        s = self._container.add_stream("libx264", rate=self.fps)
        s.codec_context.time_base = TIME_BASE
        s.time_base = TIME_BASE
        s.width, s.height = w + w % 2, h + h % 2
        s.pix_fmt = "yuv420p"
        s.options = {"crf": str(self.crf), "preset": "veryfast"}
        if self.to_stdout:  # a viewer: no frame held back for lookahead or reordering
            s.options["tune"] = "zerolatency"
        if timestamped:
            # no B-frames: x264 gives reordered frames decode times taken from the uneven capture
            # times, and the MP4 track then ends at the last decode time, short of the last frame
            # (measured: 2.2 s instead of 3.0 s); without reordering decode time = capture time
            s.options["bf"] = "0"
        self._stream = s

    def write(self, frame: np.ndarray, timestamp_us: int | None = None) -> None:
        """Append a frame: 1/fps after the previous one, or at `timestamp_us` (see the class)."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise VideoError(f"Mp4Writer takes uint8 RGB [H, W, 3] frames, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if self._container is None:
            self._open(h, w, timestamped=timestamp_us is not None)
            self._size = (w, h)
        assert self._stream is not None and self._container is not None
        if (w, h) != self._size:
            # a stream may change size mid-way (a keyframe at the new size); an MP4 cannot, so later
            # frames are scaled to the first size, said once in the log
            if not self._resized:
                log.warning("%s: frame size changed from %dx%d to %dx%d; later frames are scaled to %dx%d",
                            self.path, *self._size, w, h, *self._size)
                self._resized = True
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
            h, w = frame.shape[:2]
            self.frames_resized += 1
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts, vf.time_base = self._next_pts(timestamp_us), TIME_BASE
        self._mux(self._stream.encode(vf))
        self.frames += 1

    def _next_pts(self, timestamp_us: int | None) -> int:
        nominal = self._pts + self._ticks if self._pts >= 0 else 0
        if timestamp_us is None:
            pts = nominal
        else:
            ticks = timestamp_us * TIME_BASE.denominator // 1_000_000
            if self._origin is None:
                self._origin = ticks - nominal
            # a sender clock stepping back (NTP) must not reorder frames: the MP4 needs rising times
            pts = max(ticks - self._origin, self._pts + 1)
        self._pts = pts
        return pts

    def _mux(self, packets: list[av.Packet[Any]]) -> None:
        assert self._container is not None
        try:
            for pkt in packets:
                # the muxer ends the track at the last packet's pts + duration: one nominal frame
                pkt.duration = self._ticks
                self._container.mux(pkt)
            if self.to_stdout:
                sys.stdout.buffer.flush()
        except BrokenPipeError:
            if not self.to_stdout:
                raise
            # the player reading the pipe quit: no more video, and nothing left for Python's own exit
            # flush to fail on (the documented way: point stdout at /dev/null)
            self._container = None
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            raise VideoError("the player reading the video on stdout quit (broken pipe)") from None

    def close(self) -> None:
        if self._container is None:
            return
        assert self._stream is not None
        self._mux(self._stream.encode())
        self._container.close()
        self._container = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
