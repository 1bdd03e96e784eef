"""Outgoing video tracks fed with numpy frames: the newest frame wins (a slow viewer never makes
the server queue video), and frames are stamped with the time they were handed over."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import av
import numpy as np
from aiortc import MediaStreamTrack

VIDEO_CLOCK = 90_000  # RTP video clock rate


class LatestFrameTrack(MediaStreamTrack):
    """A video track that sends whatever was last `put` (uint8 RGB [H, W, 3])."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._slot: asyncio.Queue[np.ndarray] = asyncio.Queue(1)
        self._t0 = time.monotonic()
        self._last_pts = -1
        self.frames_sent = 0

    def put(self, frame: np.ndarray) -> None:
        if self._slot.full():
            self._slot.get_nowait()  # drop the older frame: only the newest is worth sending
        self._slot.put_nowait(frame)

    async def recv(self) -> av.VideoFrame:
        rgb = await self._slot.get()
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        # pts from the wall clock: the browser's jitter buffer then sees the real frame spacing
        pts = max(int((time.monotonic() - self._t0) * VIDEO_CLOCK), self._last_pts + 1)
        out.pts, out.time_base = pts, Fraction(1, VIDEO_CLOCK)
        self._last_pts = pts
        self.frames_sent += 1
        return out
