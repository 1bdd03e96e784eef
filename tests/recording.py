"""Helpers for the recording tests (issue 14 item 1): a live source that makes the publisher drop
every other frame, and an MP4's duration as a player sees it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import av

from livetok.stream.capture import Captured


async def every_other_dropped(frames: AsyncIterator[Captured]) -> AsyncIterator[Captured]:
    """The captured frames, handed over in pairs with no pause between the two: the pipeline's
    capture queue (one slot, drop-oldest) then drops the first of each pair, as it does when the
    encoder is slower than the camera. Both keep their real capture times; the held frame is late
    by one frame interval, a real publisher's frames by up to an encoder step."""
    held: Captured | None = None
    async for c in frames:
        if held is None:
            held = c
            continue
        yield held
        yield c  # no await between the two: the queue's consumer cannot take `held` first
        held = None
    if held is not None:
        yield held


def mp4_duration_s(path: str | os.PathLike[str]) -> tuple[float, int]:
    """(duration in seconds, frames) of an MP4's video track, read back with PyAV."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = sum(1 for p in c.demux(s) if p.size)
        assert s.duration is not None and s.time_base is not None
        return float(s.duration * s.time_base), frames
