"""A receiver that falls behind (issue 7): its queues stay bounded and what is dropped is counted."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from livetok.stream.broker_url import parse_broker_url
from livetok.stream.mqtt import MqttLink

from .broker import Broker

pytestmark = pytest.mark.broker


async def _flood(url: str, n: int) -> tuple[int, int, list[bytes]]:
    broker = parse_broker_url(url)
    link = MqttLink(broker, [("livetok/slow/tokens", 0)], messages_max=16)
    await link.start(first_connect_timeout_s=5.0)
    try:
        async with aiomqtt.Client(**broker.client_kwargs()) as pub:
            for i in range(n):
                await pub.publish("livetok/slow/tokens", i.to_bytes(4, "little"), qos=0)
        # nobody reads link.messages: wait until everything has passed through the link
        for _ in range(200):
            if link.messages_dropped + link.messages.qsize() >= n:
                break
            await asyncio.sleep(0.05)
        kept = [bytes(link.messages.get_nowait().payload) for _ in range(link.messages.qsize())]  # type: ignore[arg-type]
        return link.messages_dropped, len(kept), kept
    finally:
        await link.close()


def test_a_consumer_that_falls_behind_drops_the_oldest_counted(mosquitto: Broker) -> None:
    dropped, kept, payloads = asyncio.run(_flood(mosquitto.url, 500))
    assert kept == 16 and dropped + kept == 500  # bounded, and every message accounted for
    assert [int.from_bytes(p, "little") for p in payloads] == list(range(484, 500))  # the newest survive
