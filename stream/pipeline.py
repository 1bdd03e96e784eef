"""The publishing pipeline: asyncio stages joined by bounded queues.

    capture -> preprocess -> encode+route (worker thread) -> packetize -> publish

Capture never waits on a slow encoder: the queues in front of the encoder drop their oldest frame
(counted), so the encoder always takes the newest one and a frame never waits behind more than one
other (live latency stays bounded). After the encoder, queues apply backpressure: a packet, once
made, is never dropped (the receiver's decoder needs every one). Every stage reports fps,
latency and queue depth.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from livetok.engine.state import FrameTokens

from .capture import Captured
from .session import SenderSession
from .stages import LATENCY_SAMPLES, DropOldestQueue, StageStats, percentile

STAGES = ("capture", "preprocess", "encode", "packetize", "publish")


class PacketSink(Protocol):
    async def send(self, data: bytes) -> None: ...

    def take_keyframe_request(self) -> bool: ...


@dataclass(frozen=True)
class PipelineConfig:
    capture_queue: int = 1  # frames waiting for preprocessing; beyond this the oldest is dropped
    packet_queue: int = 32  # packets waiting for the network (backpressure beyond)
    size: tuple[int, int] | None = None  # (width, height) to resize to, or None
    drop: bool = True  # live sources drop the oldest frame; a file read as fast as possible waits
    stats_interval_s: float = 1.0


@dataclass
class _Item:
    cap: Captured
    t_capture: float  # monotonic time of capture
    frame: np.ndarray | None = None
    tokens: FrameTokens | None = None
    data: bytes | None = None
    k: int = 0


class PipelineStats:
    """Per-stage counters plus end-to-end (capture -> published) latency."""

    def __init__(self) -> None:
        self.stages = {name: StageStats(name) for name in STAGES}
        # the last LATENCY_SAMPLES frames only: bounded for a stream of any length (stages.py)
        self.e2e_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.bits = 0
        self.tokens = 0
        self.keyframes = 0
        self.t_start = time.monotonic()
        self.t_last = self.t_start

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        pub = self.stages["publish"].count
        span = max(self.t_last - self.t_start, 1e-9)
        return {
            "frames_captured": self.stages["capture"].count,
            "frames_dropped": self.stages["capture"].dropped,
            "frames_published": pub,
            "keyframes": self.keyframes,
            "fps": round(pub / span, 2) if pub > 1 else 0.0,
            "latency_ms_p50": round(percentile(self.e2e_ms, 50), 2) if self.e2e_ms else None,
            "latency_ms_p99": round(percentile(self.e2e_ms, 99), 2) if self.e2e_ms else None,
            "tokens_per_frame": round(self.tokens / pub, 2) if pub else 0.0,
            "bits_per_s": round(self.bits / span, 1) if pub > 1 else 0.0,
            "stages": [s.snapshot(now) for s in self.stages.values()],
        }


async def run_pipeline(
    frames: AsyncIterator[Captured],
    session: SenderSession,
    sink: PacketSink,
    cfg: PipelineConfig | None = None,
    on_stats: Callable[[dict[str, Any]], Any] | None = None,
    send_eos: bool = True,
) -> dict[str, Any]:
    """Run until the source ends (then an end-of-stream packet is sent); returns the final stats."""
    cfg = cfg or PipelineConfig()
    st = PipelineStats()
    q_cap: DropOldestQueue[_Item] = DropOldestQueue(cfg.capture_queue)
    q_enc: DropOldestQueue[_Item] = DropOldestQueue(1)
    q_pack: asyncio.Queue[_Item | None] = asyncio.Queue(2)
    q_pub: asyncio.Queue[_Item | None] = asyncio.Queue(cfg.packet_queue)
    S = st.stages

    async def capture_stage() -> None:
        async for c in frames:
            now = time.monotonic()
            item = _Item(c, now)
            if cfg.drop:
                q_cap.put_nowait(item)
            else:
                await q_cap.put(item)
            S["capture"].record(0.0, now)
            S["capture"].dropped = q_cap.dropped + q_enc.dropped
            S["preprocess"].queue_depth = q_cap.qsize()
        q_cap.close()

    async def preprocess_stage() -> None:
        while (item := await q_cap.get()) is not None:
            t0 = time.monotonic()
            f = item.cap.frame
            if cfg.size is not None and (f.shape[1], f.shape[0]) != cfg.size:
                f = cv2.resize(f, cfg.size, interpolation=cv2.INTER_AREA)
            item.frame = np.ascontiguousarray(f)
            S["preprocess"].record((time.monotonic() - t0) * 1e3, time.monotonic())
            if cfg.drop:
                q_enc.put_nowait(item)
            else:
                await q_enc.put(item)
            S["capture"].dropped = q_cap.dropped + q_enc.dropped
            S["encode"].queue_depth = q_enc.qsize()
        q_enc.close()

    async def encode_stage() -> None:
        while (item := await q_enc.get()) is not None:
            t0 = time.monotonic()
            force = sink.take_keyframe_request()
            assert item.frame is not None
            # the model runs in a worker thread: the event loop keeps capturing and publishing
            item.tokens = await asyncio.to_thread(session.step, item.frame, force)
            S["encode"].record((time.monotonic() - t0) * 1e3, time.monotonic())
            await q_pack.put(item)
        await q_pack.put(None)

    async def packetize_stage() -> None:
        while (item := await q_pack.get()) is not None:
            t0 = time.monotonic()
            assert item.tokens is not None
            packet, item.data = session.packetize(item.tokens, item.cap.timestamp_us)
            item.k = packet.k
            st.keyframes += int(packet.keyframe)
            S["packetize"].record((time.monotonic() - t0) * 1e3, time.monotonic())
            await q_pub.put(item)
            S["publish"].queue_depth = q_pub.qsize()
        await q_pub.put(None)

    async def publish_stage() -> None:
        while (item := await q_pub.get()) is not None:
            t0 = time.monotonic()
            assert item.data is not None
            await sink.send(item.data)
            now = time.monotonic()
            S["publish"].record((now - t0) * 1e3, now)
            st.e2e_ms.append((now - item.t_capture) * 1e3)
            st.bits += 8 * len(item.data)
            st.tokens += item.k
            st.t_last = now
        if send_eos:
            await sink.send(session.end_of_stream(time.time_ns() // 1000))

    async def report() -> None:
        while True:
            await asyncio.sleep(cfg.stats_interval_s)
            if on_stats is not None:
                r = on_stats(st.snapshot())
                if asyncio.iscoroutine(r):
                    await r

    reporter = asyncio.create_task(report())
    try:
        async with asyncio.TaskGroup() as tg:
            for stage in (capture_stage, preprocess_stage, encode_stage, packetize_stage, publish_stage):
                tg.create_task(stage(), name=stage.__name__)
    finally:
        reporter.cancel()
    return st.snapshot()
