"""Packet loss on a real run (issue 7): a real publisher sends token packets at MQTT QoS 0 through
`LossyRelay` into a real mosquitto; a real `Receiver` decodes them. Reports every loss detected,
keyframes requested, recovery time (capture of a lost frame to the next decoded frame, a keyframe),
frames frozen and the PSNR a viewer sees. The simulated counterpart, on a virtual clock, is
benchmarks/lossy.py; this one runs on the wall clock, so its times include the model's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import cv2
import numpy as np

from livetok.engine.config import SenderConfig
from livetok.engine.metrics import psnr
from livetok.engine.results import JsonResult
from livetok.engine.runtime import Runtime
from livetok.stream.broker_url import parse_broker_url, topics
from livetok.stream.capture import Captured, capture
from livetok.stream.pipeline import PipelineConfig, run_pipeline
from livetok.stream.publisher import TokenPublisher
from livetok.stream.receiver import Receiver
from livetok.stream.session import SenderSession
from livetok.stream.wire import PacketError, peek_header

from .lossy_relay import LossyRelay

__all__ = ["RealLossConfig", "real_loss_run"]


@dataclass(frozen=True)
class RealLossConfig:
    """One real lossy run.

    Args:
        loss: probability that the relay drops a token packet; burst: mean burst length (packets).
        seconds: length of the lossy part; a loss-free tail of `tail_s` follows (not in the frame
            figures) so the last loss is repaired before the end of stream.
        size: (width, height) the frames are coded at.
        gap_timeout_s: the receiver's wait for a missing packet.
        seed: the loss pattern's seed.
    """

    loss: float = 0.05
    burst: float = 1.0
    seconds: float = 10.0
    tail_s: float = 2.0
    size: tuple[int, int] = (256, 192)
    gap_timeout_s: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.tail_s < 0:
            raise ValueError(f"seconds must be > 0 and tail_s >= 0, got {self.seconds}, {self.tail_s}")


@dataclass
class _Sent:
    frame_index: int
    timestamp_us: int
    keyframe: bool
    body: bool  # sent during the lossy part


class _Tap:
    """The real publisher, recording each packet it sends (with its full frame index and capture time: a
    version 3 non-keyframe's header carries only a low byte and a difference, resolved here in send order)."""

    def __init__(self, pub: TokenPublisher, body_until_us: int) -> None:
        self.pub = pub
        self.body_until_us = body_until_us
        self.sent: list[_Sent] = []
        self.full: dict[bytes, tuple[int, int]] = {}  # packet bytes -> (frame index, capture time), for the relay

    def place(self, payload: bytes) -> tuple[int, int] | None:
        """The frame index and capture time of a packet this tap sent (None: not one of them)."""
        return self.full.get(payload)

    def take_keyframe_request(self) -> bool:
        return self.pub.take_keyframe_request()

    async def send(self, data: bytes) -> None:
        h = peek_header(data)
        index, ts = h.frame_index, h.timestamp_us
        if h.relative and self.sent:  # the packet before it in the stream is the last one sent
            index, ts = self.sent[-1].frame_index + 1, self.sent[-1].timestamp_us + h.timestamp_us
        if not (h.end_of_stream and h.grid_h * h.grid_w == 0):
            self.sent.append(_Sent(index, ts, h.keyframe, ts < self.body_until_us))
        self.full[bytes(data)] = (index, ts)
        await self.pub.send(data)


@dataclass(frozen=True, kw_only=True)
class RealLoss(JsonResult):
    """A real stream through a lossy relay: the counts (published, dropped by the relay and which frames,
    decoded, counted lost by the receiver, keyframe requests, keyframes sent and decoded), `losses_detected`,
    the recovery time after each drop (p50, max, share within 1 s), frames frozen and the PSNR seen over the
    lossy part, and the receiver's latency."""

    loss: float
    burst: float
    seconds: float
    size: str
    frames_captured: int
    frames_dropped_at_capture: int
    frames_published: int
    body_frames: int
    publish_fps: float
    packets_dropped: int
    dropped_frames: list[int]
    frames_decoded: int
    frames_lost_counted: int
    keyframe_requests: int
    keyframes_requested_served: int
    keyframes_sent: int
    keyframes_decoded: int
    # every published frame is accounted for (decoded, or counted lost) and no drop went unnoticed
    losses_detected: bool
    recovered_at_keyframe: bool
    recovery_s: list[float]
    recovery_s_p50: float | None
    recovery_s_max: float | None
    recovered_within_1s: float
    frames_frozen: int
    frozen_fraction: float
    psnr_seen: float | None
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    packets_rejected: int


async def _run(model: Runtime, source: str, broker_url: str, cfg: RealLossConfig, sender: SenderConfig,
               stream: str) -> RealLoss:
    broker = parse_broker_url(broker_url)
    dropped: list[int] = []
    t0_us = time.time_ns() // 1000
    body_until_us = t0_us + round(cfg.seconds * 1e6)

    tap: _Tap | None = None  # the publisher's tap: the frame index and time of each packet it sent

    def spare(topic: str, payload: bytes) -> bool:
        # the first frame (losing it is a late join, not a loss), the loss-free tail, the end of stream
        try:
            h = peek_header(payload)
        except PacketError:
            return False
        index, ts = (tap.place(payload) if tap is not None else None) or (h.frame_index, h.timestamp_us)
        return index == 0 or ts >= body_until_us or h.end_of_stream

    def on_drop(topic: str, payload: bytes) -> None:
        with contextlib.suppress(PacketError):
            placed = tap.place(payload) if tap is not None else None
            dropped.append(placed[0] if placed is not None else peek_header(payload).frame_index)

    originals: dict[int, np.ndarray] = {}  # capture timestamp -> frame as coded

    async def recorded(it: AsyncIterator[Captured]) -> AsyncIterator[Captured]:
        async for c in it:
            f = c.frame
            if (f.shape[1], f.shape[0]) != cfg.size:
                f = cv2.resize(f, cfg.size, interpolation=cv2.INTER_AREA)
            originals[c.timestamp_us] = np.ascontiguousarray(f)
            yield c

    decoded: dict[int, tuple[int, bool, np.ndarray]] = {}  # frame index -> (wall time us, keyframe, frame)
    session = SenderSession(model, sender)
    info = {"model_id": model.identity.hex(), "fps": 30.0, "width": cfg.size[0], "height": cfg.size[1],
            "qos": 0}
    async with (LossyRelay(broker.host, broker.port, topics(stream).tokens, loss=cfg.loss, burst=cfg.burst,
                           seed=cfg.seed, spare=spare, on_drop=on_drop) as relay,
                Receiver(model, broker, stream, gap_timeout_s=cfg.gap_timeout_s) as rx):

        async def receive() -> None:
            async for f in rx:
                decoded[f.frame_index] = (time.time_ns() // 1000, f.keyframe, f.frame)

        receiving = asyncio.create_task(receive())
        fps = 30.0
        frames = capture(source, realtime=True, loop=True, max_frames=round((cfg.seconds + cfg.tail_s) * fps),
                         size=cfg.size, fps=fps)
        async with TokenPublisher(parse_broker_url(relay.url), stream, info, first_connect_timeout_s=30.0,
                                  qos=0) as pub:
            tap = _Tap(pub, body_until_us)
            stats = await run_pipeline(recorded(frames), session, tap, PipelineConfig(size=cfg.size, drop=True))
        # the end of stream (never dropped) ends the receiver's iteration once everything before it is settled
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiving, 60.0 + 4 * cfg.gap_timeout_s)
        counters = rx.streams[stream].counters if stream in rx.streams else None
        summary = rx.summary()

    sent = tap.sent
    n = len(sent)
    body = [s for s in sent if s.body]
    by_index = {s.frame_index: s for s in sent}
    # what a viewer sees: the last decoded frame, frozen until the next one
    psnrs: list[float] = []
    frozen = 0
    shown: np.ndarray | None = None
    for s in body:
        if s.frame_index in decoded:
            shown = decoded[s.frame_index][2]
        else:
            frozen += 1
        orig = originals.get(s.timestamp_us)
        if orig is not None:
            psnrs.append(psnr(shown, orig) if shown is not None else 0.0)
    recover, at_key = [], []
    for i in dropped:
        later = sorted(j for j in decoded if j > i)
        if later and i in by_index:
            recover.append((decoded[later[0]][0] - by_index[i].timestamp_us) / 1e6)
            at_key.append(decoded[later[0]][1])
        else:
            recover.append(float("inf"))
    rec = np.array(recover)
    lost = counters.frames_lost if counters else 0
    n_decoded = counters.frames_decoded if counters else 0
    return RealLoss(
        loss=cfg.loss, burst=cfg.burst, seconds=cfg.seconds, size=f"{cfg.size[0]}x{cfg.size[1]}",
        frames_captured=stats.frames_captured, frames_dropped_at_capture=stats.frames_dropped,
        frames_published=n, body_frames=len(body), publish_fps=stats.fps,
        packets_dropped=len(dropped), dropped_frames=dropped,
        frames_decoded=n_decoded, frames_lost_counted=lost,
        keyframe_requests=counters.keyframe_requests if counters else 0,
        keyframes_requested_served=pub.keyframe_requests,
        keyframes_sent=sum(1 for s in sent if s.keyframe),
        keyframes_decoded=counters.keyframes if counters else 0,
        losses_detected=lost + n_decoded == n and lost >= len(dropped),
        recovered_at_keyframe=all(at_key),
        recovery_s=[round(r, 3) for r in recover],
        recovery_s_p50=round(float(np.median(rec)), 3) if rec.size else None,
        recovery_s_max=round(float(rec.max()), 3) if rec.size else None,
        recovered_within_1s=round(float(np.mean(rec <= 1.0)), 4) if rec.size else 1.0,
        frames_frozen=frozen, frozen_fraction=round(frozen / len(body), 4) if body else 0.0,
        psnr_seen=round(float(np.mean(psnrs)), 2) if psnrs else None,
        latency_ms_p50=summary.latency_ms_p50, latency_ms_p99=summary.latency_ms_p99,
        packets_rejected=summary.packets_rejected,
    )


def real_loss_run(model: Runtime, source: str, broker_url: str, cfg: RealLossConfig,
                  sender: SenderConfig | None = None, stream: str | None = None) -> RealLoss:
    """Stream `source` live (30 fps, looped) from a real publisher at QoS 0 through a lossy relay
    into `broker_url`, and decode it with a real receiver subscribed to the broker directly (`RealLoss`)."""
    name = stream or f"loss-{round(cfg.loss * 1000)}-{cfg.seed}"
    return asyncio.run(_run(model, source, broker_url, cfg, sender or SenderConfig(), name))
