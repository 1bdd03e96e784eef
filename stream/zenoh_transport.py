"""Zenoh as a transport beside MQTT and WebRTC: the same packets, the same receiver (`PacketReceiver`).

Key expressions mirror the MQTT topics: ``livetok/<stream>/tokens`` (the packets, reliable),
``livetok/<stream>/control`` (keyframe requests from receivers, JSON), ``livetok/<stream>/info`` (the
stream's JSON description). Zenoh keeps no retained messages: the publisher answers queries on the info key
(a queryable), so a receiver that joins late asks for it, and it also puts the info once when it starts
and deletes it when it leaves. A late joiner's first packets are not keyframes: the receiver asks for one on
the control key and starts there, as over MQTT.

Each packet carries the camera's ``frame_id`` as the Zenoh sample's attachment; its capture time (the
sender's clock, one clock for every camera of a publisher) is in the packet itself.

Sessions: ``peer`` mode (default) needs no router: the publisher listens on ENDPOINT and receivers connect
to it. ``client`` mode connects both ends to a Zenoh router at ENDPOINT (``zenohd``, or any Zenoh session
opened in router mode: `open_router`). Multicast scouting is off, so nothing is discovered beyond the
endpoints given. eclipse-zenoh is imported only when a session is opened (`optional.require`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from livetok.engine.runtime import Runtime

from .errors import StreamError
from .optional import require
from .packet_receiver import PacketReceiver
from .summaries import ZenohReceiverSummary

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp/127.0.0.1:7447"
MODES = ("peer", "client")


@dataclass(frozen=True)
class ZenohConfig:
    """Where Zenoh sessions meet. `endpoint`: a Zenoh locator (tcp/HOST:PORT, udp/..., quic/...).
    `mode`: "peer" (publisher listens on the endpoint, receivers connect to it; no router) or "client"
    (both connect to a router at the endpoint)."""

    endpoint: str = DEFAULT_ENDPOINT
    mode: str = "peer"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Zenoh mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if "/" not in self.endpoint:
            raise ValueError(f"bad Zenoh endpoint {self.endpoint!r}: use PROTOCOL/HOST:PORT, e.g. {DEFAULT_ENDPOINT}")


def parse_zenoh(text: str | None, mode: str = "peer") -> ZenohConfig:
    """`--zenoh [ENDPOINT]`: a bare HOST:PORT means tcp/HOST:PORT."""
    if not text:
        return ZenohConfig(mode=mode)
    return ZenohConfig(text if "/" in text else f"tcp/{text}", mode)


def key(stream: str, what: str) -> str:
    """The key expression of a stream's `what` (tokens, info, control); stream "+" (MQTT's wildcard) is "*"."""
    return f"livetok/{'*' if stream == '+' else stream}/{what}"


def stream_of(key_expr: str) -> str:
    parts = str(key_expr).split("/")
    if len(parts) != 3 or parts[0] != "livetok":
        raise StreamError(f"not a livetok key expression: {key_expr}")
    return parts[1]


def _zenoh() -> Any:
    return require("zenoh", "eclipse-zenoh", "the Zenoh transport")


def _config(mode: str, listen: list[str] | None = None, connect: list[str] | None = None) -> Any:
    z = _zenoh()
    c = z.Config()
    c.insert_json5("mode", json.dumps(mode))
    c.insert_json5("scouting/multicast/enabled", "false")  # meet only where told: loopback stays loopback
    if listen:
        c.insert_json5("listen/endpoints", json.dumps(listen))
    if connect:
        c.insert_json5("connect/endpoints", json.dumps(connect))
    return c


def open_session(cfg: ZenohConfig, listen: bool) -> Any:
    """A Zenoh session (blocking call): in peer mode `listen` picks the end that listens on the endpoint."""
    z = _zenoh()
    if cfg.mode == "client":
        conf = _config("client", connect=[cfg.endpoint])
    elif listen:
        conf = _config("peer", listen=[cfg.endpoint])
    else:
        conf = _config("peer", connect=[cfg.endpoint])
    try:
        return z.open(conf)
    except Exception as e:  # zenoh raises its own ZError: address in use, nothing to connect to...
        raise StreamError(f"cannot open a Zenoh {cfg.mode} session "
                          f"({'listening on' if listen and cfg.mode == 'peer' else 'connecting to'} "
                          f"{cfg.endpoint}): {e}") from None


def open_router(endpoint: str = DEFAULT_ENDPOINT) -> Any:
    """A Zenoh router listening on `endpoint`, run by the eclipse-zenoh library itself (router mode). Neither
    Debian nor PyPI packages `zenohd`; the library's router mode routes between clients the same way (close
    it to stop it)."""
    z = _zenoh()
    try:
        return z.open(_config("router", listen=[endpoint]))
    except Exception as e:
        raise StreamError(f"cannot start a Zenoh router on {endpoint}: {e}") from None


class ZenohPublisher:
    """One stream's packets onto Zenoh: a pipeline sink (`send`, `take_keyframe_request`). Use as
    `async with ZenohPublisher(session, "cam0", info, frame_id="cam0_optical") as pub:`.

    Args:
        session: an open Zenoh session (shared by the cameras of one process).
        stream: the stream name.
        info: its JSON description (model identity, fps, size...), answered to queries on the info key.
        frame_id: the camera's coordinate frame, attached to every packet (default: the stream name).
    """

    def __init__(self, session: Any, stream: str, info: dict[str, Any] | None = None,
                 frame_id: str | None = None) -> None:
        if stream == "+" or "/" in stream or "*" in stream:
            raise ValueError(f"cannot publish to the stream name {stream!r}")
        self.session = session
        self.stream = stream
        self.frame_id = frame_id or stream
        self.info: dict[str, Any] = {**(info or {}), "frame_id": self.frame_id}
        self.keyframe_requests = 0
        self._requested = threading.Event()  # set on zenoh's threads, read by the pipeline
        self._pub: Any = None
        self._decls: list[Any] = []

    async def __aenter__(self) -> ZenohPublisher:
        await asyncio.to_thread(self._declare)
        return self

    def _declare(self) -> None:
        z = _zenoh()
        # reliable and blocking: a packet once made is never dropped (the decoder needs every one), as QoS 1
        self._pub = self.session.declare_publisher(key(self.stream, "tokens"), reliability=z.Reliability.RELIABLE,
                                                   congestion_control=z.CongestionControl.BLOCK)
        self._decls.append(self.session.declare_subscriber(key(self.stream, "control"), self._on_control))
        self._decls.append(self.session.declare_queryable(key(self.stream, "info"), self._on_query))
        self.session.put(key(self.stream, "info"), self._info_text())

    def _info_text(self) -> str:
        return json.dumps(self.info, sort_keys=True)

    def _on_control(self, sample: Any) -> None:
        try:
            req = json.loads(sample.payload.to_bytes())
        except ValueError:
            log.warning("ignoring a malformed control message on %s", sample.key_expr)
            return
        if isinstance(req, dict) and req.get("type") == "keyframe":
            self.keyframe_requests += 1
            self._requested.set()

    def _on_query(self, query: Any) -> None:
        query.reply(key(self.stream, "info"), self._info_text())

    async def update_info(self, info: dict[str, Any]) -> None:
        self.info = {**info, "frame_id": self.frame_id}
        await asyncio.to_thread(self.session.put, key(self.stream, "info"), self._info_text())

    def take_keyframe_request(self) -> bool:
        if self._requested.is_set():
            self._requested.clear()
            return True
        return False

    async def wait_matched(self, timeout_s: float) -> bool:
        """Wait until a subscriber matches the tokens key (True), or `timeout_s` passes (False)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while not self._pub.matching_status.matching:
            if loop.time() >= end:
                return False
            await asyncio.sleep(0.02)
        return True

    async def send(self, data: bytes) -> None:
        self._pub.put(data, attachment=self.frame_id.encode())

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        def undeclare() -> None:
            with contextlib.suppress(Exception):  # the session may be closing already
                self.session.delete(key(self.stream, "info"))  # the stream is over: receivers see it withdrawn
            for d in [*self._decls, self._pub]:
                if d is not None:
                    with contextlib.suppress(Exception):
                        d.undeclare()

        await asyncio.to_thread(undeclare)


