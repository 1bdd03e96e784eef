"""Live capture as an async iterator of (frame, capture timestamp): files are played at their own
frame rate (or as fast as possible), optionally looped; cameras, URLs and the synthetic source run
at their own pace. Reading happens in a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .sources import Source, open_source

# what a stream's info says of its packets' `timestamp_us` ("clock"): every camera of one publisher is stamped
# from this one clock, so their frames can be aligned
CAPTURE_CLOCK = "capture time, the publisher's wall clock (us)"


@dataclass(frozen=True)
class Captured:
    frame: np.ndarray  # uint8 RGB [H, W, 3]
    timestamp_us: int  # wall-clock capture time (time.time), so another machine can measure latency
    index: int  # position in this capture (keeps counting across loops)


@dataclass(frozen=True)
class CaptureOptions:
    """How a sender reads its sources (`publish`, `webrtc send`, the robot outputs): see `capture`."""

    realtime: bool = True  # pace a file at its frame rate (False: as fast as possible)
    loop: bool = False  # start a file again when it ends
    max_frames: int | None = None
    size: tuple[int, int] | None = None  # (width, height) every frame is resized to

    def open(self, spec: str) -> AsyncIterator[Captured]:
        """`capture(spec)` with these options."""
        return capture(spec, realtime=self.realtime, loop=self.loop, max_frames=self.max_frames, size=self.size)

    def live(self, sources: Sequence[str]) -> bool:
        """Whether the pipeline drops the oldest frame for a slow encoder: paced files, cameras and URLs do;
        a file read as fast as possible loses nothing."""
        return self.realtime or any(s.startswith("webcam:") or "://" in s for s in sources)


def _next(it: Iterator[np.ndarray]) -> np.ndarray | None:
    return next(it, None)


async def capture(
    spec: str,
    *,
    realtime: bool = True,
    loop: bool = False,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
) -> AsyncIterator[Captured]:
    """Frames of `spec` (see `open_source`) as they would arrive live.

    Args:
        realtime: pace file and synthetic sources at their frame rate (False: as fast as possible).
        loop: start a file again when it ends.
        max_frames: stop after this many frames.
        size: (width, height) for the synthetic source.
        fps: override the pacing rate.
    """
    src: Source = await asyncio.to_thread(open_source, spec, None, size)
    rate = fps or src.fps
    paced = realtime and not src.self_paced
    t0 = time.monotonic()
    i = 0
    while max_frames is None or i < max_frames:
        frame = await asyncio.to_thread(_next, src.frames)
        if frame is None:
            if loop and not src.live:
                src = await asyncio.to_thread(open_source, spec, None, size)
                continue
            return
        if paced:
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        yield Captured(frame, time.time_ns() // 1000, i)
        i += 1
