"""What `livetok publish` and `livetok receive` run: a source through the pipeline onto the broker,
and a broker's streams into decoded frames, MP4 files and an optional window."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livetok.engine.config import SenderConfig
from livetok.engine.runtime import Runtime

from .cancelling import cancel_and_wait
from .capture import CAPTURE_CLOCK, Captured, CaptureOptions
from .errors import StreamError
from .info import stream_info
from .mqtt import Brokers, brokers_text
from .packet_receiver import PacketReceiver, ReceivedFrame
from .pipeline import PipelineConfig, PipelineSnapshot, StreamInput, run_streams
from .publisher import TokenPublisher
from .receiver import Receiver
from .session import SenderSession
from .sources import open_source
from .summaries import MqttReceiverSummary
from .video_io import STDOUT, Mp4Writer
from .workers import WorkerReceiver

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PublishSummary(PipelineSnapshot):
    """What `publish` returns: the pipeline's stats summed over the streams, and what the broker links did."""

    streams: list[str]
    frame_ids: dict[str, str]  # each stream's camera frame id
    keyframe_requests: int
    other_publishers: list[str]  # other publisher sessions seen on our streams' names
    reconnects: int
    broker_downtime_s: float  # the longest of the streams' links
    failovers: int
    outages_s: list[float]


async def publish_source(
    model: Runtime,
    source: str,
    broker: Brokers,
    stream: str,
    sender: SenderConfig,
    capture: CaptureOptions = CaptureOptions(),
    *,
    first_connect_timeout_s: float | None = None,
    on_stats: Callable[[PipelineSnapshot], Any] | None = None,
    qos: int = 1,
    stop: asyncio.Event | None = None,
) -> PublishSummary:
    """Capture `source`, tokenize it live and publish it as `stream` until the source ends; returns
    the stats (see `publish_sources`)."""
    return await publish_sources(model, [source], broker, [stream], sender, capture,
                                 first_connect_timeout_s=first_connect_timeout_s, on_stats=on_stats, qos=qos,
                                 stop=stop)


async def publish_sources(
    model: Runtime,
    sources: Sequence[str],
    broker: Brokers,
    streams: Sequence[str],
    sender: SenderConfig,
    capture: CaptureOptions = CaptureOptions(),
    *,
    frame_ids: Sequence[str] | None = None,
    qos: int = 1,
    first_connect_timeout_s: float | None = None,
    on_stats: Callable[[PipelineSnapshot], Any] | None = None,
    stop: asyncio.Event | None = None,
) -> PublishSummary:
    """Capture every source (`capture`: paced, looped, resized ...), tokenize them live — the frames of one
    size as one batched step per tick (stream/pipeline.py) — and publish source i as stream `streams[i]`
    (token packets at MQTT QoS `qos`) until every source ends or `stop` is set (then each stream's
    end-of-stream packet goes out and its retained info is withdrawn); returns the stats summed over the
    streams. Each stream's retained info names its camera's `frame_ids[i]` (default: the stream name) and
    the one capture clock all the streams' timestamps come from (`clock`)."""
    ids = camera_frame_ids(sources, streams, frame_ids)
    async with contextlib.AsyncExitStack() as stack:
        inputs: list[StreamInput] = []
        pubs: list[TokenPublisher] = []
        for source, stream, fid in zip(sources, streams, ids, strict=True):
            session = SenderSession(model, sender)
            info = stream_info(model, sender, source, qos=qos, frame_id=fid, clock=CAPTURE_CLOCK)
            pub = await stack.enter_async_context(TokenPublisher(broker, stream, info, first_connect_timeout_s,
                                                                 qos=qos))
            frames = capture.open(source)
            inputs.append(StreamInput(stream, _described(frames, pub, info, source, capture.size), session, pub))
            pubs.append(pub)

        async def stats(d: PipelineSnapshot) -> None:
            if on_stats is not None:
                on_stats(d)
            for pub in pubs:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pub.send_stats(d.to_json()), 1.0)

        # live sources drop what the encoder cannot take; a file read as fast as possible loses nothing
        cfg = PipelineConfig(size=capture.size, drop=capture.live(sources))
        result = await run_streams(inputs, cfg, on_stats=stats, stop=stop)
        summary = PublishSummary.extending(
            result,
            streams=list(streams),
            frame_ids=dict(zip(streams, ids, strict=True)),
            keyframe_requests=sum(p.keyframe_requests for p in pubs),
            other_publishers=sorted({s for p in pubs for s in p.other_sessions}),
            reconnects=sum(max(0, p.link.connects - 1) for p in pubs),
            broker_downtime_s=round(max(p.link.downtime_s for p in pubs), 3),
            failovers=sum(p.link.failovers for p in pubs),
            outages_s=sorted(round(t, 3) for p in pubs for t in p.link.outages_s),
        )
    return summary


