"""Runtime exceptions of livetok.stream (bytes errors are `livetok.stream.wire.PacketError`)."""

from __future__ import annotations


class StreamError(Exception):
    """A stream could not be read, written or continued; the message says why, in one line."""


class VideoError(StreamError):
    """A video source or sink failed: missing file, not a video, no frames, no camera..."""
