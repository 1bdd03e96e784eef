"""A camera URL's user name and password stay on the publisher: the stream info it leaves on the broker (real
mosquitto), its Zenoh info, its Foxglove/MCAP channel metadata and the metadata of the `.ltk` and `.mcap` files
`encode` writes name the source without them (`public_source`); the Zenoh and Foxglove/MCAP info carry the FSQ
levels and the wire version as the MQTT info does (`reader_info`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livetok.bench.localbroker import Broker, free_port
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer
from livetok.stream import sources
from livetok.stream.capture import CaptureOptions
from livetok.stream.sources import public_source
from livetok.stream.video_io import VideoReader

from .robotics_helpers import (
    small_clip_fixture,  # noqa: F401  (the fixture `small_clip`)
)

SECRET = "s3cret-pw"
URL = f"rtsp://admin:{SECRET}@cam.local:554/live/ch1"
PUBLIC = "rtsp://***@cam.local:554/live/ch1"
SENDER = SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5), keyframe_interval=0)


@pytest.fixture
def camera_url(monkeypatch: pytest.MonkeyPatch, small_clip: Path) -> str:
    """URL, served by the small clip (no RTSP server here): the real `open_source` names it."""

    def frames(url: str) -> Iterator[np.ndarray]:
        assert url == URL  # the credentials still reach the camera
        with VideoReader(str(small_clip)) as r:
            yield from r

    monkeypatch.setattr(sources, "_url", frames)
    return URL


@pytest.mark.parametrize(("spec", "shown"), [
    (URL, PUBLIC),
    ("rtsp://cam.local/live", "rtsp://cam.local/live"),
    ("http://user@host:8080/a?b=c", "http://***@host:8080/a?b=c"),
    ("rtsp://user:p%40ss@host/x", "rtsp://***@host/x"),
    ("rtsp://user:pa/ss@host/x", "rtsp://***@host/x"),  # a '/' in the password: nothing before the '@' is shown
    ("clip.mp4", "clip.mp4"), ("webcam:0", "webcam:0"), ("synthetic:calm", "synthetic:calm"),
])
def test_public_source_drops_user_and_password(spec: str, shown: str) -> None:
    assert public_source(spec) == shown


def _no_secret(doc: Any) -> None:
    text = json.dumps(doc) if not isinstance(doc, str | bytes) else doc
    assert (SECRET.encode() if isinstance(text, bytes) else SECRET) not in text


@pytest.mark.broker
def test_retained_info_on_the_broker_has_no_password(mosquitto: Broker, tiny_model: Tokenizer,
                                                     camera_url: str) -> None:
    import aiomqtt

    from livetok.stream.broker_url import parse_broker_url, topics
    from livetok.stream.live import publish_sources

    broker = parse_broker_url(mosquitto.url)
    t = topics("cam")

    async def main() -> list[bytes]:
        infos: list[bytes] = []
        async with aiomqtt.Client(**broker.client_kwargs()) as sub:
            await sub.subscribe(t.info, qos=1)  # withdrawn when the publisher leaves: read while it runs

            async def read() -> None:
                async for m in sub.messages:
                    if m.payload:
                        infos.append(bytes(m.payload))  # type: ignore[arg-type]
                        if b'"width"' in infos[-1]:  # the info once the first frame is known
                            return

            reader = asyncio.create_task(read())
            await publish_sources(tiny_model, [camera_url], [broker], ["cam"], SENDER,
                                  CaptureOptions(realtime=False, max_frames=4))
            await asyncio.wait_for(reader, 10)
        return infos

    infos = asyncio.run(main())
    for raw in infos:
        _no_secret(raw)
    info = json.loads(infos[-1])
    assert info["source"] == PUBLIC and info["width"] == 128
    assert info["fsq_levels"] == list(tiny_model.cfg.fsq.levels) and info["wire"] == SENDER.wire


def test_ltk_and_mcap_metadata_have_no_password(tmp_path: Path, tiny_model: Tokenizer, camera_url: str) -> None:
    pytest.importorskip("foxglove", reason="needs the robotics extra: pip install 'livetok[robotics]'")
    from livetok.stream.files import encode_file
    from livetok.stream.mcap_file import encode_mcap, read_mcap
    from livetok.stream.wire import LtkReader

    ltk, mcap = tmp_path / "cam.ltk", tmp_path / "cam.mcap"
    encode_file(tiny_model, camera_url, ltk, SENDER, max_frames=3)
    encode_mcap(tiny_model, camera_url, mcap, SENDER, max_frames=3)
    _no_secret(ltk.read_bytes())
    with LtkReader(ltk) as r:
        assert r.meta["source"] == PUBLIC
    cam = read_mcap(mcap)["cam0"]
    _no_secret(cam.meta)
    assert cam.meta["source"] == PUBLIC and cam.meta["fsq_levels"] == list(tiny_model.cfg.fsq.levels)
    assert len(cam.packets) == 3


def test_zenoh_and_foxglove_info_carry_levels_and_no_password(tmp_path: Path, tiny_model: Tokenizer,
                                                              camera_url: str) -> None:
    """One publish to Zenoh and an MCAP recording (the Foxglove channels a live server serves too)."""
    pytest.importorskip("zenoh", reason="needs the robotics extra: pip install 'livetok[robotics]'")
    pytest.importorskip("foxglove", reason="needs the robotics extra: pip install 'livetok[robotics]'")
    from livetok.stream.mcap_file import read_mcap
    from livetok.stream.robotics import RobotOutputs, publish_robot
    from livetok.stream.zenoh_transport import ZenohConfig, ZenohReceiver

    cfg = ZenohConfig(f"tcp/127.0.0.1:{free_port()}", "peer")
    mcap = tmp_path / "robot.mcap"

    async def main() -> dict[str, Any]:
        async def receive() -> dict[str, Any]:
            for _ in range(100):  # the publisher's session listens first (peer mode): wait for it
                try:
                    async with ZenohReceiver(tiny_model, cfg, "cam") as rx:
                        async for _f in rx:
                            if "width" in rx.streams["cam"].info:
                                return dict(rx.streams["cam"].info)
                        return dict(rx.streams["cam"].info)
                except Exception as e:
                    if "cannot open a Zenoh" not in str(e):
                        raise
                    await asyncio.sleep(0.05)
            raise AssertionError("the receiver never reached the publisher")

        receiving = asyncio.create_task(receive())
        await publish_robot(tiny_model, [camera_url], ["cam"], SENDER,
                            RobotOutputs(zenoh=cfg, mcap=str(mcap), wait_for_receivers_s=20.0),
                            CaptureOptions(realtime=False, max_frames=4))
        return await asyncio.wait_for(receiving, 60)

    info = asyncio.run(main())
    _no_secret(info)
    assert info["source"] == PUBLIC
    assert info["fsq_levels"] == list(tiny_model.cfg.fsq.levels) and info["wire"] == SENDER.wire
    meta = read_mcap(mcap)["cam"].meta
    _no_secret(meta)
    assert meta["source"] == PUBLIC
    assert meta["fsq_levels"] == list(tiny_model.cfg.fsq.levels) and meta["wire"] == SENDER.wire