def camera_frame_ids(sources: Sequence[str], streams: Sequence[str], frame_ids: Sequence[str] | None) -> list[str]:
    """Each stream's camera frame id (default: the stream name), once one source per stream, distinct stream
    names and one frame id per stream are checked (ValueError, one line)."""
    if len(sources) != len(streams) or not sources:
        raise ValueError(f"{len(sources)} sources for {len(streams)} stream names")
    if len(set(streams)) != len(streams):
        raise ValueError(f"stream names must differ, got {list(streams)}")
    ids = list(frame_ids) if frame_ids else list(streams)
    if len(ids) != len(streams):
        raise ValueError(f"{len(ids)} --frame-id for {len(streams)} streams: give one per --source")
    return ids


async def _described(it: AsyncIterator[Captured], pub: TokenPublisher, info: dict[str, Any], source: str,
                     size: tuple[int, int] | None) -> AsyncIterator[Captured]:
    # the retained info gains the frame size and rate once the first frame is known
    first = True
    async for c in it:
        if first:
            h, w = (size[1], size[0]) if size else c.frame.shape[:2]
            await pub.update_info({**info, "width": int(w), "height": int(h), "fps": source_fps(source)})
            first = False
        yield c


def source_fps(source: str) -> float:
    if source.startswith(("webcam:", "synthetic")) or "://" in source:
        return 30.0
    return open_source(source, 0).fps


def _out_path(out: str, stream: str, wildcard: bool) -> Path:
    p = Path(out)
    return p.with_name(f"{p.stem}-{stream}{p.suffix or '.mp4'}") if wildcard else p


# `--show` opened an OpenCV window, which the headless OpenCV build livetok needs (a GUI build would
# replace it, and pulls in Qt) can never do: the decoded video goes to a player through a pipe instead
SHOW_UNSUPPORTED = ("--show cannot open a window (livetok uses the headless OpenCV build): pipe the video to a "
                    "player instead, e.g. `livetok receive ... --out - | ffplay -` (or `| mpv -`), or record it "
                    "with --out FILE.mp4")


# a waiting receiver says so: first after this long without a frame, then at this interval
STATUS_FIRST_S = 2.0
STATUS_EVERY_S = 10.0


@dataclass(frozen=True)
class Drained:
    """What `record_frames` did: the files it wrote and why it stopped (`ended_by`: "end_of_stream"
    — the stream, or with '+' every stream, ended —, "timeout", "max_frames", or "stopped": the
    caller's `stop` event, e.g. SIGINT/SIGTERM)."""

    outputs: list[str]
    ended_by: str
    frames: int


@dataclass(frozen=True)
class RecordOptions:
    """What a receiver does with its decoded frames and when it stops (`record_frames`): the same for
    every transport (`receive` over MQTT or Zenoh, `webrtc recv`)."""

    out: str | None = None  # MP4 file ("-": live Matroska on stdout); with several streams, one file per stream
    show: bool = False  # refused (SHOW_UNSUPPORTED): there is no window
    idle_timeout_s: float | None = None  # stop after this long without a frame (None or 0: never)
    max_frames: int | None = None
    on_frame: Callable[[ReceivedFrame], Any] | None = None
    on_status: Callable[[str], Any] | None = None  # a line while no frame comes (`waiting_line`)


