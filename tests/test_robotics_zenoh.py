"""Zenoh as a transport, with real Zenoh sessions on loopback (peer to peer, and through a router run by the
eclipse-zenoh library: neither Debian nor PyPI packages zenohd): every frame decoded, a lost packet repaired
by a keyframe request, a late joiner starting at a keyframe, two cameras with their frame ids on one clock."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("zenoh", reason="needs the robotics extra: pip install 'livetok[robotics]'")

from livetok.bench.localbroker import free_port
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer
from livetok.stream.capture import CaptureOptions, capture
from livetok.stream.live import RecordOptions
from livetok.stream.packet_receiver import ReceivedFrame
from livetok.stream.pipeline import PipelineConfig, StreamInput, run_streams
from livetok.stream.robotics import RobotOutputs, publish_robot, receive_zenoh
from livetok.stream.session import SenderSession
from livetok.stream.zenoh_transport import (
    ZenohConfig,
    ZenohPublisher,
    ZenohReceiver,
    open_router,
    open_session,
)

from .robotics_helpers import (
    small_clip_fixture,  # noqa: F401  (the fixture `small_clip`)
)

SENDER = SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5), keyframe_interval=0)  # one keyframe: frame 0


def _cfg(mode: str = "peer") -> ZenohConfig:
    return ZenohConfig(f"tcp/127.0.0.1:{free_port()}", mode)


async def _publish_and_receive(model: Tokenizer, clip: Path, cfg: ZenohConfig, streams: list[str],
                               frame_ids: list[str] | None = None,
                               frames: int = 16) -> tuple[dict[str, Any], dict[str, Any], list[ReceivedFrame]]:
    """Publish `streams` (each the clip, as fast as possible) and receive them all over Zenoh."""
    got: list[ReceivedFrame] = []
    name = streams[0] if len(streams) == 1 else "+"

    async def rx() -> dict[str, Any]:
        for _ in range(100):  # the publisher's session listens first (peer mode): wait for it
            try:
                res = await receive_zenoh(model, cfg, name, RecordOptions(idle_timeout_s=3.0, on_frame=got.append))
                return res.to_json()
            except Exception as e:
                if "cannot open a Zenoh" not in str(e):
                    raise
                await asyncio.sleep(0.05)
        raise AssertionError("the receiver never reached the publisher")

    receiving = asyncio.create_task(rx())
    pub = await publish_robot(model, [str(clip)] * len(streams), streams, SENDER,
                              RobotOutputs(zenoh=cfg, wait_for_receivers_s=20.0),
                              CaptureOptions(realtime=False, max_frames=frames), frame_ids=frame_ids)
    return pub.to_json(), await asyncio.wait_for(receiving, 60), got


def test_zenoh_peer_to_peer_decodes_every_frame(small_clip: Path, tiny_model: Tokenizer) -> None:
    pub, res, got = asyncio.run(_publish_and_receive(tiny_model, small_clip, _cfg(), ["cam0"], ["cam0_optical"],
                                                     frames=8))
    assert pub["frames_published"] == 8 and pub["frames_dropped"] == 0
    assert res["frames_received"] == res["frames_decoded"] == 8 and res["frames_lost"] == 0
    assert [f.frame_index for f in got] == list(range(8)) and got[0].keyframe
    assert all(f.frame.shape == (96, 128, 3) for f in got)
    assert res["transport"] == "zenoh" and res["frame_ids"] == {"cam0": "cam0_optical"}


def test_zenoh_through_a_router_and_two_cameras_on_one_clock(small_clip: Path, tiny_model: Tokenizer) -> None:
    cfg = _cfg("client")
    router = open_router(cfg.endpoint)
    try:
        pub, res, got = asyncio.run(_publish_and_receive(tiny_model, small_clip, cfg, ["front", "rear"],
                                                         ["front_optical", "rear_optical"], frames=8))
    finally:
        router.close()
    assert pub["frames_published"] == 16
    assert res["frames_decoded"] == 16 and res["frames_lost"] == 0
    assert res["frame_ids"] == {"front": "front_optical", "rear": "rear_optical"}
    by = {s: {f.frame_index: f.timestamp_us for f in got if f.stream == s} for s in ("front", "rear")}
    assert sorted(by["front"]) == sorted(by["rear"]) == list(range(8))
    # one capture clock for both cameras: frame i of each was captured within a few ms of the other
    # (the same pipeline tick), and the clock is the wall clock (latency is measured against it)
    assert max(abs(by["front"][i] - by["rear"][i]) for i in range(8)) < 500_000
    assert all(0 <= f.latency_ms < 30_000 for f in got)


class _LoseOne:
    """Between the pipeline and the Zenoh publisher: the packet of frame `lost` never reaches the wire."""

    def __init__(self, inner: ZenohPublisher, lost: int) -> None:
        self.inner, self.lost, self.n = inner, lost, 0

    async def send(self, data: bytes) -> None:
        self.n += 1
        if self.n - 1 != self.lost:
            await self.inner.send(data)

    def take_keyframe_request(self) -> bool:
        return self.inner.take_keyframe_request()


async def _stream(model: Tokenizer, clip: Path, cfg: ZenohConfig, frames: int, lose: int | None,
                  join_after_s: float) -> tuple[dict[str, Any], int, list[ReceivedFrame]]:
    """Publish `frames` frames paced at 30 fps through a real Zenoh session (optionally losing one packet);
    a receiver joins after `join_after_s` and records what it decodes."""
    session = await asyncio.to_thread(open_session, cfg, True)
    got: list[ReceivedFrame] = []
    try:
        async with ZenohPublisher(session, "cam0", {"model_id": model.identity.hex(), "fps": 30.0}) as zp:
            sink: Any = zp if lose is None else _LoseOne(zp, lose)

            async def receive() -> dict[str, Any]:
                await asyncio.sleep(join_after_s)
                async with ZenohReceiver(model, cfg, "cam0") as rx:
                    async for f in rx:
                        got.append(f)
                    return rx.summary().to_json()

            receiving = asyncio.create_task(receive())
            if join_after_s == 0:
                assert await zp.wait_matched(20.0)
            src = capture(str(clip), realtime=True, loop=True, max_frames=frames)
            await run_streams([StreamInput("cam0", src, SenderSession(model, SENDER), sink)],
                              PipelineConfig(drop=False))
            res = await asyncio.wait_for(receiving, 30)
            return res, zp.keyframe_requests, got
    finally:
        session.close()


def test_zenoh_lost_packet_is_repaired_by_a_keyframe_request(small_clip: Path, tiny_model: Tokenizer) -> None:
    res, requests, got = asyncio.run(_stream(tiny_model, small_clip, _cfg(), frames=45, lose=5, join_after_s=0))
    idx = [f.frame_index for f in got]
    assert idx[:5] == list(range(5)) and 5 not in idx  # the lost frame never decodes
    assert res["frames_lost"] >= 1 and res["keyframe_requests"] >= 1 and requests >= 1
    resumed = [f for f in got if f.frame_index > 5]
    assert resumed and resumed[0].keyframe  # decoding resumed at the keyframe it asked for...
    assert idx[-1] == 44  # ...and ran to the end of the stream
    later = [f.frame_index for f in resumed]
    assert later == list(range(later[0], 45))  # nothing else lost


def test_zenoh_late_joiner_starts_at_a_keyframe(small_clip: Path, tiny_model: Tokenizer) -> None:
    res, requests, got = asyncio.run(_stream(tiny_model, small_clip, _cfg(), frames=60, lose=None,
                                             join_after_s=0.8))
    assert got and got[0].keyframe and got[0].frame_index > 0  # frame 0 (the only scheduled keyframe) went by
    assert requests >= 1 and res["keyframe_requests"] >= 1
    idx = [f.frame_index for f in got]
    assert idx == list(range(idx[0], 60))
    assert res["frames_decoded"] == len(got) and res["frames_lost"] == 0
