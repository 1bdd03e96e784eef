"""A lossy MQTT relay for real runs: a loopback TCP relay between MQTT clients and a real broker
that reads the clients' MQTT framing (fixed header + remaining-length varint) and drops whole QoS-0
PUBLISH packets on chosen topics at a seeded rate (independent or in bursts), forwarding every other
byte untouched. The kernel's netem is not available here; this is the "small lossy relay between
the real endpoints" of issue 7 (benchmarks/loss.py --real, tests/test_lossy_relay.py).

    async with LossyRelay("127.0.0.1", 1883, "livetok/cam0/tokens", loss=0.05, seed=1) as relay:
        ...  # the publisher connects to mqtt://127.0.0.1:{relay.port}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from paho.mqtt.client import topic_matches_sub

from livetok.stream.errors import StreamError

from .lossy import LossConfig, LossyLink

log = logging.getLogger(__name__)

__all__ = ["MAX_REMAINING_LENGTH", "LossyRelay", "MqttFramer", "PublishHeader", "parse_publish"]

MAX_REMAINING_LENGTH = 268_435_455  # MQTT's largest: four varint bytes
PUBLISH = 3  # MQTT control packet type


@dataclass(frozen=True)
class PublishHeader:
    topic: str
    qos: int


class MqttFramer:
    """Splits a byte stream into whole MQTT control packets (pure, incremental).

    `feed(chunk)` returns the packets completed by `chunk`, each as its full bytes (fixed header
    included); a packet split over several reads is held until its last byte comes. A malformed
    remaining length raises StreamError.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        out: list[bytes] = []
        while True:
            size = self._packet_size()
            if size is None or len(self._buf) < size:
                return out
            out.append(bytes(self._buf[:size]))
            del self._buf[:size]

    @property
    def pending(self) -> int:
        """Bytes of an unfinished packet held back."""
        return len(self._buf)

    def _packet_size(self) -> int | None:
        # byte 0: type and flags; then 1-4 bytes of remaining length, 7 bits each, low first
        length, shift = 0, 0
        for i in range(1, 5):
            if i >= len(self._buf):
                return None
            b = self._buf[i]
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                return 1 + i + length
            shift += 7
        raise StreamError("malformed MQTT remaining length (more than 4 bytes)")


def parse_publish(packet: bytes) -> PublishHeader | None:
    """The topic and QoS of a PUBLISH packet (MQTT 3.1.1 and 5 alike); None for any other packet."""
    if len(packet) < 2 or packet[0] >> 4 != PUBLISH:
        return None
    qos = (packet[0] >> 1) & 0x03
    i = 1
    while packet[i] & 0x80:  # skip the remaining length
        i += 1
    i += 1
    if i + 2 > len(packet):
        return None
    n = int.from_bytes(packet[i:i + 2], "big")
    topic = packet[i + 2:i + 2 + n].decode("utf-8", errors="replace")
    return PublishHeader(topic, qos)


class LossyRelay:
    """Relay 127.0.0.1:<port> to a broker, dropping QoS-0 PUBLISH packets on `topic` (client to
    broker direction) at a seeded rate. Use inside a running event loop, as an async context manager.

    Args:
        host, target_port: the broker.
        topic: an MQTT topic filter (`+`/`#` allowed) whose publishes may be dropped.
        loss, burst, seed: the loss model of `livetok.bench.lossy.LossyLink` (mean loss rate, mean burst
            length in packets, 1 = independent; seed of the pattern).
        spare: called with (topic, payload) of each candidate packet; True keeps it whatever the
            draw (e.g. a loss-free tail, the end of stream). Decided per packet, so it does not
            depend on when the relay gets to read it.
        on_drop: called with (topic, payload) for each dropped packet.

    QoS-1/2 publishes are forwarded: MQTT would repair their loss by retransmission, so dropping
    them models a stall, not a loss. A stall is `hold()`: the broker-to-client direction queues
    (acks, subscribed messages) until `release()`, while the connection stands, as on a stalled link.
    """

    def __init__(self, host: str, target_port: int, topic: str, *, loss: float, burst: float = 1.0, seed: int = 0,
                 spare: Callable[[str, bytes], bool] | None = None,
                 on_drop: Callable[[str, bytes], None] | None = None) -> None:
        self.host = host
        self.target_port = target_port
        self.topic = topic
        self.link = LossyLink(LossConfig(loss=loss, burst=burst, seed=seed))
        self.spare = spare
        self.on_drop = on_drop
        self.port = 0
        self.matched = 0  # QoS-0 publishes on the topic that could be dropped (not spared)
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._released = asyncio.Event()
        self._released.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._clients: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def __aenter__(self) -> LossyRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await t

    def hold(self) -> None:
        """Stall the broker-to-client direction (bytes wait in the relay)."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    @property
    def connections(self) -> int:
        """Client connections open on the client's side (its end not yet closed, nor cut)."""
        return len(self._clients)

    def cut(self) -> None:
        """Close every relayed connection on the client's side, as a dying broker or link would."""
        for w in list(self._clients):
            w.close()

    def _drops(self, packet: bytes) -> bool:
        head = parse_publish(packet)
        if head is None or head.qos != 0 or not topic_matches_sub(self.topic, head.topic):
            return False
        payload = _payload(packet)
        if self.spare is not None and self.spare(head.topic, payload):
            return False
        self.matched += 1
        if not self.link.drops():
            return False
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop(head.topic, payload)
        return True

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError as e:
            log.warning("lossy relay: broker %s:%d unreachable: %s", self.host, self.target_port, e)
            c_writer.close()
            return
        self._clients.add(c_writer)
        up = asyncio.create_task(self._upstream(c_reader, s_writer))
        down = asyncio.create_task(self._downstream(s_reader, c_writer))
        for task in (up, down):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # the client's end is closed once the upstream copy ends, whoever closed it (the client, `cut`, or the
        # downstream copy when the broker went): the downstream copy itself may be held
        up.add_done_callback(lambda _: self._clients.discard(c_writer))

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = MqttFramer()
        try:
            while data := await reader.read(65536):
                kept = [p for p in framer.feed(data) if not self._drops(p)]
                if kept:
                    writer.write(b"".join(kept))
                    await writer.drain()
        except StreamError as e:
            log.warning("lossy relay: closing a connection: %s", e)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._released.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def _payload(packet: bytes) -> bytes:
    """A QoS-0 PUBLISH packet's application payload (MQTT 3.1.1: no packet id, no properties)."""
    i = 1
    while packet[i] & 0x80:
        i += 1
    i += 1
    n = int.from_bytes(packet[i:i + 2], "big")
    return packet[i + 2 + n:]
