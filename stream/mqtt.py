"""One MQTT connection kept alive in the background (aiomqtt): reconnects with exponential backoff,
fails over between the nodes of a broker cluster, re-subscribes, and offers a `publish` that waits out
a reconnect instead of failing, so a broker restart or a dead node loses nothing at QoS 1 (duplicates
are possible; receivers drop them by index)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

import aiomqtt

from .broker_url import BrokerConfig
from .cancelling import cancel_and_wait
from .errors import StreamError

log = logging.getLogger(__name__)

OnConnect = Callable[[aiomqtt.Client], Awaitable[None]]
Brokers = BrokerConfig | Sequence[BrokerConfig]  # one broker, or the nodes of one cluster in order of preference

# getaddrinfo's "no such name" codes (EAI_AGAIN, a resolver that did not answer, keeps its own words)
_NAME_ERRORS = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
_ERRNO = re.compile(r"^\[Errno (-?\d+)\] (.+)$")


def never_resolves(host: str) -> bool:
    """RFC 6761 §6.4: names under .invalid never resolve, and resolvers should say so at once: we
    do, without asking a DNS server (offline, instantly)."""
    name = host.rstrip(".").lower()
    return name == "invalid" or name.endswith(".invalid")


def plain_reason(message: str, host: str) -> str:
    """aiomqtt's text of a failed connect ("[Errno 111] Connection refused") as words for people:
    "connection refused", "host name X does not resolve"; other reasons pass unchanged."""
    m = _ERRNO.match(message.strip())
    if m is None:
        return message
    code, text = int(m.group(1)), m.group(2).strip()
    if code in _NAME_ERRORS:
        return f"host name {host} does not resolve"
    return text[:1].lower() + text[1:]


def broker_list(brokers: Brokers) -> list[BrokerConfig]:
    """One broker or several as a non-empty list."""
    out = [brokers] if isinstance(brokers, BrokerConfig) else list(brokers)
    if not out:
        raise ValueError("at least one broker is needed")
    return out


def brokers_text(brokers: Brokers) -> str:
    """'mqtt://a:1883' or 'mqtt://a:1883, mqtt://b:1883' for messages."""
    return ", ".join(b.url for b in broker_list(brokers))


def _discard(client: aiomqtt.Client) -> None:
    """Leave nothing of an ended connection attempt behind. aiomqtt 2.5.1 (its private state: there is no public
    accessor) leaves two things that asyncio later logs as an ERROR with a traceback:
    - when the connection died inside `async with` (e.g. under a publish in `on_connect`), `__aexit__` returns early
      without reading the disconnect's error: "Future exception was never retrieved" once the client is collected.
      The error itself was already reported (the publish's MqttError, our one-line warning), so it is marked read.
    - when the attempt ended before the CONNACK (stopped, or timed out), paho still holds the socket, and, if it
      was stopped, the connect future is cancelled: the socket's later close runs aiomqtt's disconnect callback,
      which raises CancelledError inside the loop ("Exception in callback"). A fresh future makes that callback a
      no-op, and paho's disconnect closes the socket (after writing a DISCONNECT, as a polite client does).
    aiomqtt PR #375 reworks that exit."""
    disconnected = client._disconnected
    if disconnected.done() and not disconnected.cancelled():
        disconnected.exception()
    if client._connected.cancelled():
        client._connected = asyncio.Future()
    if client._client.socket() is not None:
        client._client.disconnect()


class MqttLink:
    """A background connection to one broker, or to one node at a time of a broker cluster.

    With several brokers (the nodes of one cluster, which share sessions: NATS with JetStream, EMQX,
    HiveMQ), a failed attempt or a lost connection moves on to the next node at once — the usual
    client-side failover of MQTT clients given a server list — and the backoff applies only after a
    whole round of nodes has failed. A persistent session (fixed `identifier`, `clean_session=False`)
    resumes on whichever node answers. `failovers` counts connections made to a node other than the
    last one connected to; `outages_s` lists each time without a connection, in seconds.

    Args:
        broker: where to connect (and how: credentials, TLS); a sequence for a cluster's nodes.
        subscriptions: (topic filter, QoS) pairs, (re)subscribed on every connect.
        identifier: MQTT client id; fixed ids plus `clean_session=False` make a persistent session
            (the broker queues QoS-1 messages for us while we are away, even across its restart).
        on_connect: awaited after every (re)connect, e.g. to publish retained info.
        max_backoff_s: the longest wait between connection attempts.
        attempt_timeout_s: how long one connection attempt (and a subscribe) may take before the next
            node is tried; default 10 s for one broker, 4 s for a cluster, where a node that accepts
            the connection but cannot yet resume the session (NATS re-electing the leader of the
            session's stream) should not hold up a node that can.
        will: published by the broker when this connection dies without saying goodbye (a crash, a
            lost network), e.g. an empty retained message that withdraws a worker's presence.
        messages_max: incoming messages buffered for a slow consumer; beyond it the oldest are dropped
            (counted in `messages_dropped`).
    """

    def __init__(
        self,
        broker: Brokers,
        subscriptions: list[tuple[str, int]] | None = None,
        identifier: str | None = None,
        clean_session: bool = True,
        on_connect: OnConnect | None = None,
        max_backoff_s: float = 5.0,
        messages_max: int = 1024,
        will: aiomqtt.Will | None = None,
        attempt_timeout_s: float | None = None,
    ) -> None:
        self.brokers = broker_list(broker)
        self._node = 0  # index into brokers of the node tried next / connected to
        self.subscriptions = subscriptions or []
        self.identifier = identifier or f"livetok-{uuid.uuid4().hex[:12]}"
        self.clean_session = clean_session
        self.on_connect = on_connect
        self.max_backoff_s = max_backoff_s
        self.will = will
        self.attempt_timeout_s = attempt_timeout_s or (10.0 if len(self.brokers) == 1 else 4.0)
        self.messages: asyncio.Queue[aiomqtt.Message] = asyncio.Queue(messages_max)
        self.connected = asyncio.Event()
        self.connects = 0
        self.messages_dropped = 0  # oldest messages dropped because the consumer fell behind
        self.last_error: str | None = None
        self.down_since: float | None = None
        self.downtime_s = 0.0  # total time spent disconnected after the first connect
        self.failovers = 0  # connections to a node other than the previous one's
        self.outages_s: list[float] = []  # each time spent disconnected after the first connect
        self._last_node: int | None = None
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self._quiet_until_connected = False

    @property
    def broker(self) -> BrokerConfig:
        """The node connected to, or tried next."""
        return self.brokers[self._node]

    async def start(self, first_connect_timeout_s: float | None = None) -> None:
        """Start connecting; with a timeout, wait that long for the first connection and raise
        StreamError (one line: the broker and the last reason, e.g. "connection refused") if it
        does not come. Until then failed attempts are retried quietly (logged at INFO): the error
        says what happened. Without a timeout every failed attempt is a warning."""
        self._quiet_until_connected = first_connect_timeout_s is not None
        self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.identifier}")
        if first_connect_timeout_s is not None:
            try:
                await asyncio.wait_for(self.connected.wait(), first_connect_timeout_s)
            except TimeoutError:
                await self.close()
                where = (f"broker {self.broker.url}" if len(self.brokers) == 1
                         else f"any of the brokers {brokers_text(self.brokers)}")
                raise StreamError(
                    f"cannot connect to {where}: {self.last_error or self._no_answer_reason()} "
                    f"(gave up after {first_connect_timeout_s:g} s)"
                ) from None

    def _enqueue(self, message: aiomqtt.Message) -> None:
        # A slow consumer must not stall the connection (keep-alives, keyframe requests) nor let
        # aiomqtt's unbounded queue grow: when ours is full the oldest message goes, counted. For a
        # live stream that is a gap the receiver repairs with a keyframe.
        if self.messages.full():
            self.messages.get_nowait()
            self.messages_dropped += 1
            if self.messages_dropped == 1 or self.messages_dropped % 1000 == 0:
                log.warning("%s: consumer too slow, %d messages dropped so far", self.broker.url,
                            self.messages_dropped)
        self.messages.put_nowait(message)

    def _no_answer_reason(self) -> str:
        # no MQTT error at all: the TCP connection opened but the handshake never finished
        if self.broker.tls:
            return "no answer to the MQTT handshake"
        return ("no answer to the MQTT handshake (a TLS port reached with mqtt://? use mqtts:// and --ca-file)")

    async def _run(self) -> None:
        backoff = 0.1
        failed_in_round = 0  # consecutive failed attempts; a whole round of nodes earns a backoff
        while not self._closing:
            client: aiomqtt.Client | None = None
            try:
                if never_resolves(self.broker.host):
                    raise aiomqtt.MqttError(f"[Errno {socket.EAI_NONAME}] Name or service not known")
                client = aiomqtt.Client(
                    **self.broker.client_kwargs(), identifier=self.identifier, clean_session=self.clean_session,
                    will=self.will, timeout=self.attempt_timeout_s,
                )
                async with client:
                    for topic, qos in self.subscriptions:
                        await client.subscribe(topic, qos=qos)
                    self._client = client
                    self.connects += 1
                    if self._last_node is not None and self._last_node != self._node:
                        self.failovers += 1
                    self._last_node = self._node
                    if self.down_since is not None:
                        outage = time.monotonic() - self.down_since
                        self.downtime_s += outage
                        self.outages_s.append(outage)
                        log.warning("reconnected to %s after %.2f s", self.broker.url, outage)
                        self.down_since = None
                    self.connected.set()
                    backoff = 0.1
                    failed_in_round = 0
                    if self.on_connect is not None:
                        await self.on_connect(client)
                    async for message in client.messages:
                        self._enqueue(message)
            except aiomqtt.MqttError as e:
                self.last_error = plain_reason(str(e), self.broker.host)
            finally:
                self._client = None
                self.connected.clear()
                if client is not None:
                    _discard(client)
            if self._closing:
                break
            if self.down_since is None and self.connects > 0:  # downtime counts after the first connect
                self.down_since = time.monotonic()
            quiet = self._quiet_until_connected and self.connects == 0
            failed = self.broker.url
            self._node = (self._node + 1) % len(self.brokers)  # a dead node: try the next one at once
            failed_in_round += 1
            if failed_in_round < len(self.brokers):
                log.log(logging.INFO if quiet else logging.WARNING, "broker %s unreachable (%s); trying %s",
                        failed, self.last_error, self.broker.url)
                continue
            failed_in_round = 0
            log.log(logging.INFO if quiet else logging.WARNING, "broker %s unreachable (%s); retrying in %.1f s",
                    failed if len(self.brokers) == 1 else brokers_text(self.brokers), self.last_error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    async def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                      timeout_s: float = 5.0) -> None:
        """Publish, waiting out disconnections: returns once the broker has the message (QoS >= 1)."""
        while True:
            if not self.connected.is_set():
                # wait for a (re)connection, but not past close(): then fail instead of hanging
                waits = [asyncio.ensure_future(self.connected.wait()), asyncio.ensure_future(self._closed.wait())]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
            if self._closing:
                raise StreamError(f"connection to {self.broker.url} closed while publishing")
            client = self._client
            if client is None:
                await asyncio.sleep(0.01)
                continue
            try:
                await client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout_s)
                return
            except aiomqtt.MqttError as e:
                # No ack in time, or the connection dropped under us. Only the background task may
                # clear `connected`: it may already have reconnected while we waited for the ack,
                # and clearing it here would leave us waiting for a reconnect that never comes. We
                # send again (on the new connection, or on the same one if it still stands);
                # receivers drop the possible duplicate by frame index.
                self.last_error = str(e)
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._closing = True
        self._closed.set()
        if self._task is not None:
            task, self._task = self._task, None
            # cancelled until it ends: it may be publishing the stream's info (on_connect), where
            # aiomqtt's wait_for can swallow one cancellation (stream/cancelling.py)
            with contextlib.suppress(aiomqtt.MqttError):
                await cancel_and_wait(task)

    async def __aenter__(self) -> MqttLink:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
