"""`livetok webrtc recv`: an HTTP offer endpoint that accepts one sender, receives its token
channel and decodes it with the shared `PacketReceiver` (same JSON report as `livetok receive`).

    async with ReceiverEndpoint(model, SignalingConfig(port=8765)) as ep:
        async for f in ep.receiver:      # ReceivedFrame
            ...
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from livetok.engine.runtime import Runtime

from ..cancelling import cancel_and_wait
from ..errors import StreamError
from ..live import RecordOptions, record_frames
from ..summaries import WebRTCReceiverSummary
from .channel_receiver import ChannelReceiver
from .config import SignalingConfig, WebRTCConfig
from .ice import auto_addresses, offering, require_candidates, wait_connected
from .signaling import Answer, RunningSite, SignalingRefused, make_app, start_site

log = logging.getLogger(__name__)

MAX_STREAM_NAME = 64


class ReceiverEndpoint:
    """Listens for one sender's offer; `receiver` yields its decoded frames.

    Args:
        model: the decoder; an offer from another model is refused (HTTP 409 naming both ids).
        signaling: where to listen (127.0.0.1 by default), request limits, optional token.
        cfg: ICE timeout and addresses, gap timeout.
    """

    def __init__(self, model: Runtime, signaling: SignalingConfig | None = None,
                 cfg: WebRTCConfig | None = None) -> None:
        self.signaling = signaling or SignalingConfig()
        self.cfg = cfg or WebRTCConfig()
        self.receiver = ChannelReceiver(model, self.cfg)
        self.pc: RTCPeerConnection | None = None
        self.site: RunningSite | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The offer endpoint to give the sender."""
        if self.site is None:
            raise StreamError("the endpoint is not listening")
        return f"{self.site.url}/offer"

    async def __aenter__(self) -> ReceiverEndpoint:
        app = make_app(self.signaling, self._on_offer)
        self.site = await start_site(app, self.signaling.host, self.signaling.port)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        # awaited, not only cancelled: a watcher still failing the receiver must not outlive it
        await cancel_and_wait(self._watch)
        await self.receiver.stop_tasks()
        if self.pc is not None:
            await self.pc.close()
        if self.site is not None:
            await self.site.close()

    async def _on_offer(self, body: dict[str, Any], request: web.Request) -> Answer:
        if self.pc is not None:
            raise SignalingRefused(409, "this receiver already has a sender")
        name = str(body.get("stream") or "webrtc")[:MAX_STREAM_NAME]
        info = body.get("info") if isinstance(body.get("info"), dict) else {}
        assert isinstance(info, dict)
        mine = self.receiver.model_id.hex()
        if info.get("model_id") and info["model_id"] != mine:
            log.warning("refused a sender of model %s (this receiver runs model %s)", info["model_id"], mine)
            raise SignalingRefused(409, f"stream {name!r} is for model {info['model_id']}, "
                                        f"this receiver runs model {mine}")
        self.receiver.feed_info(name, json.dumps(info))
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        opened = asyncio.Event()

        @pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            self.receiver.attach(channel, name)
            opened.set()

        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        addresses = self.cfg.ice_addresses
        with offering(addresses if addresses is not None else auto_addresses(self.signaling.host)):
            await pc.setLocalDescription(await pc.createAnswer())
        require_candidates(pc.localDescription.sdp, "receiver")
        self._watch = asyncio.create_task(self._watch_connection(pc, opened, request.remote or "the sender"))
        return {"sdp": pc.localDescription.sdp, "type": "answer"}

    async def _watch_connection(self, pc: RTCPeerConnection, opened: asyncio.Event, peer: str) -> None:
        try:
            await wait_connected(pc, self.cfg.ice_timeout_s, peer, opened)
        except StreamError as e:
            await self.receiver.fail(e)


async def webrtc_recv(
    model: Runtime,
    signaling: SignalingConfig,
    cfg: WebRTCConfig | None = None,
    record: RecordOptions = RecordOptions(),
    *,
    on_listening: Callable[[str], Any] | None = None,
    stop: asyncio.Event | None = None,
) -> WebRTCReceiverSummary:
    """Listen, receive one sender's stream until it ends (or `record.idle_timeout_s` without a frame —
    None or 0: never —, `record.max_frames`, or `stop`); returns the receiver's summary (DESIGN.md §6
    keys, `outputs` and `ended_by`, as `livetok receive`, and `signal_url`). `record.on_status`: lines
    while no frame comes."""
    async with ReceiverEndpoint(model, signaling, cfg) as ep:
        if on_listening is not None:
            on_listening(ep.url)
        drained = await record_frames(ep.receiver, record, stop=stop, waiting_for=f"a sender at {ep.url}")
        summary = WebRTCReceiverSummary.extending(ep.receiver.summary().recorded(drained), signal_url=ep.url)
    return summary
