"""Latency for a robotics reader: p50/p95 of encode, transport and decode per transport, one table.

    python -m livetok.bench.robotics_latency [--frames 60] [--transports mqtt zenoh webrtc] [--json]

One process, one frame at a time (the next frame is encoded once the previous one is decoded), so each
number is a frame's own latency with no queueing behind other frames: encode (frame -> packet bytes,
SenderSession.encode), transport (the packet handed to the sending client -> its bytes in the receiving
client's hands, on loopback) and decode (bytes -> frame, ReceiverSession.decode). Transports:

* ``mqtt`` — two aiomqtt clients through a local mosquitto, QoS 1 (what `livetok publish` sends).
* ``zenoh`` — two Zenoh sessions, peer to peer over tcp/127.0.0.1 (reliable, blocking congestion control).
* ``webrtc`` — two aiortc peers in this process, a reliable ordered data channel over loopback ICE.

The clip is the bundled demo clip (or --source) at its size (256x192 for the eval clips), the shipped model,
policy learned at rate 0.5. The clock is `time.perf_counter` in this one process, so the transport time
needs no clock sync.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.results import JsonResult
from livetok.engine.runtime import Runtime
from livetok.stream.cancelling import cancel_and_wait
from livetok.stream.session import ReceiverSession, SenderSession
from livetok.stream.stages import percentile
from livetok.stream.video_io import read_video

TRANSPORTS = ("mqtt", "zenoh", "webrtc")
CLIP = Path(__file__).resolve().parents[1] / "stream" / "assets" / "demo.mp4"
TOPIC = "livetok/latency/tokens"


class Link(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> tuple[bytes, float]: ...  # the bytes and perf_counter() when they arrived


@contextlib.asynccontextmanager
async def mqtt_link() -> AsyncIterator[Link]:
    import aiomqtt

    from .localbroker import LocalBroker

    with LocalBroker() as url:
        port = int(url.rsplit(":", 1)[1])
        inbox: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
        async with aiomqtt.Client("127.0.0.1", port) as sub, aiomqtt.Client("127.0.0.1", port) as pub:
            await sub.subscribe(TOPIC, qos=1)

            async def read() -> None:
                async for m in sub.messages:
                    inbox.put_nowait((bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b"",
                                      time.perf_counter()))

            task = asyncio.create_task(read())

            class _L:
                async def send(self, data: bytes) -> None:
                    await pub.publish(TOPIC, data, qos=1)

                async def recv(self) -> tuple[bytes, float]:
                    return await inbox.get()

            try:
                yield _L()
            finally:
                await cancel_and_wait(task)


@contextlib.asynccontextmanager
async def zenoh_link() -> AsyncIterator[Link]:
    import socket

    import zenoh

    from livetok.stream.zenoh_transport import ZenohConfig, open_session

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ZenohConfig(f"tcp/127.0.0.1:{port}")
    a = open_session(cfg, True)
    b = open_session(cfg, False)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()

    def on(sample: Any) -> None:  # zenoh's thread: the arrival time is taken here, before the hand-over
        t = time.perf_counter()
        loop.call_soon_threadsafe(inbox.put_nowait, (sample.payload.to_bytes(), t))

    sub = b.declare_subscriber(TOPIC, on)
    pub = a.declare_publisher(TOPIC, reliability=zenoh.Reliability.RELIABLE,
                              congestion_control=zenoh.CongestionControl.BLOCK)
    for _ in range(200):
        if pub.matching_status.matching:
            break
        await asyncio.sleep(0.01)

    class _L:
        async def send(self, data: bytes) -> None:
            pub.put(data)

        async def recv(self) -> tuple[bytes, float]:
            return await inbox.get()

    try:
        yield _L()
    finally:
        sub.undeclare()
        pub.undeclare()
        a.close()
        b.close()


@contextlib.asynccontextmanager
async def webrtc_link() -> AsyncIterator[Link]:
    from aiortc import RTCDataChannel, RTCPeerConnection

    from livetok.stream.webrtc.ice import LOOPBACK, offering

    with offering(LOOPBACK):
        pa, pb = RTCPeerConnection(), RTCPeerConnection()
        ch = pa.createDataChannel("tokens", ordered=True)
        inbox: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
        opened = asyncio.Event()

        @pb.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            def on_message(m: bytes | str) -> None:
                if isinstance(m, bytes):
                    inbox.put_nowait((m, time.perf_counter()))

            channel.on("message", on_message)

        ch.on("open", opened.set)
        await pa.setLocalDescription(await pa.createOffer())
        await pb.setRemoteDescription(pa.localDescription)
        await pb.setLocalDescription(await pb.createAnswer())
        await pa.setRemoteDescription(pb.localDescription)
        await asyncio.wait_for(opened.wait(), 20)

    class _L:
        async def send(self, data: bytes) -> None:
            ch.send(data)

        async def recv(self) -> tuple[bytes, float]:
            return await inbox.get()

    try:
        yield _L()
    finally:
        await pa.close()
        await pb.close()


LINKS = {"mqtt": mqtt_link, "zenoh": zenoh_link, "webrtc": webrtc_link}


@dataclass(frozen=True)
class Percentiles(JsonResult):
    p50: float
    p95: float


@dataclass(frozen=True, kw_only=True)
class TransportLatency(JsonResult):
    """One transport: each step's p50/p95 in ms over the counted frames, and the packets' size."""

    transport: str
    frames: int
    encode_ms: Percentiles
    transport_ms: Percentiles
    decode_ms: Percentiles
    total_ms: Percentiles
    bits_per_frame: float


def _pcts(values: list[float]) -> Percentiles:
    return Percentiles(round(percentile(values, 50), 2), round(percentile(values, 95), 2))


async def measure(model: Runtime, frames: np.ndarray, transport: str, sender: SenderConfig,
                  warmup: int = 5) -> TransportLatency:
    """Encode, send, receive and decode `frames` one at a time over `transport`; p50/p95 of each step in ms
    (the first `warmup` frames are not counted: first-call costs, connection set-up)."""
    tx, rx = SenderSession(model, sender), ReceiverSession(model)
    enc, tr, dec, total = [], [], [], []
    bits = 0
    async with LINKS[transport]() as link:
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            e = tx.encode(frame, timestamp_us=round(i * 1e6 / 30))
            t1 = time.perf_counter()
            await link.send(e.data)
            data, t2 = await link.recv()
            out = rx.decode(data)
            t3 = time.perf_counter()
            if not np.array_equal(out, e.recon):
                raise RuntimeError(f"{transport}: frame {i} decoded differently from the sender's reconstruction")
            if i >= warmup:
                enc.append((t1 - t0) * 1e3)
                tr.append((t2 - t1) * 1e3)
                dec.append((t3 - t2) * 1e3)
                total.append((t3 - t0) * 1e3)
                bits += 8 * len(e.data)
    n = len(enc)
    return TransportLatency(transport=transport, frames=n, encode_ms=_pcts(enc), transport_ms=_pcts(tr),
                            decode_ms=_pcts(dec), total_ms=_pcts(total), bits_per_frame=round(bits / n, 1))


def markdown_table(rows: list[TransportLatency]) -> str:
    out = ["| transport | encode p50 / p95 ms | transport p50 / p95 ms | decode p50 / p95 ms | total p50 / p95 ms |",
           "|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{p.p50:.2f} / {p.p95:.2f}" for p in (r.encode_ms, r.transport_ms, r.decode_ms, r.total_ms)]
        out.append(f"| {r.transport} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livetok.bench.robotics_latency", description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=60, help="frames per transport (default 60; 5 more as warm-up)")
    p.add_argument("--transports", nargs="+", choices=TRANSPORTS, default=list(TRANSPORTS))
    p.add_argument("--source", default=str(CLIP), help="clip (default: the bundled demo clip)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    import torch

    from livetok.engine.checkpoint import load_default

    torch.set_num_threads(a.threads)
    model = load_default()
    frames, _ = read_video(a.source, max_frames=a.frames + 5)
    sender = SenderConfig(budget=BudgetConfig(policy="learned", rate=0.5))
    rows = []
    for t in a.transports:
        rows.append(asyncio.run(measure(model, frames, t, sender)))
        print(f"{t}: {json.dumps(rows[-1].to_json())}", file=sys.stderr)
    print(markdown_table(rows), file=sys.stderr)
    if a.json:
        print(json.dumps({"results": [r.to_json() for r in rows], "frames": len(frames) - 5, "source": a.source,
                          "size": list(frames.shape[1:3][::-1]), "threads": a.threads}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
