"""`livetok webrtc send`: a source through the publishing pipeline onto a data channel to a
receiver found by HTTP signalling.

    async with SenderPeer("http://127.0.0.1:8765/offer", info) as peer:
        await run_pipeline(frames, session, peer.sink)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from livetok.engine.config import SenderConfig
from livetok.engine.runtime import Runtime

from ..capture import CaptureOptions
from ..errors import StreamError
from ..info import reader_info
from ..live import source_fps
from ..pipeline import PipelineConfig, PipelineSnapshot, run_pipeline
from ..session import SenderSession
from ..sources import public_source
from .channel_sink import ChannelSink
from .config import WebRTCConfig
from .ice import auto_addresses, offering, require_candidates, wait_connected
from .signaling import post_offer

log = logging.getLogger(__name__)

CHANNEL_LABEL = "livetok-tokens"


class SenderPeer:
    """One peer connection to a receiver, with its token channel open.

    Args:
        signal_url: the receiver's offer endpoint, e.g. http://127.0.0.1:8765/offer.
        info: the stream's description (model identity, fps...): sent with the offer, so a receiver
            running another model refuses before anything is streamed.
        stream: the stream's name at the receiver.
        cfg: channel reliability, ICE timeout and addresses.
        token: the signalling token, when the receiver requires one.
    """

    def __init__(self, signal_url: str, info: dict[str, Any], stream: str = "webrtc",
                 cfg: WebRTCConfig | None = None, token: str | None = None) -> None:
        parsed = urlparse(signal_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"bad signalling URL {signal_url!r}: use http://HOST:PORT/offer")
        self.url = signal_url if parsed.path not in ("", "/") else signal_url.rstrip("/") + "/offer"
        self.host = parsed.hostname
        self.info = info
        self.stream = stream
        self.cfg = cfg or WebRTCConfig()
        self.token = token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: offline and deterministic
        self._sink: ChannelSink | None = None

    @property
    def sink(self) -> ChannelSink:
        if self._sink is None:
            raise StreamError("the peer is not connected")
        return self._sink

    async def __aenter__(self) -> SenderPeer:
        try:
            await self._connect()
        except BaseException:
            await self.pc.close()
            raise
        return self

    async def _connect(self) -> None:
        # unreliable: unordered, never retransmitted (a loss is repaired by a keyframe instead)
        extra: dict[str, Any] = {"ordered": False, "maxRetransmits": 0} if self.cfg.unreliable else {}
        channel = self.pc.createDataChannel(CHANNEL_LABEL, **extra)
        opened = asyncio.Event()
        channel.on("open", opened.set)
        with offering(self.cfg.ice_addresses if self.cfg.ice_addresses is not None else auto_addresses(self.host)):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        require_candidates(self.pc.localDescription.sdp, "sender")
        answer = await post_offer(self.url, {"sdp": self.pc.localDescription.sdp, "type": "offer",
                                             "stream": self.stream, "info": self.info,
                                             "unreliable": self.cfg.unreliable}, self.token)
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await wait_connected(self.pc, self.cfg.ice_timeout_s, self.url, opened)
        self._sink = ChannelSink(channel, self.cfg)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._sink is not None and et is None:
                await self._sink.drain()  # the last packets (end of stream) leave before the close
        finally:
            await self.pc.close()


@dataclass(frozen=True, kw_only=True)
class WebRTCSendSummary(PipelineSnapshot):
    """What `webrtc send` returns: the pipeline's stats, the receiver's keyframe requests, the channel mode."""

    keyframe_requests: int
    unreliable: bool


async def webrtc_send(
    model: Runtime,
    source: str,
    signal_url: str,
    sender: SenderConfig,
    cfg: WebRTCConfig | None = None,
    capture: CaptureOptions = CaptureOptions(),
    *,
    stream: str = "webrtc",
    token: str | None = None,
    on_stats: Callable[[PipelineSnapshot], Any] | None = None,
    stop: asyncio.Event | None = None,
) -> WebRTCSendSummary:
    """Capture `source` (`capture`), tokenize it live and stream the packets to the receiver at `signal_url`
    until the source ends or `stop` is set (the end-of-stream packet goes out either way); returns
    the pipeline's statistics."""
    cfg = cfg or WebRTCConfig()
    session = SenderSession(model, sender)
    info: dict[str, Any] = {"model_id": model.identity.hex(), "preset": model.cfg.name,
                            "fps": source_fps(source), "keyframe_interval": sender.keyframe_interval,
                            "bits_per_index": session.bits, "policy": sender.budget.policy,
                            "source": public_source(source), **reader_info(model, sender)}
    frames = capture.open(source)
    async with SenderPeer(signal_url, info, stream, cfg, token) as peer:
        result = await run_pipeline(frames, session, peer.sink,
                                    PipelineConfig(size=capture.size, drop=capture.live([source])),
                                    on_stats=on_stats, stop=stop)
        summary = WebRTCSendSummary.extending(result, keyframe_requests=peer.sink.keyframe_requests,
                                              unreliable=cfg.unreliable)
    return summary
