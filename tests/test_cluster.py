"""Scale-out on a real broker cluster: three nats-server nodes (JetStream, an MQTT listener on each,
streams and consumers replicated three times) on loopback. A node that dies mid-stream — the
receiver's, and separately the publisher's — loses no frame at QoS 1: the client fails over to the
next node, its persistent session resumes there, and every published frame is decoded once, in order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from livetok.bench.nats_cluster import NatsCluster
from livetok.engine.model import Tokenizer
from livetok.stream.broker_url import parse_broker_url
from livetok.stream.receiver import ReceivedFrame, Receiver

from .test_mqtt_stream import publish

pytestmark = pytest.mark.broker

FRAMES = 90  # three seconds at 30 fps
FAILOVER_BUDGET_S = 90.0  # NATS 2.9 resumes an MQTT session on another node in 0.2-35 s (docs/BENCHMARKS.md)


def _rotated(urls: list[str], first: int) -> list[str]:
    return urls[first:] + urls[:first]


async def _stream_through(cluster: NatsCluster, model: Tokenizer, rx_first: int, pub_first: int,
                          kill: int) -> tuple[dict[str, Any], list[int], dict[str, Any], float]:
    """Receiver attached to node `rx_first`, publisher to `pub_first` (each lists every node, its own
    first); once frames flow, node `kill` dies. Returns (publisher stats, decoded frame indices,
    receiver summary, seconds from the kill to the end)."""
    brokers = [parse_broker_url(u) for u in _rotated(cluster.urls, rx_first)]
    async with Receiver(model, brokers, "cam0", identifier="rx-cluster", first_connect_timeout_s=30) as rx:
        got: list[ReceivedFrame] = []

        async def receive() -> None:
            async for f in rx:
                got.append(f)

        frames_task = asyncio.create_task(asyncio.wait_for(receive(), FAILOVER_BUDGET_S + 60))
        pub = asyncio.create_task(publish(model, _rotated(cluster.urls, pub_first), "cam0", "synthetic:calm",
                                          realtime=True, frames=FRAMES, connect_timeout=30))
        deadline = time.monotonic() + 60
        while len(got) < 10 and not pub.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not pub.done(), "the stream ended before the node could be killed mid-stream"
        cluster.kill(kill)
        killed_at = time.monotonic()
        stats = await asyncio.wait_for(pub, FAILOVER_BUDGET_S + 30)
        await frames_task
        return stats, [f.frame_index for f in got], rx.summary().to_json(), time.monotonic() - killed_at


def test_receivers_node_dies_mid_stream_nothing_lost(nats_cluster: NatsCluster, tiny_model: Tokenizer) -> None:
    stats, indices, summary, _ = asyncio.run(_stream_through(nats_cluster, tiny_model, rx_first=0, pub_first=1,
                                                             kill=0))
    n = stats["frames_published"]
    assert n >= 30
    assert indices == list(range(n)), "every published frame decoded once, in order"
    assert summary["frames_lost"] == 0
    assert summary["failovers"] >= 1 and len(summary["outages_s"]) >= 1
    assert 0 < summary["outages_s"][0] < FAILOVER_BUDGET_S


def test_publishers_node_dies_mid_stream_nothing_lost(nats_cluster: NatsCluster, tiny_model: Tokenizer) -> None:
    stats, indices, summary, _ = asyncio.run(_stream_through(nats_cluster, tiny_model, rx_first=0, pub_first=1,
                                                             kill=1))
    n = stats["frames_published"]
    assert n >= 30 and stats["failovers"] >= 1
    assert indices == list(range(n)), "every published frame decoded once, in order"
    assert summary["frames_lost"] == 0
    # The receiver's node stayed up, yet NATS may stall its MQTT clients while the dead node's share of
    # the JetStream session assets is re-elected: CI saw the receiver time out and fail over twice (and
    # still lose nothing). What livetok owns is that such a detour stays inside the failover budget.
    assert all(0 <= s < FAILOVER_BUDGET_S for s in summary["outages_s"])
