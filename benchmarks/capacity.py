"""`livetok bench stream --find-max`: the most concurrent streams one receiver process decodes in
real time (issue 7). The streams' packets are encoded once, then replayed at the source frame rate
(fresh frame indices and capture timestamps) by S MQTT publishers in a separate process, so the
receiver process does nothing but receive and decode; S rises (doubling, then bisection) until the
receiver no longer keeps up.

A receiver keeps up with S streams when every stream has >= `min_ratio` of its sent frames decoded
by `grace_s` after the last one was sent (decoded fps >= 95% of the sent fps by default) and the
capture-to-decoded latency p99 stays under `max_p99_ms` (no runaway backlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from livetok.engine.config import SenderConfig
from livetok.engine.results import JsonResult
from livetok.engine.runtime import Runtime
from livetok.stream.broker_url import parse_broker_url
from livetok.stream.publisher import TokenPublisher
from livetok.stream.receiver import Receiver
from livetok.stream.session import SenderSession
from livetok.stream.sources import open_source
from livetok.stream.stages import percentile
from livetok.stream.wire import TokenPacket

from .live_stream import await_ends
from .localbroker import LocalBroker

__all__ = ["CapacityConfig", "find_max_streams", "measure_streams", "summary_line", "trial_line"]


@dataclass(frozen=True)
class CapacityConfig:
    """How streams are sent and when a receiver counts as keeping up.

    Args:
        seconds: how long each trial sends.
        fps: frames per second per stream.
        clip_frames: frames encoded once and replayed in a loop (each loop starts at a keyframe).
        min_ratio: share of each stream's frames that must be decoded in time.
        grace_s: decoding in time = by this long after the last frame was sent.
        max_p99_ms: the latency p99 above which the backlog has run away.
        max_streams: stop raising S here.
    """

    seconds: float = 10.0
    fps: float = 30.0
    clip_frames: int = 60
    min_ratio: float = 0.95
    grace_s: float = 1.0
    max_p99_ms: float = 1000.0
    max_streams: int = 64

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.fps <= 0 or self.clip_frames < 1 or self.max_streams < 1:
            raise ValueError("seconds, fps must be > 0; clip_frames, max_streams >= 1")
        if not 0 < self.min_ratio <= 1:
            raise ValueError(f"min_ratio must be in (0, 1], got {self.min_ratio}")


# -- the sending process ---------------------------------------------------------------------


@dataclass(frozen=True)
class Replayed(JsonResult):
    """What the sending process reports: how long it sent, how late its sends were."""

    send_wall_s: float
    send_lag_ms_p99: float | None


@dataclass(frozen=True, kw_only=True)
class Trial(JsonResult):
    """One trial: S streams into one receiver; `keeps_up` says whether it kept up."""

    streams: int
    frames_per_stream: int
    keeps_up: bool
    fps_per_stream_min: float  # decoded in time
    fps_per_stream_mean: float
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    frames_decoded: int
    frames_lost: int
    messages_dropped: int
    send_wall_s: float
    send_lag_ms_p99: float | None


@dataclass(frozen=True, kw_only=True)
class Capacity(JsonResult):
    """`bench stream --find-max`: `max_streams` (0 when even one stream is too many), `capped` (True when
    `cfg.max_streams` still kept up) and every trial, by stream count."""

    max_streams: int
    capped: bool
    size: str
    source: str
    fps: float
    seconds: float
    min_ratio: float
    max_p99_ms: float
    trials: list[Trial]


async def _replay(url: str, names: list[str], payloads: list[bytes], fps: float, frames: int,
                  info: dict[str, Any]) -> Replayed:
    packets = [TokenPacket.unpack(p) for p in payloads]
    broker = parse_broker_url(url)
    lags: list[float] = []

    async def one(j: int, pub: TokenPublisher, t0: float) -> None:
        for i in range(frames):
            due = t0 + (j / len(names) + i) / fps  # streams staggered over one frame interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(max(0.0, -delay) * 1e3)
            p = dataclasses.replace(packets[i % len(packets)], frame_index=i, timestamp_us=time.time_ns() // 1000)
            await pub.send(p.pack())
        eos = dataclasses.replace(packets[0], frame_index=frames, timestamp_us=time.time_ns() // 1000,
                                  keyframe=False, end_of_stream=True, width=0, height=0, grid_h=0, grid_w=0,
                                  mask=np.zeros(0, bool), indices=np.zeros(0, np.uint32))
        await pub.send(eos.pack())

    async with contextlib.AsyncExitStack() as stack:
        pubs = [await stack.enter_async_context(TokenPublisher(broker, n, info, first_connect_timeout_s=30.0))
                for n in names]
        t0 = time.monotonic() + 0.2
        await asyncio.gather(*(one(j, p, t0) for j, p in enumerate(pubs)))
        wall = time.monotonic() - t0
    return Replayed(round(wall, 3), round(percentile(lags, 99), 2) if lags else None)


def _replay_main(conn: Any, url: str, names: list[str], payloads: list[bytes], fps: float, frames: int,
                 info: dict[str, Any]) -> None:
    try:
        conn.send(asyncio.run(_replay(url, names, payloads, fps, frames, info)))
    except BaseException as e:  # reported to the parent, which raises it
        conn.send(f"{type(e).__name__}: {e}")  # the error, in words
    finally:
        conn.close()


# -- the receiving process (this one) ----------------------------------------------------------


def encode_clip(model: Runtime, source: str, size: tuple[int, int], sender: SenderConfig, frames: int
                ) -> list[bytes]:
    """`frames` frames of `source` encoded as one stream (frame 0 a keyframe): the replayed packets."""
    # fixed-length v1 packets: the replay re-stamps frame indices and loops the clip, which an
    # entropy-coded stream (whose coder state needs every packet in order) would not survive
    session = SenderSession(model, dataclasses.replace(sender, wire=1))
    src = open_source(source, max_frames=frames, size=size)
    return [session.encode(f, timestamp_us=0).data for f in src.frames]


async def _trial(model: Runtime, url: str, streams: int, payloads: list[bytes], cfg: CapacityConfig
                 ) -> Trial:
    names = [f"cap{j}" for j in range(streams)]
    frames = max(2, round(cfg.seconds * cfg.fps))
    decoded: dict[str, list[float]] = {n: [] for n in names}  # monotonic decode times
    info = {"model_id": model.identity.hex(), "fps": cfg.fps}
    async with Receiver(model, parse_broker_url(url), "+", gap_timeout_s=1.0) as rx:
        async def drain() -> None:
            async for f in rx:
                if f.stream in decoded:
                    decoded[f.stream].append(time.monotonic())

        drainer = asyncio.create_task(drain())
        parent, child = mp.get_context("spawn").Pipe(duplex=False)
        proc = mp.get_context("spawn").Process(
            target=_replay_main, args=(child, url, names, payloads, cfg.fps, frames, info), daemon=True)
        proc.start()
        child.close()
        sent: Replayed | str = await asyncio.to_thread(parent.recv)  # blocks until the sender is done
        await asyncio.to_thread(proc.join, 30)
        if isinstance(sent, str):
            raise RuntimeError(f"the replaying publishers failed: {sent}")
        t_end = time.monotonic()
        deadline = t_end + cfg.grace_s
        # after the deadline, let the backlog drain a while so its latency shows in the p99
        await await_ends(rx, names, drainer, deadline + 10.0)
        summary = rx.summary()
    ratios = [sum(1 for t in decoded[n] if t <= deadline) / frames for n in names]
    p99 = summary.latency_ms_p99
    keeps_up = min(ratios) >= cfg.min_ratio and p99 is not None and p99 <= cfg.max_p99_ms
    return Trial(streams=streams, frames_per_stream=frames, keeps_up=keeps_up,
                 fps_per_stream_min=round(min(ratios) * cfg.fps, 2),
                 fps_per_stream_mean=round(float(np.mean(ratios)) * cfg.fps, 2),
                 latency_ms_p50=summary.latency_ms_p50, latency_ms_p99=p99,
                 frames_decoded=summary.frames_decoded, frames_lost=summary.frames_lost,
                 messages_dropped=summary.messages_dropped, send_wall_s=sent.send_wall_s,
                 send_lag_ms_p99=sent.send_lag_ms_p99)


def measure_streams(model: Runtime, url: str, streams: int, payloads: list[bytes], cfg: CapacityConfig
                    ) -> Trial:
    """One trial: `streams` replayed streams into one receiver; `keeps_up` says whether it kept up."""
    return asyncio.run(_trial(model, url, streams, payloads, cfg))


def find_max_streams(model: Runtime, source: str = "synthetic", size: tuple[int, int] = (256, 192),
                     sender: SenderConfig | None = None, cfg: CapacityConfig | None = None,
                     broker_url: str | None = None, log: Callable[[Trial], Any] | None = None) -> Capacity:
    """Raise S (1, 2, 4, ... then bisect) until one receiver no longer decodes S streams in real time;
    `log` gets each trial."""
    cfg = cfg or CapacityConfig()
    payloads = encode_clip(model, source, size, sender or SenderConfig(), cfg.clip_frames)
    trials: list[Trial] = []
    with contextlib.ExitStack() as stack:
        url = broker_url or stack.enter_context(LocalBroker())

        def ok(s: int) -> bool:
            r = measure_streams(model, url, s, payloads, cfg)
            trials.append(r)
            if log is not None:
                log(r)
            return r.keeps_up

        good, bad, s = 0, None, 1
        while s <= cfg.max_streams:
            if not ok(s):
                bad = s
                break
            good = s
            if s == cfg.max_streams:
                break
            s = min(2 * s, cfg.max_streams)
        if bad is not None:
            while bad - good > 1:
                mid = (good + bad) // 2
                if ok(mid):
                    good = mid
                else:
                    bad = mid
    return Capacity(max_streams=good, capped=bad is None, size=f"{size[0]}x{size[1]}", source=source, fps=cfg.fps,
                    seconds=cfg.seconds, min_ratio=cfg.min_ratio, max_p99_ms=cfg.max_p99_ms,
                    trials=sorted(trials, key=lambda r: r.streams))


def trial_line(r: Trial) -> str:
    """One trial of find_max_streams for people (what its `log` is given)."""
    return (f"{r.streams} stream(s): {'keeps up' if r.keeps_up else 'falls behind'}, "
            f"{r.fps_per_stream_min} fps/stream decoded in time (min), latency p99 {r.latency_ms_p99} ms")


def summary_line(res: Capacity) -> str:
    """find_max_streams' result for people."""
    return f"max {res.max_streams}{'+' if res.capped else ''} streams at {res.size} in real time"
