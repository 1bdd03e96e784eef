"""The publishing pipeline: asyncio stages joined by bounded queues.

    capture -> preprocess -> encode+route (worker thread) -> packetize -> publish

With several streams (cameras), each has its own capture and preprocess stages; the encoder takes
the newest frame of every stream that has one and runs them as one batched step per frame size.

Capture never waits on a slow encoder: the queues in front of the encoder drop their oldest frame
(counted), so the encoder always takes the newest one and a frame never waits behind more than one
other (live latency stays bounded). After the encoder, queues apply backpressure: a packet, once
made, is never dropped (the receiver's decoder needs every one). Every stage reports fps,
latency and queue depth.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

from torch import Tensor

from livetok.engine.results import JsonResult, optional
from livetok.engine.state import FrameTokens
from livetok.export.preprocess import PreprocessConfig, Preprocessor, cupy_usable

from .cancelling import cancel_and_wait
from .capture import Captured
from .errors import StreamError
from .session import SenderSession, step_sessions
from .stages import LATENCY_SAMPLES, DropOldestQueue, LatestSlots, StageSnapshot, StageStats, percentile

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
    # where frames are resized and normalised: "auto" = on the GPU (cupy) when the model runs on a
    # CUDA device and cupy can use it, else numpy/OpenCV (export/preprocess.py); or force one
    preprocess: str = "auto"


@dataclass(frozen=True)
class StreamInput:
    """One stream of a pipeline: its frames, its sender session (state, packets, rate control) and
    where its packets go."""

    name: str
    frames: AsyncIterator[Captured]
    session: SenderSession
    sink: PacketSink


@dataclass
class _Item:
    stream: str
    cap: Captured
    t_capture: float  # monotonic time of capture
    x: Tensor | None = None  # the pre-processed frame [1, 3, h, w] in [-1, 1]
    tokens: FrameTokens | None = None
    data: bytes | None = None
    k: int = 0


def _preprocessor(cfg: PipelineConfig, session: SenderSession) -> Preprocessor:
    backend = cfg.preprocess
    if backend == "auto":
        gpu = session.model.device.type == "cuda" and cupy_usable()
        backend = "cupy" if gpu else "numpy"
    return Preprocessor(PreprocessConfig(cfg.size, backend, order="rgb"))


class PipelineStats:
    """Per-stage counters plus end-to-end (capture -> published) latency; the bit rate is each stream's
    session's (`SenderSession.rate`: stream/bitrate.py, the definition the receiver uses too)."""

    def __init__(self, sessions: Mapping[str, SenderSession] | None = None) -> None:
        self.sessions = dict(sessions or {})
        self.stages = {name: StageStats(name) for name in STAGES}
        # the last LATENCY_SAMPLES frames only: bounded for a stream of any length (stages.py)
        self.e2e_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.bits = 0
        self.tokens = 0
        self.keyframes = 0
        self.encode_steps = 0  # batched encoder steps (fewer than frames when cameras share a step)
        # per stream of a several-camera pipeline: frames captured and published (the rest were dropped)
        self.captured: dict[str, int] = {}
        self.published: dict[str, int] = {}
        self.t_start = time.monotonic()
        self.t_last = self.t_start

    def snapshot(self, now: float | None = None) -> PipelineSnapshot:
        now = time.monotonic() if now is None else now
        pub = self.stages["publish"].count
        span = max(self.t_last - self.t_start, 1e-9)
        checks = {n: c for n, s in self.sessions.items() if (c := s.target_check()) is not None}
        many = len(self.sessions) > 1

        def published(name: str, captured: int) -> StreamPublished:
            bps = round(self.sessions[name].rate.bits_per_s(), 1) if name in self.sessions else 0.0
            row = StreamPublished(frames_captured=captured, frames_published=self.published.get(name, 0),
                                  bits_per_s=bps)
            return dataclasses.replace(row, **checks[name].as_json()) if name in checks else row

        return PipelineSnapshot(
            frames_captured=self.stages["capture"].count,
            frames_dropped=self.stages["capture"].dropped,
            frames_published=pub,
            keyframes=self.keyframes,
            fps=round(pub / span, 2) if pub > 1 else 0.0,
            latency_ms_p50=round(percentile(self.e2e_ms, 50), 2) if self.e2e_ms else None,
            latency_ms_p99=round(percentile(self.e2e_ms, 99), 2) if self.e2e_ms else None,
            tokens_per_frame=round(self.tokens / pub, 2) if pub else 0.0,
            # packet bits over the streams' capture time, summed over the streams (stream/bitrate.py); not
            # over the time since the pipeline started, which counted its start-up as a quiet stream
            bits_per_s=round(sum(s.rate.bits_per_s() for s in self.sessions.values()), 1),
            stages=[s.snapshot(now) for s in self.stages.values()],
            encode_steps=self.encode_steps,
            per_stream={n: published(n, c) for n, c in self.captured.items()},
            # a --target-bps: was it below what a stream can reach?
            target_bps=next(iter(checks.values())).target_bps if checks else None,
            target_below_floor=any(c.below_floor for c in checks.values()) if checks else None,
            warnings=[w for n, c in checks.items() if (w := c.warning(n if many else ""))] if checks else None,
        )


