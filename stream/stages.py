"""Pipeline plumbing: a bounded queue that drops its oldest item instead of blocking (so capture
never waits on a slow encoder), and per-stage statistics (fps, latency, queue depth) with time
passed in, so the numbers are testable."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from livetok.engine.results import JsonResult

T = TypeVar("T")

# Latency samples kept per stat (stage, pipeline end-to-end, received stream): the most recent
# ones only, so memory stays flat for the life of a stream and a snapshot's sort stays cheap
# (4096 floats sorted at a few Hz). 4096 frames is over two minutes at 30 fps: plenty for a
# stable p99 of "how is the stream doing now". Counts and sums are kept separately, exactly.
LATENCY_SAMPLES = 4096


class DropOldestQueue(Generic[T]):
    """A bounded asyncio queue whose `put_nowait` never blocks: when full, the oldest item is
    dropped and counted. `close()` lets the consumer drain what is left and then get None."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self._items: deque[T] = deque()
        self.maxsize = maxsize
        self.dropped = 0
        self._closed = False
        self._ready = asyncio.Event()
        self._space = asyncio.Event()

    def put_nowait(self, item: T) -> None:
        if self._closed:
            raise RuntimeError("put on a closed queue")
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    async def put(self, item: T) -> None:
        """Wait for room instead of dropping (for sources that are not live: nothing is lost)."""
        while len(self._items) >= self.maxsize:
            self._space.clear()
            await self._space.wait()
        self.put_nowait(item)

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> T | None:
        """The oldest item; None once the queue is closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        self._space.set()
        return item

    def qsize(self) -> int:
        return len(self._items)


class LatestSlots(Generic[T]):
    """One slot per stream in front of a batching consumer (the encoder of several cameras): a new
    item replaces its stream's pending one (the older is dropped and counted), or with `put` waits
    for the slot (sources that are not live lose nothing). `take` returns every pending item at
    once, so the streams that are ready share one batched step. For one stream it is a
    `DropOldestQueue(1)`."""

    def __init__(self, names: Collection[str]) -> None:
        self._items: dict[str, T] = {}
        self._open = set(names)
        self.dropped = 0
        self._ready = asyncio.Event()
        self._space = asyncio.Event()

    def put_nowait(self, name: str, item: T) -> None:
        if name not in self._open:
            raise RuntimeError(f"put for a closed or unknown stream {name!r}")
        if name in self._items:
            self.dropped += 1
        self._items[name] = item
        self._ready.set()

    async def put(self, name: str, item: T) -> None:
        while name in self._items:
            self._space.clear()
            await self._space.wait()
        self.put_nowait(name, item)

    def close(self, name: str) -> None:
        """No more items for `name`; once every stream is closed and drained, `take` returns None."""
        self._open.discard(name)
        self._ready.set()

    async def take(self) -> dict[str, T] | None:
        while not self._items:
            if not self._open:
                return None
            self._ready.clear()
            await self._ready.wait()
        items, self._items = self._items, {}
        self._space.set()
        return items

    def qsize(self) -> int:
        return len(self._items)


def percentile(values: Collection[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a list or deque; NaN for no values. Sorts a
    copy: O(n log n), fine for the bounded (LATENCY_SAMPLES) windows it is called on."""
    if not values:
        return math.nan
    s = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(s)))
    return s[min(rank, len(s)) - 1]


@dataclass
class StageStats:
    """Counters of one stage; `record(latency_ms, now)` per item, `snapshot(now)` to report."""

    name: str
    window_s: float = 2.0  # fps is measured over this trailing window
    count: int = 0
    dropped: int = 0
    queue_depth: int = 0
    _times: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    _latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def record(self, latency_ms: float, now: float) -> None:
        self.count += 1
        self._times.append(now)
        self._latencies.append(latency_ms)

    def fps(self, now: float) -> float:
        recent = [t for t in self._times if now - t <= self.window_s]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], 1e-9)
        return (len(recent) - 1) / span if now - recent[-1] < self.window_s else 0.0

    def snapshot(self, now: float) -> StageSnapshot:
        lat = list(self._latencies)
        return StageSnapshot(
            stage=self.name,
            count=self.count,
            fps=round(self.fps(now), 2),
            latency_ms_p50=round(percentile(lat, 50), 3) if lat else None,
            latency_ms_p99=round(percentile(lat, 99), 3) if lat else None,
            queue_depth=self.queue_depth,
            dropped=self.dropped,
        )


@dataclass(frozen=True)
class StageSnapshot(JsonResult):
    """One stage's figures at one moment (a row of the live table)."""

    stage: str
    count: int
    fps: float  # over the stage's trailing window
    latency_ms_p50: float | None  # None before the first item
    latency_ms_p99: float | None
    queue_depth: int
    dropped: int
