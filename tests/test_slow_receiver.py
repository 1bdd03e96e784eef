"""A receiver that falls behind (issue 7): its queues stay bounded and what is dropped is counted."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import aiomqtt
import pytest

from livetok.bench.localbroker import Broker
from livetok.engine.config import SenderConfig
from livetok.engine.model import Tokenizer
from livetok.engine.state import FrameTokens
from livetok.engine.synthetic import SyntheticConfig, synthetic_frames
from livetok.stream.broker_url import parse_broker_url
from livetok.stream.mqtt import MqttLink
from livetok.stream.packet_receiver import PacketReceiver, ReceivedFrame
from livetok.stream.session import SenderSession, tokens_to_packet


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


@pytest.mark.broker
def test_a_consumer_that_falls_behind_drops_the_oldest_counted(mosquitto: Broker) -> None:
    dropped, kept, payloads = asyncio.run(_flood(mosquitto.url, 500))
    assert kept == 16 and dropped + kept == 500  # bounded, and every message accounted for
    assert [int.from_bytes(p, "little") for p in payloads] == list(range(484, 500))  # the newest survive


class _Rx(PacketReceiver):
    """The transport-independent receiver; its keyframe requests are recorded."""

    def __init__(self, model: Tokenizer, max_lag_s: float | None) -> None:
        super().__init__(model, max_lag_s=max_lag_s)
        self.requests: list[dict[str, object]] = []

    async def send_keyframe_request(self, stream: str, payload: str) -> None:
        self.requests.append(json.loads(payload))


def _tokens(model: Tokenizer, frames: int, keyframe_at: int) -> tuple[SenderSession, list[FrameTokens]]:
    """A moving synthetic clip encoded; the frame at `keyframe_at` a keyframe (as if requested)."""
    tx = SenderSession(model, SenderConfig(keyframe_interval=0))
    clip = itertools.islice(synthetic_frames(SyntheticConfig(width=64, height=48), seed=3), frames)
    return tx, [tx.step(f, force_keyframe=i == keyframe_at) for i, f in enumerate(clip)]


@pytest.mark.parametrize("max_lag_s", [None, 1.0])
def test_a_receiver_that_falls_behind_sheds_its_backlog_and_resumes_at_a_keyframe(
    tiny_model: Tokenizer, max_lag_s: float | None
) -> None:
    """Frames 0-3 arrive on time; 4-7 arrive 3 s after capture (a backlog); 8 is the keyframe the
    receiver asked for. With max_lag_s = 1 the late frames are shed undecoded and decoding resumes
    at 8; without it every frame is decoded, however late."""
    tx, tokens = _tokens(tiny_model, 10, keyframe_at=8)

    async def main() -> tuple[list[int], dict[str, object], list[dict[str, object]]]:
        rx = _Rx(tiny_model, max_lag_s)
        now_us = time.time_ns() // 1000
        for i, tok in enumerate(tokens):
            late = 4 <= i <= 7  # captured 3 s before they reach the receiver
            await rx.feed("cam", tx.packetize(tok, now_us - (3_000_000 if late else 0))[1])
        got = []
        while not rx._out.empty():
            item = rx._out.get_nowait()
            assert isinstance(item, ReceivedFrame)
            got.append(item.frame_index)
        return got, rx.summary().to_json(), rx.requests

    got, summary, requests = asyncio.run(main())
    if max_lag_s is None:
        assert got == list(range(10)) and summary["frames_shed"] == 0 and requests == []
    else:
        assert got == [0, 1, 2, 3, 8, 9]
        assert summary["frames_shed"] == 4 and summary["frames_lost"] == 0
        assert [r["reason"] for r in requests] == ["late"]


def test_max_lag_and_latency_read_the_injected_wall_clock(tiny_model: Tokenizer) -> None:
    """`max_lag_s` and `latency_ms` are measured on the receiver's `wall_clock` (epoch seconds)
    against the packets' capture timestamps (µs): a fake clock makes both exact."""
    now = [1000.0]
    rx = PacketReceiver(tiny_model, max_lag_s=1.0, wall_clock=lambda: now[0])
    tx, tokens = _tokens(tiny_model, 2, keyframe_at=-1)
    s = rx.stream("cam")

    def late(ts_us: int) -> bool:
        return rx._too_late(s, tokens_to_packet(tokens[1], tx.model_id, tx.bits, ts_us))

    assert not late(999_900_000) and s.best_latency_ms == 100.0
    assert not late(999_950_000) and s.best_latency_ms == 50.0  # the best latency so far
    now[0] = 1001.0
    assert not late(999_950_000)  # 1050 ms: exactly max_lag_s over the best, not more
    assert late(999_949_000)  # 1051 ms
    assert s.best_latency_ms == 50.0

    async def decoded_latency() -> float:
        rx2 = _Rx(tiny_model, None)
        rx2.wall_clock = lambda: 2000.0
        await rx2.feed("cam", tx.packetize(tokens[0], 1_999_987_500)[1])
        item = rx2._out.get_nowait()
        assert isinstance(item, ReceivedFrame)
        return item.latency_ms

    assert asyncio.run(decoded_latency()) == 12.5
