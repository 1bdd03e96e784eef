"""What `livetok publish` / `receive` run for a robot's transports: Zenoh, a live Foxglove server and an MCAP
recording, alone or together (and with MQTT beside them). Several cameras share one pipeline (one batched
encoder step per tick, stream/pipeline.py) and one clock: every packet carries its frame's capture time from
this process's wall clock, and each camera's `frame_id` travels with its messages (Zenoh attachment,
Foxglove/MCAP message field, the streams' info)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from livetok.engine.config import SenderConfig
from livetok.engine.runtime import Runtime

from .capture import CAPTURE_CLOCK, Captured, CaptureOptions
from .foxglove_feed import FoxgloveFeed, FoxgloveSink
from .info import stream_info
from .live import RecordOptions, camera_frame_ids, publisher_wanted, record_frames, source_fps
from .mqtt import Brokers
from .pipeline import PacketSink, PipelineConfig, PipelineSnapshot, StreamInput, run_streams
from .session import SenderSession
from .summaries import ZenohReceiverSummary
from .zenoh_transport import ZenohConfig, ZenohPublisher, ZenohReceiver, open_session


class FanoutSink:
    """One stream's packets to several transports, in order; a keyframe request from any of them counts."""

    def __init__(self, sinks: Sequence[PacketSink]) -> None:
        self.sinks = list(sinks)

    async def send(self, data: bytes) -> None:
        for s in self.sinks:
            await s.send(data)

    def take_keyframe_request(self) -> bool:
        return any([s.take_keyframe_request() for s in self.sinks])  # a list: every flag is taken


@dataclass(frozen=True)
class RobotOutputs:
    """Where a robot's streams go (any combination; at least one)."""

    broker: Brokers | None = None
    qos: int = 1
    zenoh: ZenohConfig | None = None
    foxglove: tuple[str, int] | None = None  # serve live at (host, port)
    mcap: str | None = None  # record to this MCAP file
    preview: bool = True  # Foxglove/MCAP: also the decoded frames as JPEG
    connect_timeout_s: float | None = 10.0  # the broker's first connection
    # before the first frame, wait up to this long for a Zenoh subscriber on every stream (a recording receiver
    # that must not miss frame 0; a live one joins whenever it likes, at a keyframe it asks for)
    wait_for_receivers_s: float = 0.0

    def names(self) -> list[str]:
        out = []
        if self.broker is not None:
            out.append("mqtt")
        if self.zenoh is not None:
            out.append(f"zenoh {self.zenoh.mode} {self.zenoh.endpoint}")
        if self.foxglove is not None:
            out.append(f"foxglove ws://{self.foxglove[0]}:{self.foxglove[1]}")
        if self.mcap is not None:
            out.append(f"mcap {self.mcap}")
        return out


async def _sized(frames: AsyncIterator[Captured], on_first: Callable[[Captured], Any]) -> AsyncIterator[Captured]:
    first = True
    async for c in frames:
        if first:
            await on_first(c)
            first = False
        yield c


@dataclass(frozen=True, kw_only=True)
class RobotPublishSummary(PipelineSnapshot):
    """What `publish` to the robot outputs returns: the pipeline's stats and where the streams went."""

    streams: list[str]
    frame_ids: dict[str, str]
    outputs: list[str]  # RobotOutputs.names()
    keyframe_requests: int
    foxglove_port: int | None  # the live Foxglove server's port (None without one)


