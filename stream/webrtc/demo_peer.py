"""One browser of the webcam demo: its camera track runs through the publishing pipeline
(drop-oldest capture, encode in a worker thread, packetize); every packet is decoded again as a
receiver would, and the reconstruction and the token heat-map go back as video tracks, with one
JSON stats message per frame on the browser's data channel. The page's rate slider sets the
rate-control target through the same channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCDataChannel
from aiortc.mediastreams import MediaStreamError

from livetok.engine.config import SenderConfig
from livetok.engine.rate_control import RateControlConfig, retarget
from livetok.engine.runtime import Runtime

from ..capture import Captured
from ..heatmap import token_heatmap
from ..pipeline import PipelineConfig, run_pipeline
from ..session import ReceiverSession, SenderSession
from ..stages import percentile
from .tracks import LatestFrameTrack

log = logging.getLogger(__name__)

STATS_WINDOW_S = 1.0  # kbit/s and fps on the page are measured over this trailing window


def fit_size(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    """The largest size within `box` (w, h) with the camera's aspect, both sides multiples of 8."""
    scale = min(box[0] / width, box[1] / height, 1.0)
    return max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)


class DemoPeer:
    """The server side of one browser.

    Args:
        model: the tokenizer (shared by all browsers; each has its own stream state).
        sender: budget policy etc.; the rate target is replaced by the page's slider.
        box: the largest frame size tokenized (the camera's aspect is kept).
        target_kbps: the rate target until the page sets one.
        kbps_range: the slider's limits; targets outside are clipped.
    """

    def __init__(self, model: Runtime, sender: SenderConfig, box: tuple[int, int], target_kbps: float,
                 kbps_range: tuple[float, float], probe: bool = False) -> None:
        self.box = box
        # latency probe (the page's ?probe=1): the page's "camera" spells a frame code; the server
        # sends back, in place of each reconstruction and at the moment it is decoded, the camera
        # frame it was decoded for, so the page can tell which of its frames came back when
        self.probe = probe
        self._inputs: dict[int, np.ndarray] = {}  # capture timestamp -> camera frame (probe mode)
        self.kbps_range = kbps_range
        self.session = SenderSession(model, sender)
        self.decoder = ReceiverSession(model)
        self.recon = LatestFrameTrack()
        self.heat = LatestFrameTrack()
        self.channel: RTCDataChannel | None = None
        self.target_kbps = 0.0
        self.set_target(target_kbps)
        self.decoded = 0
        self.server_ms: deque[float] = deque(maxlen=300)  # capture (arrival) -> decoded, last frames
        self._recent: deque[tuple[float, int]] = deque()  # (time, bits) of the last second's packets
        self._pipeline: dict[str, Any] = {}
        self.task: asyncio.Task[dict[str, Any]] | None = None

    # -- control -------------------------------------------------------------------------------

    def set_target(self, kbps: float) -> None:
        lo, hi = self.kbps_range
        self.target_kbps = min(hi, max(lo, float(kbps)))
        rc = RateControlConfig(target_bps=self.target_kbps * 1000.0)
        # the encoder thread reads `sender` once per frame: replacing it is safe between frames; the
        # rate state (written only here and by packetize, both on the event loop) starts a new account
        self.session.sender = replace(self.session.sender, rate_control=rc)
        self.session.state = replace(self.session.state, rate=retarget(self.session.state.rate))

    def attach_channel(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        channel.on("message", self._on_message)

    def _on_message(self, message: bytes | str) -> None:
        if not isinstance(message, str):
            return
        try:
            msg = json.loads(message)
            if isinstance(msg, dict) and msg.get("type") == "target":
                self.set_target(float(msg["kbps"]))
                self._send({"type": "target", "kbps": self.target_kbps})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignoring a malformed message from the page: %.80s", message)

    def _send(self, obj: dict[str, Any]) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps(obj))

    # -- the pipeline --------------------------------------------------------------------------

    def start(self, camera: MediaStreamTrack) -> None:
        self.task = asyncio.create_task(self._run(camera))

    async def _frames(self, camera: MediaStreamTrack) -> AsyncIterator[Captured]:
        i = 0
        while True:
            try:
                frame = await camera.recv()
            except MediaStreamError:
                return  # the browser closed the track or the connection
            if not isinstance(frame, av.VideoFrame):
                continue
            w, h = fit_size(frame.width, frame.height, self.box)
            # swscale resizes and converts in one pass; only this small frame enters the pipeline
            rgb = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
            ts = time.time_ns() // 1000
            if self.probe:
                self._inputs[ts] = rgb
                while len(self._inputs) > 64:  # frames the pipeline dropped never come back
                    del self._inputs[next(iter(self._inputs))]
            yield Captured(rgb, ts, i)
            i += 1

    async def _run(self, camera: MediaStreamTrack) -> dict[str, Any]:
        def on_stats(d: dict[str, Any]) -> None:
            self._pipeline = d
            self._send({"type": "pipeline", **{k: v for k, v in d.items() if k != "stages"}, "stages": d["stages"]})

        try:
            return await run_pipeline(self._frames(camera), self.session, self, PipelineConfig(drop=True),
                                      on_stats=on_stats, send_eos=False)
        except Exception as e:  # one browser's failure must not take the server down
            log.warning("demo stream ended: %s", e)
            self._send({"type": "error", "message": str(e)})
            return {}

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    # PacketSink: what a receiver would do with each packet, then show it
    def take_keyframe_request(self) -> bool:
        return False

    async def send(self, data: bytes) -> None:
        packet, frame = await asyncio.to_thread(self.decoder.decode_packet, data)
        heat = token_heatmap(frame, packet.mask, (packet.grid_h, packet.grid_w))
        shown = self._inputs.pop(packet.timestamp_us, None) if self.probe else None
        self.recon.put(frame if shown is None else shown)
        self.heat.put(heat)
        self.decoded += 1
        now = time.monotonic()
        ms = (time.time_ns() // 1000 - packet.timestamp_us) / 1e3
        self.server_ms.append(ms)
        self._recent.append((now, 8 * len(data)))
        while self._recent and now - self._recent[0][0] > STATS_WINDOW_S:
            self._recent.popleft()
        span = max(now - self._recent[0][0], 1e-3) if len(self._recent) > 1 else STATS_WINDOW_S
        lat = list(self.server_ms)
        self._send({
            "type": "frame", "frame": packet.frame_index, "keyframe": packet.keyframe, "tokens": packet.k,
            "positions": packet.n, "bits": 8 * len(data), "width": packet.width, "height": packet.height,
            "kbps": round(sum(b for _, b in self._recent) / span / 1000.0, 2),
            "fps": round((len(self._recent) - 1) / span, 2) if len(self._recent) > 1 else 0.0,
            "server_ms": round(ms, 1), "server_ms_p50": round(percentile(lat, 50), 1),
            "server_ms_p99": round(percentile(lat, 99), 1), "decoded": self.decoded,
            "dropped": int(self._pipeline.get("frames_dropped", 0)), "target_kbps": self.target_kbps,
        })
