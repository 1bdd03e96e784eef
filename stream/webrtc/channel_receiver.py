"""The receiving end of a token data channel: binary messages are packets for the shared
`PacketReceiver` (ordering, loss detection, decoding, counters); its keyframe requests go back as
JSON text on the same channel; the channel closing ends the stream."""

from __future__ import annotations

import asyncio
import logging

from aiortc import RTCDataChannel

from livetok.engine.runtime import Runtime

from ..errors import StreamError
from ..packet_receiver import PacketReceiver
from .config import WebRTCConfig

log = logging.getLogger(__name__)


class ChannelReceiver(PacketReceiver):
    """Decodes the packets of one sender's data channel; iterate it for `ReceivedFrame`s."""

    def __init__(self, model: Runtime, cfg: WebRTCConfig | None = None) -> None:
        self.cfg = cfg or WebRTCConfig()
        super().__init__(model, gap_timeout_s=self.cfg.gap_timeout_s, end_on_eos=True)
        self.channel: RTCDataChannel | None = None
        self.name = "webrtc"

    def attach(self, channel: RTCDataChannel, name: str) -> None:
        """Start receiving on `channel` as stream `name`."""
        if self.channel is not None:
            raise StreamError("this receiver already has a data channel")
        self.channel, self.name = channel, name
        if not channel.ordered:
            self.gap_timeout_s = self.cfg.unordered_gap_timeout_s
            for s in self.streams.values():
                s.order.gap_timeout_s = self.gap_timeout_s
        # messages arrive in callbacks; one consumer task keeps them in order (decoding awaits).
        # The queue is unbounded: a data channel cannot push back, and a reliable stream must not
        # drop a packet (the decoder needs every one); the sender's own drop-oldest keeps it short.
        inbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        channel.on("message", inbox.put_nowait)
        channel.on("close", lambda: inbox.put_nowait(None))
        self.add_task(asyncio.create_task(self._consume(inbox)))
        self.start_ticking()

    async def _consume(self, inbox: asyncio.Queue[bytes | str | None]) -> None:
        try:
            while (m := await inbox.get()) is not None:
                if isinstance(m, str):
                    log.debug("ignoring a text message from the sender: %.80s", m)
                    continue
                await self.feed(self.name, m)
            await self.finish()  # the sender closed the channel: the stream is over
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # hand any failure (e.g. a model mismatch) to the iterating caller
            await self.fail(e)

    async def send_keyframe_request(self, stream: str, payload: str) -> None:
        if self.channel is None or self.channel.readyState != "open":
            raise StreamError("the data channel is not open")
        self.channel.send(payload)
