"""The sending end of a token data channel: the pipeline's `PacketSink` (packets as binary
messages) and the reader of the receiver's keyframe requests (JSON text messages, same channel)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from aiortc import RTCDataChannel

from ..errors import StreamError
from .config import MAX_MESSAGE_BYTES, WebRTCConfig

log = logging.getLogger(__name__)


class ChannelSink:
    """Sends packets on an open data channel, waiting while too much is queued on it."""

    def __init__(self, channel: RTCDataChannel, cfg: WebRTCConfig | None = None) -> None:
        self.channel = channel
        self.cfg = cfg or WebRTCConfig()
        self.keyframe_requests = 0
        self.packets_sent = 0
        self._requested = False
        self._low = asyncio.Event()
        channel.bufferedAmountLowThreshold = self.cfg.buffer_high_bytes // 2
        channel.on("bufferedamountlow", self._low.set)
        channel.on("message", self._on_message)

    def _on_message(self, message: bytes | str) -> None:
        if not isinstance(message, str):
            log.warning("ignoring a binary message from the receiver")
            return
        try:
            req = json.loads(message)
        except json.JSONDecodeError:
            log.warning("ignoring a malformed control message from the receiver")
            return
        if isinstance(req, dict) and req.get("type") == "keyframe":
            self._requested = True
            self.keyframe_requests += 1

    def take_keyframe_request(self) -> bool:
        """True once per batch of keyframe requests received since the last call."""
        r, self._requested = self._requested, False
        return r

    def _check_open(self) -> None:
        if self.channel.readyState != "open":
            raise StreamError(f"the data channel to the receiver is {self.channel.readyState}")

    async def send(self, data: bytes) -> None:
        if len(data) > MAX_MESSAGE_BYTES:
            raise StreamError(f"a packet of {len(data)} bytes exceeds the data channel's {MAX_MESSAGE_BYTES}-byte "
                              f"message limit: use a smaller --size")
        # backpressure: the SCTP stack runs on this event loop, so waiting lets it drain
        while self.channel.bufferedAmount > self.cfg.buffer_high_bytes:
            self._check_open()
            self._low.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._low.wait(), 0.1)
        self._check_open()
        self.channel.send(data)
        self.packets_sent += 1

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until everything sent has left the channel's buffer (before closing the connection)."""
        deadline = time.monotonic() + timeout_s
        while self.channel.readyState == "open" and self.channel.bufferedAmount > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