@dataclass(frozen=True)
class StreamPublished(JsonResult):
    """One stream of a pipeline's snapshot (`per_stream`); the target keys only with a --target-bps."""

    frames_captured: int
    frames_published: int  # the rest were dropped
    bits_per_s: float
    target_bps: float | None = optional()
    target_below_floor: bool | None = optional()
    floor_share: float | None = optional()


@dataclass(frozen=True, kw_only=True)
class PipelineSnapshot(JsonResult):
    """A publishing pipeline's figures, summed over its streams: the live stats (`on_stats`, the live table,
    the stats topic) and, at the end, what the run returns. The target keys only with a --target-bps."""

    frames_captured: int
    frames_dropped: int
    frames_published: int
    keyframes: int
    fps: float
    latency_ms_p50: float | None  # capture -> published; None before the first frame
    latency_ms_p99: float | None
    tokens_per_frame: float
    bits_per_s: float
    stages: list[StageSnapshot]
    encode_steps: int  # batched encoder steps (fewer than frames when cameras share a step)
    per_stream: dict[str, StreamPublished]
    target_bps: float | None = optional()
    target_below_floor: bool | None = optional()
    warnings: list[str] | None = optional()
    # why the run ended: "end_of_source", or the signal that stopped it (set by the caller)
    ended_by: str | None = optional()

    def ended(self, by: str) -> Self:
        """This summary with `ended_by`."""
        return dataclasses.replace(self, ended_by=by)


async def run_pipeline(
    frames: AsyncIterator[Captured],
    session: SenderSession,
    sink: PacketSink,
    cfg: PipelineConfig | None = None,
    on_stats: Callable[[PipelineSnapshot], Any] | None = None,
    send_eos: bool = True,
    stop: asyncio.Event | None = None,
) -> PipelineSnapshot:
    """One stream: run until the source ends or `stop` is set (then an end-of-stream packet is
    sent); returns the final stats."""
    return await run_streams([StreamInput("", frames, session, sink)], cfg, on_stats, send_eos, stop)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that failed a stage (the TaskGroup cancelled the others because of it)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        e = pending.pop(0)
        if isinstance(e, BaseExceptionGroup):
            pending.extend(e.exceptions)
        else:
            leaves.append(e)
    return next((e for e in leaves if not isinstance(e, asyncio.CancelledError)), leaves[0])


