"""The MQTT receiver: subscribes to one stream (or all, with `+`) and feeds the packets to the
transport-agnostic `PacketReceiver` (ordering, keyframe requests, decoding, counters); keyframe
requests go back on the stream's control topic.

    async with Receiver(model, parse_broker_url("mqtt://host:1883"), "cam0") as rx:
        async for f in rx:            # ReceivedFrame
            policy(f.token_grid, f.frame)
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import aiomqtt

from livetok.engine.runtime import Runtime

from .broker_url import stream_from_topic, topics
from .mqtt import Brokers, MqttLink, OnConnect
from .packet_receiver import KEYFRAME_REQUEST_INTERVAL_S, PacketReceiver, ReceivedFrame, StreamCounters
from .summaries import MqttReceiverSummary

__all__ = ["KEYFRAME_REQUEST_INTERVAL_S", "ReceivedFrame", "Receiver", "StreamCounters"]


class Receiver(PacketReceiver):
    """Receives and decodes live streams from a broker.

    Args:
        model: the decoder; packets of another model are refused (StreamError names both ids).
        broker: the broker.
        stream: a stream name, or "+" for every stream.
        identifier: MQTT client id; with `persistent`, the broker keeps our QoS-1 messages while we
            are disconnected (also across a broker restart), so nothing is lost.
        gap_timeout_s: how long a missing packet is waited for before it counts as lost.
        first_connect_timeout_s: raise StreamError if the broker cannot be reached in time.
        max_lag_s: live viewing: fall back to a keyframe rather than lag more than this (see
            PacketReceiver); None decodes every frame.
        end_when_all_ended: with "+": end the iteration once every stream seen has ended and no
            other is announced (see PacketReceiver); False: keep receiving (new streams may come).
    """

    def __init__(self, model: Runtime, broker: Brokers, stream: str, *, identifier: str | None = None,
                 persistent: bool = True, gap_timeout_s: float = 0.3,
                 first_connect_timeout_s: float | None = 10.0, max_lag_s: float | None = None,
                 extra_subscriptions: list[tuple[str, int]] | None = None, on_connect: OnConnect | None = None,
                 will: aiomqtt.Will | None = None, end_when_all_ended: bool = False) -> None:
        self.topics = topics(stream)
        super().__init__(model, gap_timeout_s=gap_timeout_s, end_on_eos=not self.topics.wildcard,
                         max_lag_s=max_lag_s, end_when_all_ended=end_when_all_ended and self.topics.wildcard)
        self.first_connect_timeout_s = first_connect_timeout_s
        self.link = MqttLink(broker, [(self.topics.tokens, 1), (self.topics.info, 1), *(extra_subscriptions or [])],
                             identifier=identifier, clean_session=not (persistent and identifier is not None),
                             on_connect=on_connect, will=will)

    async def __aenter__(self) -> Receiver:
        await self.link.start(self.first_connect_timeout_s)
        self.add_task(asyncio.create_task(self._consume()))
        self.start_ticking()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_tasks()
        await self.link.close()

    def summary(self) -> MqttReceiverSummary:
        return MqttReceiverSummary.extending(
            super().summary(),
            reconnects=max(0, self.link.connects - 1),
            broker_downtime_s=round(self.link.downtime_s, 3),
            failovers=self.link.failovers,  # reconnections that landed on another cluster node
            outages_s=[round(t, 3) for t in self.link.outages_s],
            messages_dropped=self.link.messages_dropped,  # the consumer fell behind
        )

    async def send_keyframe_request(self, stream: str, payload: str) -> None:
        await self.link.publish(topics(stream).control, payload, qos=1)

    async def on_message(self, topic: str, payload: bytes) -> None:
        """One message off the broker: a stream's info or one of its packets."""
        name = stream_from_topic(topic)
        if topic.endswith("/info"):
            self.feed_info(name, payload)
            await self.check_all_ended()  # a withdrawn info may leave no stream live
        else:
            await self.feed(name, payload)

    async def _consume(self) -> None:
        try:
            while True:
                msg = await self.link.messages.get()
                payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
                await self.on_message(str(msg.topic), payload)
        except BaseException as e:  # hand any failure to the iterating caller, then stop
            if not isinstance(e, asyncio.CancelledError):
                await self.fail(e)
            raise
