"""`livetok bench soak`: one live stream on loopback (publisher -> mosquitto -> receiver, one process)
at 30 fps for M minutes; per window: frames decoded, drops, losses, latency p50/p99, RSS and open file
descriptors, so growth over time shows (issue 7's goal: 30 minutes, RSS growth < 5 %, no fd growth)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass

from livetok.engine.config import SenderConfig
from livetok.engine.results import JsonResult
from livetok.engine.runtime import Runtime
from livetok.stream.broker_url import parse_broker_url
from livetok.stream.cancelling import cancel_and_wait
from livetok.stream.capture import CaptureOptions
from livetok.stream.live import publish_source
from livetok.stream.pipeline import PipelineSnapshot
from livetok.stream.receiver import Receiver
from livetok.stream.stages import percentile

from .localbroker import LocalBroker


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc; 0 where it is absent)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


@dataclass(frozen=True)
class Usage(JsonResult):
    """The process's memory and file descriptors at one moment."""

    rss_mib: float
    open_fds: int


def usage() -> Usage:
    return Usage(round(rss_mib(), 1), open_fds())


@dataclass(frozen=True)
class SoakWindow(JsonResult):
    """One window of the soak: what it decoded, dropped and lost, its latency, the process's usage at its end."""

    t_s: float
    frames_decoded: int
    fps: float
    frames_dropped: int
    frames_lost: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    rss_mib: float
    open_fds: int


@dataclass(frozen=True, kw_only=True)
class Soak(JsonResult):
    """`livetok bench soak`: the whole run, and its growth from the first window (after warm-up) to the end."""

    minutes: float
    seconds: float
    size: str
    source: str
    target_fps: float
    frames_captured: int
    frames_published: int
    frames_dropped: int
    frames_decoded: int
    frames_lost: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    start: Usage
    end: Usage
    rss_growth_after_warmup: float | None
    fd_growth_after_warmup: int
    windows: list[SoakWindow]


async def _soak(model: Runtime, url: str, minutes: float, window_s: float, source: str, size: tuple[int, int],
                sender: SenderConfig, fps: float) -> Soak:
    broker = parse_broker_url(url)
    frames = max(2, round(minutes * 60 * fps))
    windows: list[SoakWindow] = []
    start = usage()
    pub_stats: list[PipelineSnapshot] = []  # the publisher's last stats
    async with Receiver(model, broker, "soak", gap_timeout_s=1.0) as rx:
        lat: list[float] = []
        decoded = 0

        async def drain() -> None:
            nonlocal decoded
            async for f in rx:
                lat.append(f.latency_ms)
                decoded += 1

        def on_stats(d: PipelineSnapshot) -> None:
            pub_stats[:] = [d]

        async def sample() -> None:
            t0 = time.monotonic()
            last_decoded = last_dropped = last_lost = 0
            while True:
                await asyncio.sleep(window_s)
                c = rx.streams["soak"].counters if "soak" in rx.streams else None
                lost = c.frames_lost if c else 0
                dropped = pub_stats[0].frames_dropped if pub_stats else 0
                now = usage()
                windows.append(SoakWindow(
                    t_s=round(time.monotonic() - t0, 1), frames_decoded=decoded - last_decoded,
                    fps=round((decoded - last_decoded) / window_s, 2), frames_dropped=dropped - last_dropped,
                    frames_lost=lost - last_lost,
                    latency_ms_p50=round(percentile(lat, 50), 2) if lat else None,
                    latency_ms_p99=round(percentile(lat, 99), 2) if lat else None,
                    rss_mib=now.rss_mib, open_fds=now.open_fds,
                ))
                lat.clear()
                last_decoded, last_dropped, last_lost = decoded, dropped, lost

        drainer, sampler = asyncio.create_task(drain()), asyncio.create_task(sample())
        t0 = time.monotonic()
        pub = await publish_source(model, source, broker, "soak", sender,
                                   CaptureOptions(realtime=True, max_frames=frames, size=size), on_stats=on_stats)
        wall = time.monotonic() - t0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(drainer), 10)
        await cancel_and_wait(drainer, sampler)
        summary = rx.summary()
    end = usage()
    # growth measured from the first window (after warm-up: model, broker connection, caches)
    base = Usage(windows[0].rss_mib, windows[0].open_fds) if windows else start
    return Soak(
        minutes=minutes, seconds=round(wall, 1), size=f"{size[0]}x{size[1]}", source=source, target_fps=fps,
        frames_captured=pub.frames_captured, frames_published=pub.frames_published,
        frames_dropped=pub.frames_dropped, frames_decoded=summary.frames_decoded, frames_lost=summary.frames_lost,
        latency_ms_p50=summary.latency_ms_p50, latency_ms_p99=summary.latency_ms_p99, start=start, end=end,
        rss_growth_after_warmup=round(end.rss_mib / base.rss_mib - 1, 4) if base.rss_mib else None,
        fd_growth_after_warmup=end.open_fds - base.open_fds, windows=windows,
    )


def bench_soak(model: Runtime, minutes: float, window_s: float = 30.0, source: str = "synthetic",
               size: tuple[int, int] = (256, 192), sender: SenderConfig | None = None,
               broker_url: str | None = None, fps: float = 30.0) -> Soak:
    """Run the soak; a local mosquitto is started unless a broker is given."""
    if minutes <= 0 or window_s <= 0:
        raise ValueError(f"--minutes and --window must be > 0, got {minutes} and {window_s}")
    with contextlib.ExitStack() as stack:
        url = broker_url or stack.enter_context(LocalBroker())
        return asyncio.run(_soak(model, url, minutes, window_s, source, size, sender or SenderConfig(), fps))


def summary_lines(res: Soak) -> list[str]:
    """bench_soak's result for people: one line per window, then the growth from start to end."""
    lines = [f"{w.t_s:7.1f} s: {w.fps} fps decoded, {w.frames_dropped} dropped, {w.frames_lost} lost, "
             f"latency p50 {w.latency_ms_p50} ms p99 {w.latency_ms_p99} ms, RSS {w.rss_mib} MiB, "
             f"{w.open_fds} fds"
             for w in res.windows]
    lines.append(f"{res.frames_decoded}/{res.frames_captured} frames decoded, RSS {res.start.rss_mib} -> "
                 f"{res.end.rss_mib} MiB, fds {res.start.open_fds} -> {res.end.open_fds}")
    return lines
