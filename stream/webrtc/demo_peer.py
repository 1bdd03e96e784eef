"""One browser of the webcam demo: its camera track runs through the publishing pipeline
(drop-oldest capture, encode in a worker thread, packetize); every packet is decoded again as a
receiver would, and the reconstruction and the token heat-map go back as video tracks, with one
JSON stats message per frame on the browser's data channel. The page's rate slider sets the
rate-control target through the same channel. What the stream can reach (its policy's floor and
ceiling of tokens, priced on its own frames at its real frame rate, stream/reachable.py) goes to
the page too, and a request beyond it is shown, and held, as the bound it runs into."""

from __future__ import annotations

import asyncio
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
from livetok.engine.rate_control import RateControlConfig, RateState, retarget
from livetok.engine.runtime import Runtime
from livetok.engine.state import FrameTokens

from ..cancelling import cancel_and_wait
from ..capture import Captured
from ..heatmap import token_heatmap
from ..pipeline import PipelineConfig, PipelineSnapshot, run_pipeline
from ..reachable import RateMeter, frame_bounds
from ..session import ReceiverSession, SenderSession
from ..stages import percentile
from ..wire import TokenPacket
from .tracks import LatestFrameTrack

log = logging.getLogger(__name__)

STATS_WINDOW_S = 1.0  # the page's live kbit/s and fps are measured over this trailing window
MEAN_WINDOW_S = 10.0  # and its mean kbit/s over this one (the span a target is held over)
REACH_AFTER_S = 1.0  # the reachable range is shown (and the target clipped to it) after this much stream
RECLIP = 0.02  # a clipped target shown follows the reachable range when it moves by more than this


