"""`livetok webrtc serve`: the browser webcam demo. Serves the page (package data, nothing fetched
from anywhere at run time) and answers each browser's offer with a `DemoPeer`: camera in,
reconstruction + token heat-map + per-frame stats out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from livetok.engine.config import SenderConfig
from livetok.engine.runtime import Runtime

from ..errors import StreamError
from .config import SignalingConfig
from .demo_peer import DemoPeer
from .ice import auto_addresses, offering, require_candidates, wait_connected
from .signaling import Answer, SignalingRefused, make_app, start_site

log = logging.getLogger(__name__)

ASSETS = ("index.html", "app.js", "chart.js", "style.css")
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo server.

    Attributes:
        size: the largest frame tokenized, (width, height); the camera's aspect is kept.
        target_kbps: the rate target a new page starts with.
        min_kbps, max_kbps: the slider's range.
        max_peers: browsers served at once (each costs a model run per frame).
        ice_timeout_s: a browser whose connection is not up by then is dropped.
    """

    size: tuple[int, int] = (256, 192)
    target_kbps: float = 40.0
    min_kbps: float = 2.0
    max_kbps: float = 400.0
    max_peers: int = 4
    ice_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if min(self.size) < 8:
            raise ValueError(f"the demo size must be at least 8x8, got {self.size}")
        if not 0 < self.min_kbps <= self.target_kbps <= self.max_kbps:
            raise ValueError(f"need 0 < min_kbps <= target_kbps <= max_kbps, got {self.min_kbps}, "
                             f"{self.target_kbps}, {self.max_kbps}")
        if self.max_peers < 1:
            raise ValueError(f"max_peers must be >= 1, got {self.max_peers}")


def _asset(name: str) -> bytes:
    return resources.files("livetok.stream.webrtc").joinpath("assets", name).read_bytes()


class DemoServer:
    """The demo's web app and its live peers."""

    def __init__(self, model: Runtime, sender: SenderConfig, signaling: SignalingConfig | None = None,
                 demo: DemoConfig | None = None) -> None:
        self.model = model
        self.sender = sender
        self.signaling = signaling or SignalingConfig(port=8080)
        self.demo = demo or DemoConfig()
        self.peers: dict[RTCPeerConnection, DemoPeer] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self.app = make_app(self.signaling, self._on_offer)
        for name in ASSETS:
            self.app.router.add_get("/" if name == "index.html" else f"/{name}", self._static(name))
        self.app.router.add_get("/config.json", self._config)
        self.app.on_shutdown.append(self._shutdown)

    def _static(self, name: str) -> Callable[[web.Request], Any]:
        body = _asset(name)  # read once: a missing asset is an install error, reported at start
        ctype = CONTENT_TYPES[name[name.rindex("."):]]

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type=ctype, headers={"Cache-Control": "no-cache"})

        return handler

    async def _config(self, request: web.Request) -> web.Response:
        d = self.demo
        return web.json_response({"target_kbps": d.target_kbps, "min_kbps": d.min_kbps, "max_kbps": d.max_kbps,
                                  "width": d.size[0], "height": d.size[1], "preset": self.model.cfg.name,
                                  "token_required": self.signaling.token is not None})

    async def _on_offer(self, body: dict[str, Any], request: web.Request) -> Answer:
        if len(self.peers) >= self.demo.max_peers:
            raise SignalingRefused(503, f"the demo already serves {self.demo.max_peers} browsers; try again later")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        d = self.demo
        peer = DemoPeer(self.model, self.sender, d.size, d.target_kbps, (d.min_kbps, d.max_kbps),
                        probe=body.get("probe") is True)
        self.peers[pc] = peer

        @pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            peer.attach_channel(channel)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and peer.task is None:
                peer.start(track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._drop(pc)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
            videos = [t for t in pc.getTransceivers() if t.kind == "video"]
            if len(videos) < 2:
                raise SignalingRefused(400, "the page must offer two video transceivers (camera and heat-map)")
            # addTrack fills the offered transceivers in order: the camera's one carries the
            # reconstruction back, the second one the heat-map
            pc.addTrack(peer.recon)
            pc.addTrack(peer.heat)
            # the host's addresses plus loopback, whatever the page was served on: a browser on this
            # host offers its interface addresses (Chromium offers loopback only when told to), and
            # traffic between two addresses of one host never leaves it
            with offering(auto_addresses(None)):
                await pc.setLocalDescription(await pc.createAnswer())
            require_candidates(pc.localDescription.sdp, "demo server")
        except BaseException:
            await self._drop(pc)
            raise
        task = asyncio.create_task(self._watch(pc))
        self._watchers.add(task)  # a reference, or the task could be collected while it runs
        task.add_done_callback(self._watchers.discard)
        return {"sdp": pc.localDescription.sdp, "type": "answer"}

    async def _watch(self, pc: RTCPeerConnection) -> None:
        try:
            await wait_connected(pc, self.demo.ice_timeout_s, "the browser")
        except StreamError as e:
            log.warning("%s", e)
            await self._drop(pc)

    async def _drop(self, pc: RTCPeerConnection) -> None:
        peer = self.peers.pop(pc, None)
        if peer is not None:
            await peer.stop()
        await pc.close()

    async def _shutdown(self, app: web.Application) -> None:
        await asyncio.gather(*(self._drop(pc) for pc in list(self.peers)), return_exceptions=True)


async def serve(model: Runtime, sender: SenderConfig, signaling: SignalingConfig, demo: DemoConfig | None = None,
                *, on_listening: Callable[[str], Any] | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the demo until `stop` is set (or for ever; Ctrl-C ends `livetok webrtc serve`)."""
    server = DemoServer(model, sender, signaling, demo)
    site = await start_site(server.app, signaling.host, signaling.port)
    try:
        if on_listening is not None:
            on_listening(site.url + "/")
        await (stop or asyncio.Event()).wait()
    finally:
        with contextlib.suppress(Exception):
            await server._shutdown(server.app)
        await site.close()