async def publish_robot(
    model: Runtime,
    sources: Sequence[str],
    streams: Sequence[str],
    sender: SenderConfig,
    outputs: RobotOutputs,
    capture: CaptureOptions = CaptureOptions(),
    *,
    frame_ids: Sequence[str] | None = None,
    on_stats: Callable[[PipelineSnapshot], Any] | None = None,
    on_ready: Callable[[int | None], Any] | None = None,
    stop: asyncio.Event | None = None,
) -> RobotPublishSummary:
    """Capture every source (`capture`) and publish source i as stream `streams[i]` (camera frame
    `frame_ids[i]`, default the stream name) on every output of `outputs`, until the sources end or `stop`
    is set. Returns the pipeline's stats plus where they went. `on_ready` gets the Foxglove server's port
    (None without one) once the outputs are up (before the first frame)."""
    ids = camera_frame_ids(sources, streams, frame_ids)
    if not outputs.names():
        raise ValueError("nowhere to publish: give --broker, --zenoh, --foxglove or --mcap")
    async with contextlib.AsyncExitStack() as stack:
        feed: FoxgloveFeed | None = None
        if outputs.foxglove is not None or outputs.mcap is not None:
            feed = FoxgloveFeed(model, mcap=outputs.mcap, serve=outputs.foxglove, preview=outputs.preview)
            stack.callback(feed.close)
        zsession: Any = None
        if outputs.zenoh is not None:
            zsession = await asyncio.to_thread(open_session, outputs.zenoh, True)
            stack.callback(zsession.close)
        inputs: list[StreamInput] = []
        counters: list[Any] = []
        for source, stream, fid in zip(sources, streams, ids, strict=True):
            session = SenderSession(model, sender)
            info = stream_info(model, sender, source, frame_id=fid, clock=CAPTURE_CLOCK)
            sinks: list[PacketSink] = []
            updaters: list[Callable[[dict[str, Any]], Any]] = []
            if outputs.broker is not None:
                from .publisher import TokenPublisher

                mq = await stack.enter_async_context(TokenPublisher(outputs.broker, stream, info,
                                                                    outputs.connect_timeout_s, qos=outputs.qos))
                sinks.append(mq)
                updaters.append(mq.update_info)
                counters.append(mq)
            if zsession is not None:
                zp = await stack.enter_async_context(ZenohPublisher(zsession, stream, info, frame_id=fid))
                sinks.append(zp)
                updaters.append(zp.update_info)
                counters.append(zp)
            cam = None
            if feed is not None:
                cam = feed.camera(stream, fid, {k: info[k] for k in ("source", "policy", "rate", "wire")})
                sinks.append(FoxgloveSink(model, cam))

            async def first(c: Captured, info: dict[str, Any] = info,
                            updaters: list[Callable[[dict[str, Any]], Any]] = updaters, source: str = source) -> None:
                h, w = (capture.size[1], capture.size[0]) if capture.size else c.frame.shape[:2]
                full = {**info, "width": int(w), "height": int(h), "fps": source_fps(source)}
                for u in updaters:
                    await u(full)

            inputs.append(StreamInput(stream, _sized(capture.open(source), first), session, FanoutSink(sinks)))
        zpubs = [c for c in counters if isinstance(c, ZenohPublisher)]
        if outputs.wait_for_receivers_s > 0 and zpubs:
            await asyncio.gather(*(z.wait_matched(outputs.wait_for_receivers_s) for z in zpubs))
        if on_ready is not None:
            on_ready(feed.port if feed is not None else None)
        # `stop` (SIGINT/SIGTERM): capture ends, what was captured goes out, then each stream's end of stream;
        # leaving the exit stack then finalises the MCAP file and withdraws the streams' info
        result = await run_streams(inputs, PipelineConfig(size=capture.size, drop=capture.live(sources)),
                                   on_stats=on_stats, stop=stop)
        summary = RobotPublishSummary.extending(
            result, streams=list(streams), frame_ids=dict(zip(streams, ids, strict=True)), outputs=outputs.names(),
            keyframe_requests=sum(getattr(c, "keyframe_requests", 0) for c in counters),
            foxglove_port=feed.port if feed is not None else None)
    return summary


async def receive_zenoh(
    model: Runtime,
    cfg: ZenohConfig,
    stream: str,
    record: RecordOptions = RecordOptions(),
    *,
    max_lag_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> ZenohReceiverSummary:
    """`live.receive_stream` over Zenoh: the receiver's summary (DESIGN.md §6 keys) plus `outputs`, `ended_by`
    (see `live.Drained`), `transport`, `frame_ids` and `seconds`. A named stream ends at its end-of-stream
    packet; '+' (every stream) at `record.idle_timeout_s` without a frame; either at `stop` (SIGINT/SIGTERM:
    what was decoded is recorded and the MP4 finalised). `record.on_status`: lines while no frame comes."""
    rx = ZenohReceiver(model, cfg, stream, max_lag_s=max_lag_s)
    what = publisher_wanted(rx.wildcard, stream, f"zenoh {cfg.endpoint}")
    t0 = time.monotonic()
    async with rx:
        drained = await record_frames(rx, record, per_stream_files=rx.wildcard, stop=stop, waiting_for=what)
        summary = rx.summary().recorded(drained)
    return dataclasses.replace(summary, seconds=round(time.monotonic() - t0, 3))
