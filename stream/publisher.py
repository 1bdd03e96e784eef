"""A stream's packets onto MQTT: tokens (QoS 1, or 0 where a loss is repaired by a keyframe),
retained info, periodic stats, and keyframe requests from receivers on the control topic."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from types import TracebackType
from typing import Any

import aiomqtt

from livetok.engine.config import SenderConfig
from livetok.engine.runtime import Runtime

from .broker_url import topics
from .cancelling import cancel_and_wait
from .errors import StreamError
from .mqtt import Brokers, MqttLink
from .session import SenderSession
from .wire import peek_header

log = logging.getLogger(__name__)

TOKEN_QOS = (0, 1)  # QoS levels offered for token packets


class TokenPublisher:
    """Publishes one stream. Use as `async with TokenPublisher(broker, "cam0", info) as pub:`.

    Args:
        broker: the broker.
        stream: the stream name (topics `livetok/<stream>/...`).
        info: JSON-able stream description (model identity, fps, frame size...), retained on the
            info topic so late joiners read it first; `update_info` replaces it.
        first_connect_timeout_s: fail with a clear error if the broker is not reachable in time
            (None: keep retrying with backoff).
        qos: QoS of the token packets: 1 (default) loses nothing, even across a broker restart; 0
            sends each packet once (no acks to wait for): a lost one is a gap the receiver repairs
            with a keyframe request. Keyframes and the end of stream go at QoS 1 even then: a lost
            keyframe would leave the receiver frozen for another request round (measured: recovery
            up to 1.45 s at 20 % loss when repair keyframes could be lost).

    The retained info is the stream's sign of life: it carries a random `session` id (one per
    publisher), is withdrawn (an empty retained message) when the publisher leaves, and by the
    broker through the publisher's will when its connection dies without a goodbye (a kill, a lost
    network; a reconnect publishes it again). So a receiver of every stream ('+') never takes an
    earlier run's stream for a live one. The publisher also reads its own info topic: another
    session's info there means a second publisher on the same stream name (two cameras given one
    --stream: receivers would drop one's frames as duplicates), said in one warning and listed in
    `other_sessions`.
    """

    def __init__(self, broker: Brokers, stream: str, info: dict[str, Any] | None = None,
                 first_connect_timeout_s: float | None = None, identifier: str | None = None, qos: int = 1) -> None:
        if qos not in TOKEN_QOS:
            raise ValueError(f"token QoS must be one of {', '.join(map(str, TOKEN_QOS))}, got {qos!r}")
        self.qos = qos
        self.topics = topics(stream)
        if self.topics.wildcard:
            raise ValueError(f"cannot publish to the wildcard stream {stream!r}")
        self.stream = stream
        self.session = uuid.uuid4().hex[:12]
        self.started = time.time()
        self.info: dict[str, Any] = self._stamped(info or {})
        self._keyframe_requested = False
        self.keyframe_requests = 0
        self.first_connect_timeout_s = first_connect_timeout_s
        self.other_sessions: set[str] = set()  # other publishers seen on this stream's info topic
        # the session of the last info seen on the topic after our own came back to us (what came
        # before is older: the retained info ours replaced); None: withdrawn, or not seen yet
        self._info_owner: str | None = None
        self._echoed = False
        self._leaving = False
        self.link = MqttLink(broker, [(self.topics.control, 1), (self.topics.info, 1)], identifier=identifier,
                             on_connect=self._on_connect,
                             will=aiomqtt.Will(self.topics.info, b"", qos=1, retain=True))
        self._reader: asyncio.Task[None] | None = None

    def _stamped(self, info: dict[str, Any]) -> dict[str, Any]:
        return {**info, "session": self.session, "started": round(self.started, 3)}

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        await client.publish(self.topics.info, json.dumps(self.info, sort_keys=True), qos=1, retain=True)

    async def __aenter__(self) -> TokenPublisher:
        await self.link.start(self.first_connect_timeout_s)
        self._reader = asyncio.create_task(self._read_control())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._leaving = True
        await cancel_and_wait(self._reader)
        try:
            await self._withdraw_info()
        finally:
            await self.link.close()

    async def _withdraw_info(self) -> None:
        """The stream is over: take its retained info off the broker (a clean disconnect sends no
        will), unless another publisher's info has replaced ours there."""
        if self._info_owner not in (None, self.session):
            return
        try:
            await asyncio.wait_for(self.link.publish(self.topics.info, b"", qos=1, retain=True), 2.0)
        except (TimeoutError, StreamError) as e:  # the broker is gone: a stale info stays until a restart
            log.info("stream %s: could not withdraw its info: %s", self.stream, e)

    async def _read_control(self) -> None:
        while True:
            msg = await self.link.messages.get()
            payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
            if str(msg.topic) == self.topics.info:
                await self._on_info(payload)
                continue
            try:
                req = json.loads(payload.decode()) if payload else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                log.warning("ignoring a malformed control message on %s", msg.topic)
                continue
            if isinstance(req, dict) and req.get("type") == "keyframe":
                self._keyframe_requested = True
                self.keyframe_requests += 1

    async def _on_info(self, payload: bytes) -> None:
        """Our info topic changed: our own info (the broker echoes it), another publisher's, or
        withdrawn (a publisher that left, or whose will the broker published)."""
        if not payload:
            self._info_owner = None
            if not self._leaving:
                # while we stream, the stream is announced: put our info back (an earlier
                # publisher on this name, leaving or dying, took it away)
                await self.link.publish(self.topics.info, json.dumps(self.info, sort_keys=True), qos=1, retain=True)
            return
        try:
            info = json.loads(payload.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        session = info.get("session") if isinstance(info, dict) else None
        if session == self.session:
            self._echoed, self._info_owner = True, session
            return
        if self._echoed:
            self._info_owner = session if isinstance(session, str) else "?"  # published after ours
        if not isinstance(session, str) or session in self.other_sessions:
            return  # a publisher older than sessions (or its stale info): nothing to tell apart
        self.other_sessions.add(session)
        src = info.get("source")
        log.warning("stream %r has another publisher (session %s%s): receivers will drop one publisher's frames "
                    "as duplicates; give each camera its own --stream", self.stream, session,
                    f", source {src}" if src else "")

    def take_keyframe_request(self) -> bool:
        """True once per batch of keyframe requests received since the last call."""
        r, self._keyframe_requested = self._keyframe_requested, False
        return r

    async def send(self, data: bytes) -> None:
        qos = self.qos
        if qos == 0:
            h = peek_header(data)
            qos = 1 if h.keyframe or h.end_of_stream else 0
        await self.link.publish(self.topics.tokens, data, qos=qos)

    async def update_info(self, info: dict[str, Any]) -> None:
        self.info = self._stamped(info)
        await self.link.publish(self.topics.info, json.dumps(self.info, sort_keys=True), qos=1, retain=True)

    async def send_stats(self, stats: dict[str, Any]) -> None:
        payload = json.dumps({**stats, "time": time.time()}, sort_keys=True, default=str)
        await self.link.publish(self.topics.stats, payload, qos=0)


class LivePublisher:
    """Frames in, packets out: the Python API for embedding a sender (e.g. in a robot's loop).

        async with LivePublisher(model, parse_broker_url("mqtt://host:1883"), "cam0") as pub:
            await pub.publish(frame)          # uint8 RGB [H, W, 3]

    Encoding runs in a worker thread; `publish` returns once the broker has the packet.
    """

    def __init__(self, model: Runtime, broker: Brokers, stream: str, sender: SenderConfig | None = None,
                 fps: float = 30.0, first_connect_timeout_s: float | None = 10.0, qos: int = 1) -> None:
        self.session = SenderSession(model, sender)
        self.info = {"model_id": model.identity.hex(), "preset": model.cfg.name, "fps": fps,
                     "keyframe_interval": self.session.sender.keyframe_interval,
                     "bits_per_index": self.session.bits}
        self.publisher = TokenPublisher(broker, stream, self.info, first_connect_timeout_s, qos=qos)
        self._sized = False

    async def __aenter__(self) -> LivePublisher:
        await self.publisher.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if et is None:
                await self.publisher.send(self.session.end_of_stream(time.time_ns() // 1000))
        finally:
            await self.publisher.__aexit__(et, e, tb)

    async def publish(self, frame: Any, timestamp_us: int | None = None) -> int:
        """Encode and publish one frame; returns its frame index."""
        ts = time.time_ns() // 1000 if timestamp_us is None else timestamp_us
        if not self._sized:
            await self.publisher.update_info({**self.info, "width": int(frame.shape[1]), "height": int(frame.shape[0])})
            self._sized = True
        tokens = await asyncio.to_thread(self.session.step, frame, self.publisher.take_keyframe_request())
        _, data = self.session.packetize(tokens, ts)
        await self.publisher.send(data)
        return tokens.frame_index