class ZenohReceiver(PacketReceiver):
    """Receives and decodes live streams over Zenoh; iterate it for `ReceivedFrame`s.

    Args:
        model: the decoder.
        cfg: where to meet the publisher (peer: connect to its endpoint; client: to the router).
        stream: a stream name, or "+" for every stream.
        session: an already open session to use (not closed here); default: open one from `cfg`.
        gap_timeout_s, max_lag_s: see PacketReceiver.
    """

    def __init__(self, model: Runtime, cfg: ZenohConfig, stream: str, *, session: Any = None,
                 gap_timeout_s: float = 0.3, max_lag_s: float | None = None) -> None:
        wildcard = stream == "+"
        super().__init__(model, gap_timeout_s=gap_timeout_s, end_on_eos=not wildcard, max_lag_s=max_lag_s)
        self.cfg = cfg
        self.stream_name = stream
        self.wildcard = wildcard
        self.session = session
        self._own_session = session is None
        self.frame_ids: dict[str, str] = {}  # stream -> the frame_id its packets carry
        self._decls: list[Any] = []
        self._inbox: asyncio.Queue[tuple[str, str, bytes] | None] = asyncio.Queue()

    async def __aenter__(self) -> ZenohReceiver:
        if self.session is None:
            self.session = await asyncio.to_thread(open_session, self.cfg, False)
        loop = asyncio.get_running_loop()

        def on(kind: str) -> Any:
            def callback(sample: Any) -> None:  # zenoh's thread: hand over to the event loop, in order
                payload = b"" if str(sample.kind) == "SampleKind.DELETE" else sample.payload.to_bytes()
                if kind == "tokens" and sample.attachment is not None:
                    self.frame_ids.setdefault(stream_of(str(sample.key_expr)), sample.attachment.to_string())
                loop.call_soon_threadsafe(self._inbox.put_nowait, (kind, str(sample.key_expr), payload))
            return callback

        def declare() -> None:
            assert self.session is not None
            self._decls.append(self.session.declare_subscriber(key(self.stream_name, "info"), on("info")))
            self._decls.append(self.session.declare_subscriber(key(self.stream_name, "tokens"), on("tokens")))
            # a late joiner asks for the info the publisher put before it came (no retained messages here)
            for reply in self.session.get(key(self.stream_name, "info"), timeout=2.0):
                if reply.ok is not None:
                    loop.call_soon_threadsafe(self._inbox.put_nowait,
                                              ("info", str(reply.ok.key_expr), reply.ok.payload.to_bytes()))

        await asyncio.to_thread(declare)
        self.add_task(asyncio.create_task(self._consume()))
        self.start_ticking()
        return self

    async def _consume(self) -> None:
        try:
            while (item := await self._inbox.get()) is not None:
                kind, key_expr, payload = item
                name = stream_of(key_expr)
                if kind == "info":
                    self.feed_info(name, payload)
                else:
                    await self.feed(name, payload)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # hand any failure (a model mismatch) to the iterating caller
            await self.fail(e)

    async def send_keyframe_request(self, stream: str, payload: str) -> None:
        if self.session is None:
            raise StreamError("the Zenoh session is closed")
        await asyncio.to_thread(self.session.put, key(stream, "control"), payload)

    def summary(self) -> ZenohReceiverSummary:
        return ZenohReceiverSummary.extending(super().summary(), transport="zenoh", frame_ids=dict(self.frame_ids))

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop_tasks()

        def close() -> None:
            for d in self._decls:
                with contextlib.suppress(Exception):
                    d.undeclare()
            if self._own_session and self.session is not None:
                self.session.close()

        await asyncio.to_thread(close)
        if self._own_session:
            self.session = None
