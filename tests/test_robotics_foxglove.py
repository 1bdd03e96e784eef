"""`publish --foxglove`: a real WebSocket client (aiohttp) speaking Foxglove's protocol connects to the live
server, subscribes to a camera's two channels, and receives both: token packets that decode in order from
the keyframe its subscription asked for, and JPEG previews of the decoded frames."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

pytest.importorskip("foxglove", reason="needs the robotics extra: pip install 'livetok[robotics]'")

from livetok.bench.localbroker import free_port
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer
from livetok.stream.capture import CaptureOptions
from livetok.stream.robotics import RobotOutputs, publish_robot
from livetok.stream.session import ReceiverSession

from .robotics_helpers import (
    small_clip_fixture,  # noqa: F401  (the fixture `small_clip`)
)

# the SDK's server speaks foxglove.sdk.v1, the current name of the Foxglove WebSocket protocol (formerly
# foxglove.websocket.v1); a client offers both, as Foxglove's own app does
SUBPROTOCOLS = ("foxglove.sdk.v1", "foxglove.websocket.v1")
OP_MESSAGE_DATA = 1


async def _client(port: int, want: int) -> dict[str, list[tuple[int, bytes]]]:
    """Connect, subscribe to every advertised channel, collect (log time, payload) per topic until the
    tokens channel has `want` messages."""
    got: dict[str, list[tuple[int, bytes]]] = {}
    topics: dict[int, str] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # the server starts with the pipeline: retry the connection briefly
            try:
                ws = await http.ws_connect(f"ws://127.0.0.1:{port}", protocols=SUBPROTOCOLS)
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the Foxglove server never accepted a connection")
        async with ws:
            assert ws.protocol in SUBPROTOCOLS
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    doc: dict[str, Any] = json.loads(msg.data)
                    if doc["op"] == "advertise":
                        subs = []
                        for ch in doc["channels"]:
                            sid = len(topics) + 1
                            topics[sid] = ch["topic"]
                            subs.append({"id": sid, "channelId": ch["id"]})
                        await ws.send_str(json.dumps({"op": "subscribe", "subscriptions": subs}))
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    data = bytes(msg.data)
                    assert data[0] == OP_MESSAGE_DATA
                    sid, t_ns = struct.unpack_from("<IQ", data, 1)
                    got.setdefault(topics[sid], []).append((t_ns, data[13:]))
                    if len(got.get("/cam0/tokens", [])) >= want:
                        break
                else:
                    break
    return got


def test_foxglove_client_receives_tokens_and_preview(small_clip: Path, tiny_model: Tokenizer) -> None:
    port = free_port()
    sender = SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5), keyframe_interval=0)

    async def main() -> tuple[dict[str, list[tuple[int, bytes]]], dict[str, Any]]:
        pub = asyncio.create_task(publish_robot(
            tiny_model, [str(small_clip)], ["cam0"], sender, RobotOutputs(foxglove=("127.0.0.1", port)),
            CaptureOptions(realtime=True, loop=True, max_frames=90), frame_ids=["cam0_optical"]))
        await asyncio.sleep(1.0)  # join a running stream: its keyframe (frame 0) has gone by
        got = await asyncio.wait_for(_client(port, want=12), 60)
        return got, (await asyncio.wait_for(pub, 60)).to_json()

    got, res = asyncio.run(main())
    # paced at the clip's rate, a live source drops what the encoder cannot take on a busy machine
    assert res["frames_captured"] == 90 and res["frames_published"] >= 12 and res["foxglove_port"] == port
    assert res["keyframe_requests"] == 0  # counted for Zenoh/MQTT; the subscription's keyframe shows below
    tokens = [json.loads(p) for _, p in got["/cam0/tokens"]]
    assert len(tokens) >= 12 and len(got["/cam0/preview"]) >= 6
    assert {t["frame_id"] for t in tokens} == {"cam0_optical"}
    # keyframe_interval 0 sends one keyframe (frame 0); the client joined later and got a fresh one
    keys = [t["frame_index"] for t in tokens if t["keyframe"]]
    assert keys and keys[0] > 0
    start = next(i for i, t in enumerate(tokens) if t["keyframe"])
    run = tokens[start:]
    assert [t["frame_index"] for t in run] == list(range(run[0]["frame_index"], run[0]["frame_index"] + len(run)))
    rx = ReceiverSession(tiny_model)
    frames = [rx.decode(base64.b64decode(t["packet"])) for t in run]
    assert all(f.shape == (96, 128, 3) for f in frames)
    for (t_ns, _), t in zip(got["/cam0/tokens"][start:], run, strict=True):
        assert t_ns == (t["timestamp"]["sec"] * 10**9 + t["timestamp"]["nsec"])  # log time = capture time

    # previews: protobuf foxglove.CompressedImage whose JPEG decodes to the frame's size; the JPEG's
    # bytes sit inside the message (found by its markers, without a protobuf library)
    import cv2

    for _, payload in got["/cam0/preview"][:3]:
        i, j = payload.index(b"\xff\xd8"), payload.rindex(b"\xff\xd9") + 2
        img = cv2.imdecode(np.frombuffer(payload[i:j], np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (96, 128, 3)
        assert b"cam0_optical" in payload and b"jpeg" in payload
