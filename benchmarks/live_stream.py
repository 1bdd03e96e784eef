"""`livetok bench stream`: S live streams on loopback (S publishers, one receiver), measured end to
end: sustained fps, drops, and capture-to-decoded latency per stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from livetok.engine.config import SenderConfig
from livetok.engine.results import JsonResult
from livetok.engine.runtime import Runtime
from livetok.stream.broker_url import parse_broker_url
from livetok.stream.cancelling import cancel_and_wait
from livetok.stream.capture import CaptureOptions
from livetok.stream.live import publish_sources
from livetok.stream.pipeline import StreamPublished
from livetok.stream.receiver import Receiver

from .localbroker import LocalBroker


@dataclass(frozen=True)
class StreamRow(JsonResult):
    """One stream of a measurement: what its publisher captured and sent, what the receiver made of it."""

    stream: str
    frames_captured: int
    frames_dropped: int  # at capture (the encoder was busy)
    frames_published: int
    publish_fps: float
    frames_decoded: int
    frames_lost: int
    frames_shed: int  # skipped by the receiver to catch up (max_lag_s)
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    encode_ms_p50: float | None  # the pipeline's encode stage (all streams' batched steps)


@dataclass(frozen=True)
class StreamRun(JsonResult):
    """One measurement: S streams for `seconds`."""

    streams: int
    seconds: float
    size: str  # WIDTHxHEIGHT
    source: str
    target_fps: float
    fps_per_stream: float  # decoded
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    frames_dropped: int
    frames_lost: int
    frames_shed: int
    max_lag_s: float | None
    per_stream: list[StreamRow]


@dataclass(frozen=True)
class StreamBench(JsonResult):
    """`livetok bench stream`: one measurement per stream count asked for."""

    results: list[StreamRun]


async def _bench(model: Runtime, urls: list[str], streams: int, seconds: float, source: str,
                 size: tuple[int, int], sender: SenderConfig, fps: float, max_lag_s: float | None) -> StreamRun:
    broker = [parse_broker_url(u) for u in urls]
    frames = max(2, int(seconds * fps))
    names = [f"bench{i}" for i in range(streams)]
    async with Receiver(model, broker, "+", gap_timeout_s=1.0, max_lag_s=max_lag_s) as rx:
        async def drain() -> None:
            async for _ in rx:
                pass

        drainer = asyncio.create_task(drain())
        t0 = time.monotonic()
        # one publishing process, as `livetok publish --source ... --source ...` runs it: the streams'
        # frames of one tick share one batched encoder step
        pub = await publish_sources(model, [source] * streams, broker, names, sender,
                                    CaptureOptions(realtime=True, max_frames=frames, size=size))
        wall = time.monotonic() - t0
        await await_ends(rx, names, drainer, time.monotonic() + 30)
        summary = rx.summary()
    per = []
    encode_ms = next(s.latency_ms_p50 for s in pub.stages if s.stage == "encode")
    for n in names:
        r = summary.streams.get(n)
        p = pub.per_stream.get(n, StreamPublished(frames_captured=0, frames_published=0, bits_per_s=0.0))
        per.append(StreamRow(stream=n, frames_captured=p.frames_captured,
                             frames_dropped=p.frames_captured - p.frames_published,
                             frames_published=p.frames_published, publish_fps=round(p.frames_published / wall, 2),
                             frames_decoded=r.frames_decoded if r else 0, frames_lost=r.frames_lost if r else 0,
                             frames_shed=r.frames_shed if r else 0,
                             latency_ms_p50=r.latency_ms_p50 if r else None,
                             latency_ms_p99=r.latency_ms_p99 if r else None, encode_ms_p50=encode_ms))
    decoded = sum(x.frames_decoded for x in per)
    return StreamRun(streams=streams, seconds=round(wall, 2), size=f"{size[0]}x{size[1]}", source=source,
                     target_fps=fps, fps_per_stream=round(decoded / streams / wall, 2),
                     latency_ms_p50=summary.latency_ms_p50, latency_ms_p99=summary.latency_ms_p99,
                     frames_dropped=sum(x.frames_dropped for x in per), frames_lost=summary.frames_lost,
                     frames_shed=summary.frames_shed, max_lag_s=max_lag_s, per_stream=per)


async def await_ends(rx: Receiver, names: list[str], drainer: asyncio.Task[Any], until: float) -> None:
    """Wait until every stream in `names` has ended at the receiver, or the monotonic time `until`,
    then stop the task draining its frames."""
    while not all(n in rx.streams and rx.streams[n].counters.ended for n in names):
        if time.monotonic() > until:
            break
        await asyncio.sleep(0.05)
    await cancel_and_wait(drainer)


def bench_stream(model: Runtime, streams: list[int], seconds: float = 10.0, source: str = "synthetic",
                 size: tuple[int, int] = (256, 192), sender: SenderConfig | None = None,
                 broker_url: str | list[str] | None = None, fps: float = 30.0, max_lag_s: float | None = 1.0
                 ) -> StreamBench:
    """Run one measurement per entry of `streams`; a local mosquitto is started unless a broker is given
    (several URLs: the nodes of one cluster, as `--broker` repeated).
    The receiver skips to a fresh keyframe when it falls `max_lag_s` behind (None or <= 0: never),
    so a machine too slow for S streams shows as shed frames, not as a growing latency."""
    max_lag_s = max_lag_s if max_lag_s is not None and max_lag_s > 0 else None
    sender = sender or SenderConfig()
    results = []
    with contextlib.ExitStack() as stack:
        urls = ([broker_url] if isinstance(broker_url, str) else list(broker_url)) if broker_url else \
            [stack.enter_context(LocalBroker())]
        for s in streams:
            results.append(asyncio.run(_bench(model, urls, s, seconds, source, size, sender, fps, max_lag_s)))
    return StreamBench(results)


def summary_lines(res: StreamBench) -> list[str]:
    """bench_stream's result for people, one line per measurement."""
    return [f"{r.streams} stream(s) {r.size}: {r.fps_per_stream} fps/stream decoded, "
            f"latency p50 {r.latency_ms_p50} ms p99 {r.latency_ms_p99} ms, "
            f"{r.frames_dropped} dropped at capture, {r.frames_shed} shed by the receiver, "
            f"{r.frames_lost} lost"
            for r in res.results]