async def run_streams(
    streams: Sequence[StreamInput],
    cfg: PipelineConfig | None = None,
    on_stats: Callable[[PipelineSnapshot], Any] | None = None,
    send_eos: bool = True,
    stop: asyncio.Event | None = None,
) -> PipelineSnapshot:
    """Several streams (cameras) through one encoder: the frames that are ready when the encoder is
    free — the newest of each stream — run as one batched step per frame size; each stream keeps
    its own session, keyframe requests and sink. Runs until every source ends or `stop` is set
    (e.g. by SIGINT/SIGTERM: capture stops, the frames already captured go through, and each
    stream's end-of-stream packet is sent); returns the final stats, summed over the streams.

    A source that fails (a camera that cannot be opened or fails mid-stream: StreamError) ends the
    run the same way — every stream is closed with its end-of-stream packet, so receivers finish
    their recordings — and the error is raised afterwards (the first error of a failed stage is
    raised as itself, never as an ExceptionGroup)."""
    cfg = cfg or PipelineConfig()
    if not streams or len({s.name for s in streams}) != len(streams):
        raise ValueError(f"a pipeline needs streams with distinct names, got {[s.name for s in streams]}")
    by_name = {s.name: s for s in streams}
    sessions = {s.name: s.session for s in streams}
    st = PipelineStats(sessions)
    q_cap: dict[str, DropOldestQueue[_Item]] = {s.name: DropOldestQueue(cfg.capture_queue) for s in streams}
    q_enc: LatestSlots[_Item] = LatestSlots(list(by_name))
    q_pack: asyncio.Queue[list[_Item] | None] = asyncio.Queue(2)
    q_pub: asyncio.Queue[_Item | None] = asyncio.Queue(cfg.packet_queue)
    pre = _preprocessor(cfg, streams[0].session)
    S = st.stages

    halt = asyncio.Event()  # set by `stop` or by a failed source: every capture stage ends
    source_errors: dict[str, StreamError] = {}

    def dropped() -> int:
        return sum(q.dropped for q in q_cap.values()) + q_enc.dropped

    async def relay_stop() -> None:
        if stop is not None:
            await stop.wait()
            halt.set()

    async def capture_stage(s: StreamInput) -> None:
        # the frames are read in a task of their own, cancelled when the run halts: a camera or an
        # RTSP stream that stalls must not keep a stopped pipeline from ending (the source's
        # generator ends at the read it was waiting on)
        reading = asyncio.ensure_future(capture_frames(s))
        halted = asyncio.ensure_future(halt.wait())
        try:
            await asyncio.wait([reading, halted], return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
            await cancel_and_wait(reading, raising=False)
        if not reading.cancelled() and (e := reading.exception()) is not None:
            if not isinstance(e, StreamError):
                raise e
            source_errors.setdefault(s.name, e)
            halt.set()
        q_cap[s.name].close()

    async def capture_frames(s: StreamInput) -> None:
        q = q_cap[s.name]
        async for c in s.frames:
            now = time.monotonic()
            item = _Item(s.name, c, now)
            if cfg.drop:
                q.put_nowait(item)
            else:
                await q.put(item)
            S["capture"].record(0.0, now)
            st.captured[s.name] = st.captured.get(s.name, 0) + 1
            S["capture"].dropped = dropped()
            S["preprocess"].queue_depth = sum(q.qsize() for q in q_cap.values())

    async def preprocess_stage(s: StreamInput) -> None:
        while (item := await q_cap[s.name].get()) is not None:
            t0 = time.monotonic()
            item.x = pre(item.cap.frame)
            S["preprocess"].record((time.monotonic() - t0) * 1e3, time.monotonic())
            if cfg.drop:
                q_enc.put_nowait(s.name, item)
            else:
                await q_enc.put(s.name, item)
            S["capture"].dropped = dropped()
            S["encode"].queue_depth = q_enc.qsize()
        q_enc.close(s.name)

    async def encode_stage() -> None:
        while (items := await q_enc.take()) is not None:
            t0 = time.monotonic()
            force = {n for n in items if by_name[n].sink.take_keyframe_request()}
            frames = {n: it.x for n, it in items.items() if it.x is not None}
            # the model runs in a worker thread: the event loop keeps capturing and publishing
            tokens = await asyncio.to_thread(step_sessions, sessions, frames, force)
            st.encode_steps += len({tuple(x.shape[-2:]) for x in frames.values()})
            now = time.monotonic()
            for n, it in items.items():
                it.tokens = tokens[n]
                S["encode"].record((now - t0) * 1e3, now)
            await q_pack.put(list(items.values()))
        await q_pack.put(None)

    async def packetize_stage() -> None:
        while (batch := await q_pack.get()) is not None:
            for item in batch:
                t0 = time.monotonic()
                assert item.tokens is not None
                packet, item.data = sessions[item.stream].packetize(item.tokens, item.cap.timestamp_us)
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
            await by_name[item.stream].sink.send(item.data)
            now = time.monotonic()
            S["publish"].record((now - t0) * 1e3, now)
            st.e2e_ms.append((now - item.t_capture) * 1e3)
            st.bits += 8 * len(item.data)
            st.tokens += item.k
            st.published[item.stream] = st.published.get(item.stream, 0) + 1
            st.t_last = now
        if send_eos:
            for s in streams:
                if s.name in source_errors and not st.published.get(s.name):
                    continue  # its source never gave a frame: there is no stream to end
                await s.sink.send(s.session.end_of_stream(time.time_ns() // 1000))

    async def report() -> None:
        while True:
            await asyncio.sleep(cfg.stats_interval_s)
            if on_stats is not None:
                r = on_stats(st.snapshot())
                if asyncio.iscoroutine(r):
                    await r

    reporter = asyncio.create_task(report())
    relay = asyncio.create_task(relay_stop())
    try:
        async with asyncio.TaskGroup() as tg:
            for s in streams:
                tg.create_task(capture_stage(s), name=f"capture_stage {s.name}")
                tg.create_task(preprocess_stage(s), name=f"preprocess_stage {s.name}")
            for stage in (encode_stage, packetize_stage, publish_stage):
                tg.create_task(stage(), name=stage.__name__)
    except BaseExceptionGroup as group:
        # one line for the user (`livetok: error: ...`), not a tree of cancelled stages
        e = _first_error(group)
        raise e.with_traceback(e.__traceback__) from None
    finally:
        # until they end: the reporter publishes stats through aiomqtt, whose wait_for can swallow a
        # cancellation (stream/cancelling.py); a reporter left running would hold asyncio.run's exit
        await cancel_and_wait(reporter, relay, raising=False)
    if source_errors:
        raise next(iter(source_errors.values()))
    return st.snapshot()