class PricedSession(SenderSession):
    """The demo's sender session: each packet it makes is also priced at the floor and ceiling of
    tokens (reachable.frame_bounds, from the coder state it was packed from) and metered with its
    capture time, so the page can be told what the slider can reach."""

    def __init__(self, model: Runtime, sender: SenderConfig, meter: RateMeter) -> None:
        super().__init__(model, sender)
        self.meter = meter

    def packetize(self, tokens: FrameTokens, timestamp_us: int) -> tuple[TokenPacket, bytes]:
        coder = self.coder
        packet, data = super().packetize(tokens, timestamp_us)
        bits = 8 * len(data)
        # the scale this frame was coded at, as the router kept it (when the encoder has already run
        # the next frame, that one's: rate control moves it little from one frame to the next)
        st = self.state.stream
        scale = st.budget[0].scale if st is not None and st.budget else 1.0
        self.meter.add(timestamp_us / 1e6, bits, frame_bounds(packet, tokens, coder, self.sender, bits, scale))
        return packet, data


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
        kbps_range: the slider's limits; requests outside are clipped (the target shown is also
            clipped to what the stream can reach, once a second of it was measured).
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
        self.meter = RateMeter(MEAN_WINDOW_S)
        self.session = PricedSession(model, sender, self.meter)
        self.decoder = ReceiverSession(model)
        self.recon = LatestFrameTrack()
        self.heat = LatestFrameTrack()
        self.channel: RTCDataChannel | None = None
        self.requested_kbps = 0.0  # what the page asked for: what rate control aims at
        self.target_kbps = 0.0  # what the page shows: the request, or the bound it is beyond
        self.set_target(target_kbps)
        self.decoded = 0
        self.server_ms: deque[float] = deque(maxlen=300)  # capture (arrival) -> decoded, last frames
        self._pipeline: PipelineSnapshot | None = None  # the last stats
        self.task: asyncio.Task[PipelineSnapshot | None] | None = None

    # -- control -------------------------------------------------------------------------------

    def set_target(self, kbps: float) -> None:
        """The page's request. Rate control aims at it; beyond the reachable range that pins its
        scale at a limit, and the stream sits exactly at the bound (where the bound's price is the
        frames' own cost, reachable.frame_bounds), which is then the target shown."""
        lo, hi = self.kbps_range
        self.requested_kbps = min(hi, max(lo, float(kbps)))
        self.target_kbps, side = self._within_reach()
        rc = RateControlConfig(target_bps=self.requested_kbps * 1000.0)
        old, rate = self.session.sender.rate_control, self.session.state.rate
        # a controller pinned at a scale limit has wound its slow part up there: that says nothing
        # about a target elsewhere, which starts from a fresh stream's scale instead of taking
        # seconds to unwind (a request past the same bound stays pinned)
        pinned = 0 if old is None else -1 if rate.scale <= old.min_scale else 1 if rate.scale >= old.max_scale else 0
        fresh = pinned not in (0, side)
        # the encoder thread reads `sender` once per frame: replacing it is safe between frames; the
        # rate state (written only here and by packetize, both on the event loop) starts a new account
        self.session.sender = replace(self.session.sender, rate_control=rc)
        self.session.state = replace(self.session.state, rate=RateState() if fresh else retarget(rate))

    def reachable_kbps(self) -> tuple[float, float] | None:
        """(lowest, highest) kbit/s this stream reaches now, or None before a second of it."""
        reach = self.meter.reachable_bps()
        if reach is None or self.meter.span_s() < REACH_AFTER_S:
            return None
        return reach[0] / 1000.0, reach[1] / 1000.0

    def _within_reach(self, reach: tuple[float, float] | None = None) -> tuple[float, int]:
        """The target shown: the request, or the bound of the reachable range (`reach`, default:
        measured now) it is beyond; and which side it is clipped on (-1 the floor, +1 the ceiling,
        0 not clipped)."""
        reach = self.reachable_kbps() if reach is None else reach
        if reach is not None and self.requested_kbps < reach[0]:
            return reach[0], -1
        if reach is not None and self.requested_kbps > reach[1]:
            return reach[1], 1
        return self.requested_kbps, 0

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
                self._send_target()
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignoring a malformed message from the page: %.80s", message)

    def _send(self, obj: dict[str, Any]) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps(obj))

    def _send_target(self) -> None:
        self._send({"type": "target", "kbps": self.target_kbps, "requested_kbps": self.requested_kbps})

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

    async def _run(self, camera: MediaStreamTrack) -> PipelineSnapshot | None:
        def on_stats(d: PipelineSnapshot) -> None:
            self._pipeline = d
            doc = d.to_json()
            stages = doc.pop("stages")
            self._send({"type": "pipeline", **doc, "stages": stages})

        try:
            return await run_pipeline(self._frames(camera), self.session, self, PipelineConfig(drop=True),
                                      on_stats=on_stats, send_eos=False)
        except Exception as e:  # one browser's failure must not take the server down
            log.warning("demo stream ended: %s", e)
            self._send({"type": "error", "message": str(e)})
            return None

    async def stop(self) -> None:
        await cancel_and_wait(self.task)

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
        ms = (time.time_ns() // 1000 - packet.timestamp_us) / 1e3
        self.server_ms.append(ms)
        # the target shown follows the reachable range as the frame rate and the content move it
        reach = self.reachable_kbps()
        shown_target, _ = self._within_reach(reach)
        if abs(shown_target - self.target_kbps) > RECLIP * self.target_kbps:
            self.target_kbps = shown_target
            self._send_target()
        lat = list(self.server_ms)
        # rates over the packets' capture times, as rate control counts them (stream/reachable.py)
        kbps, mean_kbps = self.meter.bits_per_s(STATS_WINDOW_S), self.meter.bits_per_s()
        fps = self.meter.fps(STATS_WINDOW_S)
        self._send({
            "type": "frame", "frame": packet.frame_index, "timestamp_us": packet.timestamp_us,
            "keyframe": packet.keyframe, "tokens": packet.k,
            "positions": packet.n, "bits": 8 * len(data), "width": packet.width, "height": packet.height,
            "kbps": round(kbps / 1000.0, 2) if kbps is not None else 0.0,
            "kbps_mean": round(mean_kbps / 1000.0, 2) if mean_kbps is not None else 0.0,
            "kbps_mean_s": round(self.meter.span_s(), 2),
            "fps": round(fps, 2) if fps is not None else 0.0,
            "reachable_kbps": [round(reach[0], 1), round(reach[1], 1)] if reach is not None else None,
            "server_ms": round(ms, 1), "server_ms_p50": round(percentile(lat, 50), 1),
            "server_ms_p99": round(percentile(lat, 99), 1), "decoded": self.decoded,
            "dropped": self._pipeline.frames_dropped if self._pipeline is not None else 0,
            "target_kbps": self.target_kbps,
            "requested_kbps": self.requested_kbps,
        })