def waiting_line(rx: PacketReceiver, idle_s: float, frames: int, timeout_s: float | None, what: str) -> str:
    """The status line of a receiver that has had no frame for `idle_s`: for whom it waits, what it
    knows of the stream(s) (announced or not, the last frame, a publisher gone) and when it gives up."""
    end = (f"stopping after {timeout_s:g} s without a frame (--timeout)" if timeout_s
           else "waiting for ever (--timeout 0)")
    if frames == 0:
        live = [n for n, s in rx.streams.items() if s.announced]
        if not live:
            return f"waiting for {what}: none yet after {idle_s:.0f} s; {end}"
        return (f"{', '.join(repr(n) for n in live)} announced by a publisher but no frame yet after "
                f"{idle_s:.0f} s; {end}")
    gone = [n for n, s in rx.streams.items() if not s.announced and not s.counters.ended]
    note = (f" (the publisher of {', '.join(repr(n) for n in gone)} disconnected without ending its stream)"
            if gone else "")
    return f"no frame for {idle_s:.0f} s after {frames} frames{note}; {end}"


async def record_frames(
    rx: PacketReceiver,
    opts: RecordOptions = RecordOptions(),
    *,
    per_stream_files: bool = False,
    stop: asyncio.Event | None = None,
    waiting_for: str = "a stream",
) -> Drained:
    """Take decoded frames from any receiver (MQTT, WebRTC) until it ends, `opts.idle_timeout_s` passes
    without a frame (None or 0: never), `opts.max_frames`, or `stop` is set; write MP4 (one file per
    stream with `per_stream_files`; each frame at its capture time, so a recording lasts as long as
    its stream; `opts.out` "-": one stream as live Matroska on stdout, for a player), call `opts.on_frame`.
    `opts.show` is refused (SHOW_UNSUPPORTED: there is no window). The files are finalised however it ends
    (a stopped run leaves playable files as long as what was received). While no frame comes,
    `opts.on_status` gets a line (`waiting_line`, naming `waiting_for`) after STATUS_FIRST_S and then every
    STATUS_EVERY_S."""
    out, show, max_frames, on_frame, on_status = opts.out, opts.show, opts.max_frames, opts.on_frame, opts.on_status
    if show:
        raise StreamError(SHOW_UNSUPPORTED)
    if out == STDOUT and per_stream_files:
        raise StreamError("--out - carries one stream: receive one --stream, not '+' (or write one file per "
                          "stream with --out FILE.mp4)")
    writers: dict[str, Mp4Writer] = {}
    timeout = opts.idle_timeout_s or None
    n = 0
    ended_by = "max_frames"
    stopped: asyncio.Future[Any] = asyncio.ensure_future((stop or asyncio.Event()).wait())
    pending: asyncio.Future[Any] | None = None
    last = time.monotonic()  # the last frame, or the start
    status_at = STATUS_FIRST_S

    def record(f: ReceivedFrame) -> None:
        if out is not None:
            if f.stream not in writers:
                fps = float(rx.streams[f.stream].info.get("fps", 30.0) or 30.0)
                writers[f.stream] = Mp4Writer(_out_path(out, f.stream, per_stream_files), fps)
            # at its capture time: frames the sender dropped (or the network lost) leave the
            # previous one on screen, and the file lasts as long as the stream did
            writers[f.stream].write(f.frame, f.timestamp_us)
        if on_frame is not None:
            on_frame(f)

    try:
        while max_frames is None or n < max_frames:
            if pending is None:
                pending = asyncio.ensure_future(anext(rx))
            idle = time.monotonic() - last
            wake = min(status_at, timeout if timeout is not None else status_at) - idle
            await asyncio.wait([pending, stopped], timeout=max(wake, 0.0), return_when=asyncio.FIRST_COMPLETED)
            if stopped.done():
                # no packet is decoded from now on; what was decoded is still recorded, so the
                # recording holds every frame the summary counts
                ended_by = "stopped"
                await rx.stop_tasks()
                await cancel_and_wait(pending, raising=False)
                ready = [] if pending.cancelled() or pending.exception() else [pending.result()]
                pending = None
                for f in [*ready, *rx.take_ready()]:
                    n += 1
                    record(f)
                break
            if not pending.done():
                idle = time.monotonic() - last
                if timeout is not None and idle >= timeout:
                    log.info("no frame for %g s: stopping", timeout)
                    ended_by = "timeout"
                    break
                if idle >= status_at:
                    if on_status is not None:
                        on_status(waiting_line(rx, idle, n, timeout, waiting_for))
                    status_at = (idle // STATUS_EVERY_S + 1) * STATUS_EVERY_S  # 2 s, then 10, 20, 30...
                continue
            done, pending = pending, None
            if isinstance(done.exception(), StopAsyncIteration):
                ended_by = "end_of_stream"
                break
            n += 1
            last, status_at = time.monotonic(), STATUS_FIRST_S
            record(done.result())
    finally:
        stopped.cancel()
        if pending is not None:
            pending.cancel()
        for w in writers.values():
            w.close()
    return Drained([str(w.path) for w in writers.values()], ended_by, n)


async def drain_frames(rx: PacketReceiver, opts: RecordOptions = RecordOptions(), *,
                       per_stream_files: bool = False) -> list[str]:
    """`record_frames` without a stop event or status lines; returns the written file paths."""
    drained = await record_frames(rx, opts, per_stream_files=per_stream_files)
    return drained.outputs


def publisher_wanted(wildcard: bool, stream: str, where: str) -> str:
    """Whom a receiver waits for (`record_frames`' `waiting_for`): a publisher of `stream` at `where`."""
    return f"a publisher on any stream at {where}" if wildcard else f"a publisher on stream {stream!r} at {where}"


async def receive_stream(
    model: Runtime,
    broker: Brokers,
    stream: str,
    record: RecordOptions = RecordOptions(),
    *,
    identifier: str | None = None,
    first_connect_timeout_s: float | None = 10.0,
    max_lag_s: float | None = None,
    worker: str | None = None,
    group: str = "receivers",
    stop: asyncio.Event | None = None,
) -> MqttReceiverSummary:
    """Receive until end of stream (a named stream; with '+', once every stream it has seen has
    ended and no other is announced), `record.idle_timeout_s` without frames (None or 0: never),
    `record.max_frames`, or `stop`; returns the receiver's summary (DESIGN.md §6 keys, plus `outputs` and
    `ended_by`: see `Drained`). `max_lag_s`: see PacketReceiver. `record.on_status`: lines while no frame
    comes. With `worker` (and `stream` '+'), run as that worker of `group`: decode only the streams it owns
    among the group's live workers (stream/workers.py); its files are OUT-<worker>-<stream>.mp4."""
    rx: Receiver
    if worker is not None:
        if stream != "+":
            raise ValueError(f"a receiver worker splits every stream ('+') with its group, not {stream!r}")
        rx = WorkerReceiver(model, broker, group, worker, first_connect_timeout_s=first_connect_timeout_s,
                            max_lag_s=max_lag_s, end_when_all_ended=True)
        if record.out is not None:
            p = Path(record.out)
            record = dataclasses.replace(record, out=str(p.with_name(f"{p.stem}-{worker}{p.suffix or '.mp4'}")))
    else:
        rx = Receiver(model, broker, stream, identifier=identifier, first_connect_timeout_s=first_connect_timeout_s,
                      max_lag_s=max_lag_s, end_when_all_ended=True)
    what = publisher_wanted(rx.topics.wildcard, stream, brokers_text(broker))
    if worker is not None:
        what += f" (worker {worker} of {group})"
    async with rx:
        drained = await record_frames(rx, record, per_stream_files=rx.topics.wildcard, stop=stop, waiting_for=what)
        return rx.summary().recorded(drained)
