"""The receiving half of every transport: packets in (in any order, with gaps), frames out. Orders
by frame index, asks for a keyframe on a gap or a late join, decodes off the event loop, counts
what DESIGN.md §6 reports. MQTT (`receiver.py`) and WebRTC (`webrtc/channel_receiver.py`) only
feed it packets and carry its keyframe requests back to the sender."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from livetok.engine.errors import TokenizerError
from livetok.engine.runtime import Runtime

from .bitrate import BitRate
from .cancelling import cancel_and_wait
from .errors import StreamError
from .reorder import OrderResult, StreamOrderer
from .session import ReceiverSession
from .stages import LATENCY_SAMPLES, percentile
from .summaries import ReceiverSummary, StreamSummary
from .wire import CRC_SIZE, PacketError, PacketHeader, extend_frame_index, verify_packet
from .wire.packet import _check_model

log = logging.getLogger(__name__)

KEYFRAME_REQUEST_INTERVAL_S = 0.5  # at most this often per stream: one loss, one request


@dataclass(frozen=True)
class ReceivedFrame:
    stream: str
    frame_index: int
    timestamp_us: int  # the sender's capture time
    keyframe: bool
    token_grid: np.ndarray  # int32 [grid_h, grid_w]: the token index at each position, -1 where none was sent
    frame: np.ndarray  # uint8 RGB [H, W, 3], the decoded frame
    latency_ms: float  # capture -> decoded
    bits: int  # size of the packet


@dataclass(frozen=True)
class _Arrived:
    """A received packet: its verified header (what ordering reads) and its bytes, decoded in stream
    order (a v2 or v3 payload needs the coder state of every packet before it). A v3 non-keyframe's header
    is relative (docs/PACKET.md §7): its frame index is the one `_place` found for its low byte, and its
    timestamp the difference from the packet before it (`_capture_us` adds it up in stream order)."""

    header: PacketHeader
    data: bytes

    @property
    def frame_index(self) -> int:
        return self.header.frame_index

    @property
    def keyframe(self) -> bool:
        return self.header.keyframe

    @property
    def end_of_stream(self) -> bool:
        return self.header.end_of_stream

    @property
    def n(self) -> int:
        return self.header.n

    @property
    def timestamp_us(self) -> int:
        return self.header.timestamp_us


@dataclass
class StreamCounters:
    frames_received: int = 0
    frames_decoded: int = 0
    frames_lost: int = 0
    frames_skipped: int = 0
    frames_shed: int = 0  # dropped undecoded because the receiver fell more than max_lag_s behind
    duplicates: int = 0
    packets_rejected: int = 0  # bad bytes, or a packet our model could not have made
    conflicting_packets: int = 0  # a frame index already taken by another frame: a second publisher
    keyframes: int = 0
    keyframe_requests: int = 0
    tokens: int = 0
    bits: int = 0
    # the decoded frames' packets over their capture times: bits_per_s as the sender defines it (stream/bitrate.py)
    rate: BitRate = field(default_factory=BitRate)
    # the last LATENCY_SAMPLES decoded frames only (bounded for a stream of any length; stages.py)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    t_first: float | None = None
    t_last: float | None = None
    ended: bool = False
    sessions: set[str] = field(default_factory=set)  # publisher sessions seen in the stream's info

    def summary(self) -> StreamSummary:
        lat = self.latencies_ms
        return StreamSummary(
            frames_received=self.frames_received,
            frames_decoded=self.frames_decoded,
            frames_lost=self.frames_lost,
            frames_shed=self.frames_shed,
            keyframes=self.keyframes,
            duplicates=self.duplicates,
            packets_rejected=self.packets_rejected,
            keyframe_requests=self.keyframe_requests,
            latency_ms_p50=round(percentile(lat, 50), 2) if lat else None,
            latency_ms_p99=round(percentile(lat, 99), 2) if lat else None,
            # over the stream's capture time, not arrival times: the sender's figure (stream/bitrate.py)
            tokens_per_s=round(self.rate.tokens_per_s(), 1),
            bits_per_s=round(self.rate.bits_per_s(), 1),
            ended=self.ended,
            conflicting_packets=self.conflicting_packets,
            publishers=len(self.sessions),
        )


# frame index -> capture time (a v3 non-keyframe: its CRC) of a stream's last frames, to tell a redelivered
# packet (the same) from another publisher's frame with the same index (another)
RECENT_FRAMES = 512


def _identity(header: PacketHeader, data: bytes) -> int | bytes:
    """What a redelivered packet repeats and another publisher's frame does not: the capture time, or for a
    v3 non-keyframe (which carries only a difference) its CRC."""
    return data[-CRC_SIZE:] if header.relative else header.timestamp_us


class _Stream:
    def __init__(self, name: str, model: Runtime, gap_timeout_s: float) -> None:
        self.name = name
        self.session = ReceiverSession(model)
        self.order: StreamOrderer[_Arrived] = StreamOrderer(gap_timeout_s=gap_timeout_s)
        self.counters = StreamCounters()
        self.last_request = -1e9
        self.info: dict[str, Any] = {}
        self.best_latency_ms = float("inf")  # the stream's lowest capture-to-decode-start latency
        self.shedding = False  # fell behind: dropping packets until the requested keyframe
        self.announced = False  # a publisher's info is retained for it (withdrawn: it left or died)
        self.publisher: str | None = None  # the session id of its publisher's info
        self.recent: dict[int, int | bytes] = {}  # frame index -> capture time or CRC, the last RECENT_FRAMES
        self.last_index: int | None = None  # the highest frame index received: where a v3 low byte is read
        self.conflict_said = False

    def restart(self, model: Runtime, gap_timeout_s: float) -> None:
        """A new run of the stream (a publisher started again on its name): decode it from its first
        keyframe with fresh state; the counters go on."""
        self.session = ReceiverSession(model)
        self.order = StreamOrderer(gap_timeout_s=gap_timeout_s)
        self.recent.clear()
        self.shedding = False
        self.counters.ended = False


class PacketReceiver:
    """Decodes live streams from packets handed to `feed` / `feed_info`; iterate it for frames.

    A subclass supplies the transport: it calls `start_ticking()` once running, feeds packets, and
    implements `send_keyframe_request` (e.g. publish on a control topic, or a data-channel message).

    Args:
        model: the decoder; packets of another model are refused (StreamError names both ids).
        gap_timeout_s: how long a missing packet is waited for before it counts as lost.
        end_on_eos: stop the iteration at the first end-of-stream (one named stream); False for
            receivers of many streams, which keep going.
        end_when_all_ended: for receivers of many streams: stop the iteration once a stream has
            ended and every stream known has ended or is no longer announced by a publisher (an
            announced stream that has not sent a frame yet is waited for; one whose publisher died
            without an end of stream is left to the caller's idle timeout).
        max_lag_s: live viewing: when a frame is about to be decoded more than this many seconds
            later than the stream's best latency (the receiver fell behind: too many streams for
            its CPU), drop the backlog undecoded (`frames_shed`) and resume at a requested
            keyframe, so latency stays bounded. Measured against the stream's own best latency,
            so a clock offset between sender and receiver does not matter. None: decode every
            frame however late (a recorder).
        clock: seconds, for gap timeouts, keyframe-request spacing and the stream's time span.
        wall_clock: seconds since the epoch, compared with the packets' capture timestamps (the
            sender's wall clock) for latency and `max_lag_s`.
    """

    def __init__(self, model: Runtime, *, gap_timeout_s: float = 0.3, end_on_eos: bool = True,
                 clock: Callable[[], float] = time.monotonic, max_lag_s: float | None = None,
                 wall_clock: Callable[[], float] = time.time, end_when_all_ended: bool = False) -> None:
        self.model = model
        self.max_lag_s = max_lag_s
        self.clock = clock  # seconds; a simulation passes its own (benchmarks/loss.py)
        self.wall_clock = wall_clock  # epoch seconds; a test passes its own
        self.model_id = model.identity
        self.streams: dict[str, _Stream] = {}
        self.gap_timeout_s = gap_timeout_s
        self.end_on_eos = end_on_eos
        self.end_when_all_ended = end_when_all_ended
        self._finished = False
        self._out: asyncio.Queue[ReceivedFrame | BaseException | None] = asyncio.Queue(64)
        self._tasks: list[asyncio.Task[None]] = []
        self._requests: set[asyncio.Task[None]] = set()  # keyframe requests in flight

    # -- transport hooks -----------------------------------------------------------------------

    async def send_keyframe_request(self, stream: str, payload: str) -> None:
        """Carry a keyframe request (JSON text) back to `stream`'s sender."""
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------------

    def start_ticking(self) -> None:
        """Start the timer that turns long gaps into losses (call once the transport runs)."""
        self._tasks.append(asyncio.create_task(self._tick()))

    def add_task(self, task: asyncio.Task[None]) -> None:
        """A transport task (e.g. a consumer loop) cancelled with the receiver."""
        self._tasks.append(task)

    async def stop_tasks(self) -> None:
        await cancel_and_wait(*self._tasks, *self._requests)
        self._tasks = []

    def __aiter__(self) -> PacketReceiver:
        return self

    async def __anext__(self) -> ReceivedFrame:
        item = await self._out.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def take_ready(self) -> list[ReceivedFrame]:
        """The frames decoded and not yet taken, without waiting (a stopped receiver's last ones:
        its summary counts them)."""
        out: list[ReceivedFrame] = []
        while not self._out.empty():
            item = self._out.get_nowait()
            if isinstance(item, ReceivedFrame):
                out.append(item)
        return out

    async def fail(self, error: BaseException) -> None:
        """Hand a transport failure to the iterating caller."""
        await self._out.put(error)

    async def finish(self) -> None:
        """End the iteration (e.g. the transport closed)."""
        await self._out.put(None)

    # -- stats ---------------------------------------------------------------------------------

    def summary(self) -> ReceiverSummary:
        """Totals over all streams (keys of DESIGN.md §6) plus `streams`: the same per stream."""
        allc = [s.counters for s in self.streams.values()]
        lat = [x for c in allc for x in c.latencies_ms]
        return ReceiverSummary(
            frames_received=sum(c.frames_received for c in allc),
            frames_decoded=sum(c.frames_decoded for c in allc),
            frames_lost=sum(c.frames_lost for c in allc),
            frames_shed=sum(c.frames_shed for c in allc),
            keyframes=sum(c.keyframes for c in allc),
            duplicates=sum(c.duplicates for c in allc),
            keyframe_requests=sum(c.keyframe_requests for c in allc),
            packets_rejected=sum(c.packets_rejected for c in allc),
            conflicting_packets=sum(c.conflicting_packets for c in allc),
            latency_ms_p50=round(percentile(lat, 50), 2) if lat else None,
            latency_ms_p99=round(percentile(lat, 99), 2) if lat else None,
            # several streams together: the sum of their rates (stream/bitrate.py)
            tokens_per_s=round(sum(c.rate.tokens_per_s() for c in allc), 1),
            bits_per_s=round(sum(c.rate.bits_per_s() for c in allc), 1),
            streams={name: s.counters.summary() for name, s in self.streams.items()},
        )

    # -- feeding -------------------------------------------------------------------------------

    def stream(self, name: str) -> _Stream:
        if name not in self.streams:
            self.streams[name] = _Stream(name, self.model, self.gap_timeout_s)
        return self.streams[name]

    def feed_info(self, name: str, payload: bytes | str) -> None:
        """A stream's JSON description; refuses a stream made by another model. An empty one withdraws
        it: its publisher left, or died (its will). A new publisher session on a stream whose
        publisher is still live is a second publisher on one name (warned, once); after the
        earlier one left, a new run of the stream (decoded afresh)."""
        if not payload:
            if name in self.streams:
                self.streams[name].announced = False
            return
        try:
            info = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("stream %s: ignoring malformed info", name)
            return
        s = self.stream(name)
        s.info = info if isinstance(info, dict) else {}
        mid = s.info.get("model_id")
        if mid and mid != self.model_id.hex():
            raise StreamError(f"stream {name!r} is for model {mid}, this receiver runs model {self.model_id.hex()}")
        session = s.info.get("session")
        if isinstance(session, str):
            if s.publisher is not None and session != s.publisher:
                if s.announced and not s.counters.ended:
                    self._conflict(s, f"publisher session {session} started while session {s.publisher} is live")
                else:
                    s.restart(self.model, self.gap_timeout_s)
            s.publisher = session
            s.counters.sessions.add(session)
        s.announced = True

    def _conflict(self, s: _Stream, why: str) -> None:
        if s.conflict_said:
            return
        s.conflict_said = True
        log.warning("stream %r has two publishers (%s): one's frames are dropped as duplicates; give each camera "
                    "its own --stream", s.name, why)

    def _remember(self, s: _Stream, header: PacketHeader, data: bytes) -> None:
        """Note the frame's capture time (a v3 non-keyframe, which carries only a difference: its CRC) under
        its index; another under a known index is another publisher's frame (a redelivered packet carries
        the same)."""
        if header.end_of_stream and header.n == 0:
            return
        if s.last_index is None or header.frame_index > s.last_index:
            s.last_index = header.frame_index
        seen, mark = s.recent.get(header.frame_index), _identity(header, data)
        if seen is None:
            s.recent[header.frame_index] = mark
            if len(s.recent) > RECENT_FRAMES:
                del s.recent[next(iter(s.recent))]  # the oldest: dicts keep insertion order
        elif seen != mark:
            s.counters.conflicting_packets += 1
            self._conflict(s, f"frame {header.frame_index} arrived twice with different capture times")

    @staticmethod
    def _place(s: _Stream, header: PacketHeader, data: bytes) -> PacketHeader:
        """A v3 non-keyframe's header with its full frame index, found for its low byte (docs/PACKET.md §7.3).

        Read near the index the stream expects next (or after the highest received, while it waits for a
        keyframe): a packet up to 127 ahead or 128 behind is placed right. One that lands behind on an index
        already received with other bytes is not a repeat but 128 to 255 frames ahead (packets were lost
        in a long silence): it goes there, so the orderer sees the gap, counts the frames lost and asks for
        a keyframe (the coder state could not decode it anyway)."""
        if not header.relative:
            return header
        near = s.order.expected if s.order.expected is not None else (
            s.last_index + 1 if s.last_index is not None else None)
        if near is None:
            return header  # nothing received yet: the orderer waits for a keyframe and drops it
        index = extend_frame_index(header.frame_index, near)
        seen = s.recent.get(index)
        if index < near and seen is not None and seen != _identity(header, data):
            index += 256
        return replace(header, frame_index=index)

    def others_live(self) -> bool:
        """Whether streams this receiver does not decode are still announced (a worker's hook)."""
        return False

    def others_ended(self) -> bool:
        """Whether a stream this receiver does not decode has ended (a worker's hook)."""
        return False

    async def check_all_ended(self) -> None:
        """With `end_when_all_ended`: end the iteration once every stream known has ended (see the class)."""
        if not self.end_when_all_ended or self._finished:
            return
        streams = list(self.streams.values())
        if not (any(s.counters.ended for s in streams) or self.others_ended()) or self.others_live():
            return
        if all(s.counters.ended or (not s.announced and not s.counters.frames_received) for s in streams):
            self._finished = True
            await self._out.put(None)

    async def feed(self, name: str, payload: bytes) -> None:
        """One packet's bytes as they came off the transport (bad ones are logged and dropped)."""
        s = self.stream(name)
        try:
            s.session.check_size(payload)  # a 16 MB packet of a 4K model is refused before its CRC is read
            # framing and CRC (a v3 non-keyframe's covers our model id: another model's stream fails it); the
            # payload is decoded in order, later
            header = verify_packet(payload, model_id=self.model_id)
            _check_model(header, self.model_id)
            s.session.check(header)  # one our model could have made, within our size limit
        except PacketError as e:
            if "this receiver runs model" in str(e):
                raise StreamError(f"stream {name!r}: {e}") from e
            log.warning("stream %s: dropping a bad packet: %s", name, e)
            s.counters.packets_rejected += 1
            return
        header = self._place(s, header, payload)  # a v3 non-keyframe's frame index, from its low byte
        self._remember(s, header, payload)
        packet = _Arrived(header, bytes(payload))
        if not (packet.end_of_stream and packet.n == 0):
            s.counters.frames_received += 1
        waiting = s.order.waiting_for_keyframe
        await self._handle(s, s.order.push(packet, self.clock()))
        if s.shedding and waiting and not packet.keyframe and not packet.end_of_stream:
            s.counters.frames_shed += 1  # part of the backlog, dropped while the keyframe comes

    # -- internals -----------------------------------------------------------------------------

    async def _handle(self, s: _Stream, res: OrderResult[_Arrived]) -> None:
        c = s.counters
        c.duplicates += int(res.duplicate)
        c.frames_lost += res.lost
        c.frames_skipped += res.skipped
        if res.need_keyframe:
            self._request_keyframe(s, "gap" if c.frames_decoded else "join")
        for i, packet in enumerate(res.ready):
            if packet.keyframe:
                s.shedding = False
            elif self._too_late(s, packet):
                # behind by more than max_lag_s: drop this frame and everything queued behind it
                # up to the next keyframe, which we ask for now
                dropped = s.order.resync()
                s.counters.frames_shed += 1 + dropped
                s.shedding = True
                self._request_keyframe(s, "late")
                for rest in res.ready[i + 1:]:
                    await self._handle(s, s.order.push(rest, self.clock()))
                    if not rest.keyframe and s.order.waiting_for_keyframe:
                        s.counters.frames_shed += 1
                return
            if packet.end_of_stream and packet.n == 0:
                await self._ended(s)
                continue
            await self._decode(s, packet)
            if packet.end_of_stream:
                await self._ended(s)

    async def _ended(self, s: _Stream) -> None:
        s.counters.ended = True
        if self.end_on_eos:
            await self._out.put(None)
        else:
            await self.check_all_ended()

    def _too_late(self, s: _Stream, packet: _Arrived) -> bool:
        if self.max_lag_s is None or (packet.end_of_stream and packet.n == 0):
            return False
        capture_us = self._capture_us(s, packet)
        if capture_us is None:
            return False  # a v3 non-keyframe that does not follow the decoded ones: decoding refuses it
        lat = (self._now_us() - capture_us) / 1e3
        s.best_latency_ms = min(s.best_latency_ms, lat)
        return lat - s.best_latency_ms > 1e3 * self.max_lag_s

    @staticmethod
    def _capture_us(s: _Stream, packet: _Arrived) -> int | None:
        """A packet's capture time; a v3 non-keyframe's is the difference it carries plus the capture time
        of the packet decoded before it (ready packets are decoded in order, each before the next is read)."""
        if not (isinstance(packet, _Arrived) and packet.header.relative):
            return packet.timestamp_us
        last = s.session.coder.timestamp_us
        return None if last is None else (last + packet.timestamp_us) % (1 << 64)

    def _now_us(self) -> int:
        """The wall clock in µs, the unit of the packets' capture timestamps."""
        return round(self.wall_clock() * 1e6)

    async def _decode(self, s: _Stream, arrived: _Arrived) -> None:
        try:
            packet, frame = await asyncio.to_thread(s.session.decode_packet, arrived.data)
        except (TokenizerError, PacketError) as e:
            # a frame size we have no state for, or a payload the coder state cannot decode (it does
            # not follow the last packet): resync at a keyframe
            log.warning("stream %s: %s", s.name, e)
            s.order = StreamOrderer(gap_timeout_s=self.gap_timeout_s)
            self._request_keyframe(s, "resync")
            return
        now_us = self._now_us()
        grid = np.full(packet.n, -1, np.int32)
        grid[packet.mask] = packet.indices.astype(np.int32)
        bits = 8 * len(arrived.data)
        lat = (now_us - packet.timestamp_us) / 1e3
        t = self.clock()
        await self._out.put(ReceivedFrame(s.name, packet.frame_index, packet.timestamp_us, packet.keyframe,
                                          grid.reshape(packet.grid_h, packet.grid_w), frame, lat, bits))
        # counted once handed over (a put into a queue with room does not yield): a receiver stopped
        # while this waited for room counts only frames its caller can have (`take_ready`)
        c = s.counters
        c.frames_decoded += 1
        c.keyframes += int(packet.keyframe)
        c.tokens += packet.k
        c.bits += bits
        c.rate.add(len(arrived.data), packet.timestamp_us, packet.k)
        c.latencies_ms.append(lat)
        c.t_first = t if c.t_first is None else c.t_first
        c.t_last = t

    def _request_keyframe(self, s: _Stream, reason: str) -> None:
        now = self.clock()
        if now - s.last_request < KEYFRAME_REQUEST_INTERVAL_S:
            return
        s.last_request = now
        s.counters.keyframe_requests += 1
        req = {"type": "keyframe", "reason": reason, "from_frame": s.order.expected}
        # not awaited (decoding goes on); a lost request is repeated on the next non-decodable packet
        task = asyncio.create_task(self._send_request(s.name, json.dumps(req)))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _send_request(self, name: str, payload: str) -> None:
        try:
            await self.send_keyframe_request(name, payload)
        except (StreamError, ConnectionError) as e:
            log.warning("stream %s: keyframe request not sent: %s", name, e)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            await self.poll_gaps()

    async def poll_gaps(self) -> None:
        """Turn gaps open longer than the timeout into losses (the ticker calls this every 50 ms)."""
        now = self.clock()
        for s in list(self.streams.values()):
            res = s.order.poll(now)
            if res.lost or res.need_keyframe or res.ready:
                await self._handle(s, res)
